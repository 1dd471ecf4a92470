// Every failure class Atelier names, in one place: the row failure classes (also the
// ApplicationFailure `type` names the activities throw), the classes the dataset run gives rows
// whose child ended without saying why, and the types that fail a whole run. No Node imports:
// workflow code uses this module.

/** Failure classes recorded per row; also the ApplicationFailure `type` names. */
export const ErrorTypes = {
  /** Transient (429, 5xx, timeouts, connection errors): retried with backoff until attempts run out. */
  retryable: 'Retryable',
  /** Refused by the provider's safety system: final. */
  blocked: 'Blocked',
  /** Any other 4xx: final. */
  invalidRequest: 'InvalidRequest',
  /** Billing or daily quota exhausted: final for the row. */
  quotaExhausted: 'QuotaExhausted',
  /** The row's own input (missing or undecodable image, bad value): final, no provider call made. */
  inputError: 'InputError',
  /** Worker set-up problem (missing API key): final. */
  configError: 'ConfigError',
  /**
   * Writing the run's files failed in a way a quick retry won't fix (disk full, permission denied,
   * storage credentials refused): the row is not failed, the run pauses with the reason shown.
   */
  storageError: 'StorageError',
} as const;
export type ErrorType = (typeof ErrorTypes)[keyof typeof ErrorTypes];

/**
 * Failures that are not the row's fault and will not pass by themselves within the row's retries:
 * the row is deferred (it runs again after the pause) and the run pauses with the reason shown.
 */
export const PAUSING_ERROR_TYPES: readonly string[] = [ErrorTypes.quotaExhausted, ErrorTypes.storageError];

/** Why the run paused, from the deferred row's error. */
export function pauseReason(errorType: string | undefined, error: string | undefined): string {
  const what = errorType === ErrorTypes.storageError ? "writing the run's files failed" : 'provider quota exhausted';
  return `${what}: ${error ?? errorType ?? ''}`.slice(0, 300);
}

export const NON_RETRYABLE_ERROR_TYPES: string[] = [
  ErrorTypes.blocked,
  ErrorTypes.invalidRequest,
  ErrorTypes.quotaExhausted,
  ErrorTypes.inputError,
  ErrorTypes.configError,
];

/**
 * Row outcomes decided outside the row's own code: the server ended or never started its child.
 * The dataset run records them in the ledger itself (the child could not).
 */
export const ChildErrorTypes = {
  cancelled: 'Cancelled',
  terminated: 'Terminated',
  timeout: 'Timeout',
  /** The row's child workflow could not be started. */
  childStartFailed: 'ChildStartFailed',
} as const;

/**
 * A done row set aside to be made again (`atelier retry --redo`, lib/run/redo.ts): recorded as failed
 * with this class until the retry makes it again.
 */
export const REDO_ERROR_TYPE = 'Redo';

/** Failure classes a row can have, which `atelier retry --error-type` may name. */
export const ROW_ERROR_TYPES: readonly string[] = [...Object.values(ErrorTypes), ...Object.values(ChildErrorTypes), REDO_ERROR_TYPE];

/** Failure types that end the dataset workflow with a message for the user (CLI exit code 1). */
export const RunErrorTypes = {
  dataset: 'DatasetError',
  invalidInput: 'InvalidWorkflowInput',
  outputDirInUse: 'OutputDirInUse',
  /** The output dir could not be written while planning (read-only, full, credentials refused). */
  storage: 'StorageError',
} as const;
