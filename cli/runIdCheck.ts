import { defaultPayloadConverter } from '@temporalio/common';
import { join } from 'node:path';
import { openStorage } from '../storage';
import { findRun } from '../lib/run/runRegistry';
import { settingsDifferences, type RunSettingsSource } from '../lib/run/runId';
import { layout } from '../lib/run/runStore';
import { parseDatasetWorkflowInput } from '../lib/run/workflowInput';
import { UsageError } from '../lib/shared/errors';
import type { DatasetWorkflowInput } from '../lib/shared/types';
import type { Session } from './session';

// `--run-id X` names one run. Started with other settings (another model, output dir, endpoint,
// input), the start would attach to run X (the workflow id's conflict policy) and print its results
// with nothing written where asked; so the settings X was recorded with are compared first, and a
// difference is refused before anything is sent. Recorded in three places, each read if present:
// this state dir's registry, the run's workflow on the server, and the output dir's claim.

/** A recorded workflow input with today's defaults filled in (an older one may lack fields since added). */
function normalised(raw: unknown): RunSettingsSource | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  try {
    return parseDatasetWorkflowInput(raw);
  } catch {
    return raw as RunSettingsSource;
  }
}

/** The input the run's workflow was started with (the first event of its latest execution), if the server has it. */
async function serverSettings(session: Session, runId: string): Promise<RunSettingsSource | undefined> {
  try {
    const { history } = await session.client.workflowService.getWorkflowExecutionHistory({
      namespace: session.namespace,
      execution: { workflowId: runId },
      maximumPageSize: 1,
    });
    const payload = history?.events?.[0]?.workflowExecutionStartedEventAttributes?.input?.payloads?.[0];
    return payload ? normalised(defaultPayloadConverter.fromPayload(payload)) : undefined;
  } catch {
    // NOT_FOUND (no such run on this server) or a failure to ask: the other records still count.
    return undefined;
  }
}

/** The output dir's claim (which run owns it): its input, backend and model. */
async function claimSettings(asked: DatasetWorkflowInput): Promise<RunSettingsSource | undefined> {
  try {
    const bytes = await openStorage(asked.outputDir).read(layout.run);
    if (!bytes) return undefined;
    const claim = JSON.parse(bytes.toString('utf8')) as { runId?: string; inputPath?: string; backend?: string; model?: string };
    // Another run's claim is planning's to refuse ("already holds run ...").
    if (claim.runId !== asked.runId || !claim.inputPath || !claim.backend || !claim.model) return undefined;
    return { ...asked, inputPath: claim.inputPath, backend: claim.backend, model: claim.model };
  } catch {
    // Unreadable from here (an s3:// output dir whose credentials only the workers hold): planning still checks the owner.
    return undefined;
  }
}

/** Refuses `--run-id X` whose settings differ from those run X was recorded with, naming each difference. */
export async function checkRunIdSettings(session: Session, stateDir: string, asked: DatasetWorkflowInput): Promise<void> {
  const sources: Array<[string, () => Promise<RunSettingsSource | undefined>]> = [
    [join(stateDir, 'runs', `${asked.runId}.json`), async () => normalised((await findRun(stateDir, asked.runId))?.input)],
    ['its workflow on the Temporal server', () => serverSettings(session, asked.runId)],
    [`${asked.outputDir}/${layout.run}`, () => claimSettings(asked)],
  ];
  for (const [where, read] of sources) {
    const recorded = await read();
    const differences = recorded ? settingsDifferences(recorded, asked) : [];
    if (differences.length === 0) continue;
    throw new UsageError(
      [
        `--run-id ${asked.runId} names a run with other settings (recorded in ${where}); nothing was started or sent:`,
        ...differences.map((d) => `  ${d}`),
        `Give the run's own settings to resume it, or another --run-id (or none: one is derived from the settings) for a new run.`,
      ].join('\n'),
    );
  }
}
