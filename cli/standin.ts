import { PROVIDERS } from '../activities/providers/registry';
import { portOption, type ProviderSpec, type StandinSpec } from '../activities/providers/spec';
import { UsageError } from '../lib/shared/errors';
import type { Command } from 'commander';
import type { CliIO, CommandContext } from './io';
import { addExamples, addOptions, type OptionsOf } from './options';
import { PORT } from './optionGroups';

export const STANDIN_OPTIONS = { ...PORT };

export type StandinOptions = OptionsOf<typeof STANDIN_OPTIONS>;

// `atelier standin <provider>`: one of the test suite's provider stand-ins in the foreground, on
// loopback, so a person without keys can try every feature (edit, retry, judge, pause on a quota)
// against something that answers as the real API does, errors included. It prints the environment
// a worker (or an embedded `edit`) needs to reach it; the key can be any non-empty string.

// Each stand-in (and sharp, which they draw with) loads when it is started, not with every command.
// A provider's stand-in is named by its spec (activities/providers/<name>/spec.ts); the judge's is
// the OpenRouter stand-in playing a chat model.

export const STANDINS: Record<string, StandinSpec> = {
  ...Object.fromEntries(
    Object.entries(PROVIDERS as Record<string, ProviderSpec>).flatMap(([name, spec]) => (spec.standin ? [[name, spec.standin]] : [])),
  ),
  judge: {
    start: async (port) => (await import('../standins/judge')).startJudgeStandin(portOption(port)),
    env: (url) => ({ ATELIER_JUDGE_API_KEY: 'sk-judge-standin', ATELIER_JUDGE_BASE_URL: url }),
    note: 'then: atelier judge <run> --model gpt-4.1-mini',
  },
};

export async function runStandin(provider: string, options: { port?: number }, io: CliIO): Promise<number> {
  const kind = STANDINS[provider];
  if (!kind) throw new UsageError(`no stand-in for "${provider}"; there are: ${Object.keys(STANDINS).join(', ')}`);
  const standin = await kind.start(options.port);
  io.err(`${provider} stand-in at ${standin.baseURL} (answers as the real API does; images are generated, nothing is billed)`);
  for (const [name, value] of Object.entries(kind.env(standin.baseURL))) io.out(`export ${name}=${value}`);
  io.err(`${kind.note}\nCtrl-C to stop.`);
  await io.interrupted;
  await standin.close();
  return 0;
}

export function registerStandin(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('standin <provider>')
    .description(
      `a provider stand-in on loopback, for trying Atelier without keys (${Object.keys(STANDINS).join(', ')}); prints the worker environment to export`,
    );
  addOptions(cmd, STANDIN_OPTIONS).action(async (provider: string, opts: StandinOptions) => setExit(await runStandin(provider, opts, io)));
  addExamples(cmd, [
    ['atelier standin openai', 'an OpenAI stand-in; export the environment it prints, then run `atelier edit`'],
    ['atelier standin judge --port 9100', 'a judge stand-in on port 9100'],
  ]);
}
