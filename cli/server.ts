import { join, resolve } from 'node:path';
import { startDevServer } from '../lib/temporal/devServer';
import { UsageError } from '../lib/shared/errors';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import type { Command } from 'commander';
import type { CliIO, CommandContext } from './io';
import { addExamples, addOptions, Opt, positiveInt, type OptionsOf } from './options';
import { PORT, STATE } from './optionGroups';

export const SERVER_OPTIONS = {
  ...STATE,
  port: PORT.port.default(7233),
  uiPort: Opt.parsed('--ui-port <port>', 'web UI port (default: port + 1000)', positiveInt).group('Server and state:'),
};

export type ServerOptions = OptionsOf<typeof SERVER_OPTIONS>;
import { runningServer } from './session';

/**
 * `atelier server`: the project's dev server in the foreground — SQLite and logs under the state
 * dir, the project's search attributes registered, finished runs kept for 30 days, UI on its own
 * port. Workers and clients reach it with TEMPORAL_ADDRESS=127.0.0.1:<port>.
 */
export async function runServer(options: { stateDir: string; port?: number; uiPort?: number }, io: CliIO): Promise<number> {
  const stateDir = resolve(options.stateDir);
  const running = await runningServer(stateDir);
  if (running) throw new UsageError(`a server for ${stateDir} is already running at ${running.address}`);
  const server = await startDevServer({
    temporalPath: findTemporalCli(),
    stateDir,
    owner: 'server',
    ...(options.port ? { port: options.port } : {}),
    ...(options.uiPort ? { uiPort: options.uiPort } : {}),
  });
  io.err(`Temporal dev server for ${stateDir}`);
  io.err(`  address: ${server.address}   (export TEMPORAL_ADDRESS=${server.address})`);
  if (server.uiUrl) io.err(`  UI:      ${server.uiUrl}`);
  io.err('Ctrl-C to stop; the history stays in the state dir.');
  const ended = await Promise.race([server.exited.then((code) => ({ code })), io.interrupted.then(() => undefined)]);
  if (ended) {
    io.err(`the server exited with code ${ended.code}; see ${join(stateDir, 'temporal-server.log')}`);
    return 1;
  }
  await server.stop();
  return 0;
}

export function registerServer(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('server')
    .description('run the dev server in the foreground (SQLite under the state dir, UI on its own port)');
  addOptions(cmd, SERVER_OPTIONS).action(async (opts: ServerOptions) =>
    setExit(await runServer({ ...opts, uiPort: opts.uiPort ?? opts.port + 1000 }, io)),
  );
  addExamples(cmd, [
    ['atelier server', 'a server for ./.atelier on 127.0.0.1:7233 (UI on 8233)'],
    ['atelier server --state-dir /data/atelier --port 7300', 'another state dir and port'],
  ]);
}
