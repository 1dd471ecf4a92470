// The baseline of the throughput benchmark: the same sliding window of child workflows as a dataset
// run, but the children do nothing. It measures what the dev server itself can do.
import { condition, executeChild } from '@temporalio/workflow';

export async function emptyChildWorkflow(): Promise<void> {
  // nothing: the cost of a child workflow on this server, and nothing else
}

export async function bareParentWorkflow(rows: number, window: number): Promise<number> {
  let running = 0;
  let done = 0;
  const all: Promise<void>[] = [];
  for (let i = 0; i < rows; i++) {
    await condition(() => running < window);
    running += 1;
    all.push(
      executeChild(emptyChildWorkflow, { workflowId: `${rows}-bare-${i}`, args: [] }).then(() => {
        running -= 1;
        done += 1;
      }),
    );
  }
  await Promise.all(all);
  return done;
}
