import { UsageError } from '../lib/shared/errors';

// What every command shares: its exit codes and its terminal.

/** `atelier` exit codes: 2 when a run ends with failed rows, 130 when the user stopped waiting. */
export const ExitCodes = { ok: 0, usage: 1, rowsFailed: 2, interrupted: 130 } as const;

export interface CliIO {
  out: (line: string) => void;
  err: (line: string) => void;
  /** Resolves when the user asks to stop waiting (Ctrl-C). */
  interrupted: Promise<void>;
  isTTY: boolean;
}

/**
 * Today, for model lifecycles: the real date, or ATELIER_NOW (an ISO date or time) so tests can
 * stand on either side of a shutdown.
 */
export function cliNow(env: NodeJS.ProcessEnv = process.env): Date {
  const given = env.ATELIER_NOW;
  if (!given) return new Date();
  const at = new Date(given);
  if (Number.isNaN(at.getTime())) throw new UsageError(`ATELIER_NOW=${given} is not a date`);
  return at;
}

/** What a command's registration needs: the terminal, where its exit code goes, the raw argv (gpu-worker). */
export interface CommandContext {
  io: CliIO;
  setExit: (code: number) => void;
  argv: string[];
}
