import { openStorage } from '../storage';
import { runMetaKey } from '../lib/constants';
import { startViewer } from '../web/server';
import { ExitCodes, type CliIO } from './edit';
import { resolveRunOutputDir } from './runTarget';

export interface ViewOptions {
  port?: number;
  stateDir: string;
}

/** The run id an output dir belongs to (its claim, written when the run planned). */
async function runIdOf(outputDir: string): Promise<string> {
  const bytes = await openStorage(outputDir).read(runMetaKey('run.json'));
  return bytes ? (JSON.parse(bytes.toString('utf8')) as { runId: string }).runId : '<run-id>';
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
