// Entry point of the workflow bundle: every workflow type the orchestrator queue serves.
export { datasetWorkflow } from './dataset';
export { rowWorkflow } from './row';
