import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { isS3Location, openStorage } from '../storage';
import { runMetaKey } from '../lib/shared/constants';
import { UsageError } from '../lib/shared/errors';
import { findRun } from '../lib/run/runRegistry';

/**
 * The output dir of `<run-id | output-dir>`: an s3:// location or a folder holding a run's plan,
 * else a run id the state dir remembers (`atelier edit` registers every run it starts).
 */
export async function resolveRunOutputDir(target: string, stateDir: string): Promise<string> {
  if (isS3Location(target)) {
    if (!(await openStorage(target).stat(runMetaKey('plan.json'))))
      throw new UsageError(`${target} holds no Atelier run (no ${runMetaKey('plan.json')})`);
    return target;
  }
  const asDir = resolve(target);
  if (existsSync(asDir)) {
    if (!existsSync(resolve(asDir, runMetaKey('plan.json'))))
      throw new UsageError(`${asDir} holds no Atelier run (no ${runMetaKey('plan.json')}); give the run's output dir or its run id`);
    return asDir;
  }
  const registered = await findRun(stateDir, target);
  if (!registered)
    throw new UsageError(`${target} is neither an output dir nor a run id known to the state dir ${resolve(stateDir)} (--state-dir)`);
  return registered.input.outputDir;
}

/** The run id an output dir belongs to (its claim, written when the run planned). */
export async function runIdOf(outputDir: string): Promise<string> {
  const bytes = await openStorage(outputDir).read(runMetaKey('run.json'));
  if (!bytes) throw new UsageError(`${outputDir} has no ${runMetaKey('run.json')}: the run never planned`);
  return (JSON.parse(bytes.toString('utf8')) as { runId: string }).runId;
}
