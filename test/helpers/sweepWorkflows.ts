// Workflow code for test/deadWorkers.test.ts (bundled by that test's worker).
import { proxyActivities } from '@temporalio/workflow';

export interface HoldActivities {
  /** Attempt 1 heartbeats `{ paid }` and then holds; a later attempt returns the details it was handed. */
  hold(paid: string): Promise<unknown>;
}

const { hold } = proxyActivities<HoldActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '2 minutes',
  retry: { maximumAttempts: 3, initialInterval: '100 ms' },
});

export async function holdWorkflow(paid: string): Promise<unknown> {
  return hold(paid);
}
