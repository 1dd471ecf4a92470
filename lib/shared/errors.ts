import { ErrorTypes, type ErrorType } from './errorTypes';

/** A usage or set-up problem the user must fix (CLI exit code 1). The message says what to fix. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** The dataset itself is malformed: the message names the file, line and column. */
export class DatasetError extends Error {
  override name = 'DatasetError';
}

export type FailureKind = keyof typeof ErrorTypes;

export interface FailureDetails {
  status?: number;
  /** Provider-requested wait before the next attempt (Retry-After, Gemini RetryInfo), in ms. */
  retryAfterMs?: number;
  requestId?: string;
  /** Quota exhausted: when it resets, if the provider says or the quota kind implies it (ISO time). */
  quotaResetAt?: string;
}

/**
 * An error already sorted into one of the row failure classes. Provider adapters and input loading
 * throw these; the model activity turns them into ApplicationFailures of the matching type.
 */
export class ClassifiedError extends Error {
  override name = 'ClassifiedError';
  constructor(
    readonly kind: FailureKind,
    message: string,
    readonly details: FailureDetails = {},
  ) {
    super(message);
  }

  get errorType(): ErrorType {
    return ErrorTypes[this.kind];
  }
}

/**
 * Error text that enters Temporal payloads (failures, ledger entries) is cut to a few KB: a
 * provider that echoes a 3 MB prompt must not push the real error past the payload limit.
 */
export const MAX_ERROR_CHARS = 4096;

export function boundedMessage(message: string, max = MAX_ERROR_CHARS): string {
  if (message.length <= max) return message;
  const omitted = message.length - max;
  return `${message.slice(0, max)}… [${omitted} more characters cut]`;
}
