// Entry point of the workflow bundle: every workflow type the orchestrator queue serves.
export { datasetWorkflow } from './dataset/workflow';
export { rowWorkflow } from './row';
export { judgeWorkflow } from './judge';
export { batchJobWorkflow } from './batchJob';
export { modelCheckWorkflow } from './modelCheck';
