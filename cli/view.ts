import { startViewer } from '../web/server';
import { ExitCodes, type CliIO } from './io';
import { resolveRunOutputDir, runIdOf } from './runTarget';

export interface ViewOptions {
  port?: number;
  stateDir: string;
}

/** `atelier view <run-id | output-dir>`: serves the run's viewer on loopback until Ctrl-C. */
export async function runView(target: string, options: ViewOptions, io: CliIO): Promise<number> {
  const outputDir = await resolveRunOutputDir(target, options.stateDir);
  const viewer = await startViewer({ outputDir, runId: await runIdOf(outputDir), ...(options.port ? { port: options.port } : {}) });
  io.out(`viewer of ${outputDir}: ${viewer.url}`);
  io.out('open it in a browser; Ctrl-C stops the viewer (the run, if one is going, goes on)');
  await io.interrupted;
  await viewer.close();
  return ExitCodes.ok;
}
