// Workflow code for test/resultsRefresher.test.ts (bundled by that test's worker): the run's
// ResultsRefresher alone, its rows' progress driven by signals and its rewrites by an activity of
// the test's that takes as long as it is told.
import { condition, defineSignal, proxyActivities, setHandler } from '@temporalio/workflow';
import { ResultsRefresher } from '../../workflows/dataset/resultsRefresh';

export interface ProbeActivities {
  /** One rewrite of the tables: the test records when it began and ended. */
  probeWrite(ms: number): Promise<void>;
}

const { probeWrite } = proxyActivities<ProbeActivities>({ startToCloseTimeout: '1 minute' });

/** Rows finished so far (the run's count). */
export const finishedSignal = defineSignal<[number]>('finished');
export const stopSignal = defineSignal('stop');

export async function refresherProbe(total: number, writeMs: number): Promise<void> {
  let finished = 0;
  let stop = false;
  // Made before the handlers, as the run makes it before its rows finish: a signal sent with the
  // start is progress after it.
  const refresher = new ResultsRefresher(
    () => probeWrite(writeMs),
    () => finished,
    total,
    true,
    undefined,
    true,
  );
  refresher.start();
  setHandler(finishedSignal, (n) => void (finished = n));
  setHandler(stopSignal, () => void (stop = true));
  await condition(() => stop);
  await refresher.stop();
}
