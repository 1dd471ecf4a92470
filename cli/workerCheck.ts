import { temporal } from '@temporalio/proto';
import { API_BACKENDS, type ApiBackend } from '../activities/providers/registry';
import { JUDGE_QUEUE, ORCHESTRATOR_QUEUE, providerQueue } from '../lib/shared/constants';
import type { DatasetWorkflowInput } from '../lib/shared/types';
import type { Session } from './session';

// A command that waits on a run served by external workers (`atelier server` + `atelier worker`, or
// TEMPORAL_ADDRESS) asks the server, as the Temporal UI's "No workers polling" does, whether
// anyone polls the queues the run needs (DescribeTaskQueue), and says at once which worker command
// would serve the one that nobody does, instead of waiting silently.

export interface NeededQueue {
  name: string;
  type: 'workflow' | 'activity';
  /** What would serve it: the command line a user can start. */
  start: string;
}

const TYPES = {
  workflow: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
  activity: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
} as const;

/**
 * A poller seen this recently counts as serving: an idle worker's long poll is renewed about once a
 * minute, and the server remembers a poller for minutes after its worker is gone.
 */
const POLLER_FRESH_MS = 150_000;

const DESCRIBE_DEADLINE_MS = 3000;

/** The queues a dataset run's rows need; `baseUrl` is the URL behind the run's endpoint, when known. */
export function runQueues(input: Pick<DatasetWorkflowInput, 'backend' | 'endpoint' | 'gpu' | 'model'>, baseUrl?: string): NeededQueue[] {
  const queues: NeededQueue[] = [
    { name: ORCHESTRATOR_QUEUE, type: 'workflow', start: 'npx atelier worker' },
    { name: ORCHESTRATOR_QUEUE, type: 'activity', start: 'npx atelier worker' },
  ];
  if (input.backend === 'diffusers') {
    if (input.gpu) queues.push({ name: input.gpu.taskQueue, type: 'activity', start: `npx atelier gpu-worker --model ${input.model}` });
    return queues;
  }
  const backend = input.backend as ApiBackend;
  const names = API_BACKENDS[backend];
  const key = `${names.keys[0]}=...`;
  const url = input.endpoint ? `${names.baseUrl}=${baseUrl ?? '<the run’s --base-url>'} ` : '';
  queues.push({ name: providerQueue(backend, input.endpoint), type: 'activity', start: `${key} ${url}npx atelier worker` });
  return queues;
}

/** The judge queue (`atelier judge`). */
export function judgeQueues(): NeededQueue[] {
  return [
    { name: ORCHESTRATOR_QUEUE, type: 'workflow', start: 'npx atelier worker' },
    { name: JUDGE_QUEUE, type: 'activity', start: 'ATELIER_JUDGE_API_KEY=... npx atelier worker' },
  ];
}

/** The needed queues no live worker polls (a server that cannot describe queues: none reported). */
export async function unservedQueues(session: Session, needed: NeededQueue[], now = Date.now()): Promise<NeededQueue[]> {
  const unserved: NeededQueue[] = [];
  for (const queue of needed) {
    try {
      // Bounded: a check that cannot answer must not hold up the command it serves.
      const { pollers } = await session.client.connection.withDeadline(Date.now() + DESCRIBE_DEADLINE_MS, () =>
        session.client.workflowService.describeTaskQueue({
          namespace: session.namespace,
          taskQueue: { name: queue.name, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
          taskQueueType: TYPES[queue.type],
        }),
      );
      const live = (pollers ?? []).some((p) => {
        const seconds = p.lastAccessTime?.seconds;
        return seconds === undefined || seconds === null || now - Number(seconds) * 1000 < POLLER_FRESH_MS;
      });
      if (!live) unserved.push(queue);
    } catch {
      // Not knowing is not a finding: the run simply waits, as it did before this check.
    }
  }
  return unserved;
}

function describe(session: Session, queue: NeededQueue): string {
  const env = session.embedded ? '' : `TEMPORAL_ADDRESS=${session.address} `;
  return `no worker serves the ${queue.type} queue ${queue.name}: the run waits until one does; start it with \`${env}${queue.start}\``;
}

/**
 * Checks once now (said within seconds of the start), then every `intervalMs` while the command
 * waits, and says when a missing worker has come. Returns a stop function.
 */
export async function watchWorkers(
  session: Session,
  needed: NeededQueue[],
  log: (line: string) => void,
  intervalMs = 10_000,
): Promise<() => void> {
  // One entry per queue name: the orchestrator's workflow and activity pollers are one worker.
  let missing = dedupe(await unservedQueues(session, needed));
  for (const queue of missing) log(describe(session, queue));
  if (missing.length === 0) return () => undefined;
  let stopped = false;
  const timer = setInterval(() => {
    void unservedQueues(session, missing).then((still) => {
      if (stopped) return;
      for (const queue of missing.filter((q) => !still.some((s) => s.name === q.name))) log(`a worker now serves ${queue.name}`);
      missing = dedupe(still);
      if (missing.length === 0) clearInterval(timer);
    });
  }, intervalMs);
  timer.unref();
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

function dedupe(queues: NeededQueue[]): NeededQueue[] {
  return queues.filter((q, i) => queues.findIndex((o) => o.name === q.name) === i);
}
