// The baselines of the throughput benchmark: the same sliding window of child workflows as a dataset
// run, through the same server, with children that do (almost) nothing.
//   - empty: the cost of a child workflow on this server, and nothing else (the baseline);
//   - one activity: the child runs one no-op activity on a second task queue, the least any row
//     that calls a model on its provider's queue can cost. It shows how much of the gap to the
//     empty baseline is the shape of the work, and how much is Atelier's;
//   - one local activity: the no-op runs as a local activity inside the child's workflow task (a
//     design Atelier does not use: no task queue, so no per-provider routing or server-side rate
//     limit, and no heartbeats), for comparison.
import { condition, executeChild, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';

/** The task queue of the no-op activity (a worker of the benchmark serves it). */
export const NOOP_ACTIVITY_QUEUE = 'bench-noop-activity';

const { noop } = proxyActivities<{ noop(): Promise<void> }>({ taskQueue: NOOP_ACTIVITY_QUEUE, startToCloseTimeout: '1 minute' });

const local = proxyLocalActivities<{ noop(): Promise<void> }>({ startToCloseTimeout: '1 minute' });

export async function emptyChildWorkflow(): Promise<void> {
  // nothing
}

export async function oneActivityChildWorkflow(): Promise<void> {
  await noop();
}

export async function oneLocalActivityChildWorkflow(): Promise<void> {
  await local.noop();
}

const CHILDREN = {
  empty: emptyChildWorkflow,
  'one-activity': oneActivityChildWorkflow,
  'one-local-activity': oneLocalActivityChildWorkflow,
};
export type BaselineChild = keyof typeof CHILDREN;

export async function bareParentWorkflow(rows: number, window: number, child: BaselineChild = 'empty'): Promise<number> {
  let running = 0;
  let done = 0;
  const all: Promise<void>[] = [];
  for (let i = 0; i < rows; i++) {
    await condition(() => running < window);
    running += 1;
    all.push(
      executeChild(CHILDREN[child], { workflowId: `${rows}-${child}-${i}`, args: [] }).then(() => {
        running -= 1;
        done += 1;
      }),
    );
  }
  await Promise.all(all);
  return done;
}
