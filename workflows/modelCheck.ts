import { proxyActivities } from '@temporalio/workflow';
import type { ModelCheckActivities, ModelCheckInput, ModelCheckResult } from '../activities/providers/modelCheck';
import { providerQueue } from '../lib/shared/constants';

// Before a run sends anything, `atelier edit` asks whether the provider serves the model. The
// question goes to the provider's own queue, where the workers that hold its key answer it from the
// provider's model list (activities/providers/modelCheck.ts). A workflow of its own, so a run's
// history is unchanged and the check can be asked again at any time.

export async function modelCheckWorkflow(input: ModelCheckInput): Promise<ModelCheckResult> {
  const { checkModelServed } = proxyActivities<ModelCheckActivities>({
    taskQueue: providerQueue(input.backend, input.endpoint),
    startToCloseTimeout: '1 minute',
    retry: { maximumAttempts: 2, initialInterval: '1 second' },
  });
  return checkModelServed(input);
}
