import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';

// Custom search attributes the project registers on its dev servers (and asks external servers
// for), so runs and rows can be found in the Temporal UI and with `temporal workflow list --query`.
// SQLite visibility allows 10 Keyword and 3 Int attributes per namespace; these use 5 and 3.

export const AtelierRunId = defineSearchAttributeKey('AtelierRunId', SearchAttributeType.KEYWORD);
export const AtelierDataset = defineSearchAttributeKey('AtelierDataset', SearchAttributeType.KEYWORD);
export const AtelierBackend = defineSearchAttributeKey('AtelierBackend', SearchAttributeType.KEYWORD);
export const AtelierModel = defineSearchAttributeKey('AtelierModel', SearchAttributeType.KEYWORD);
/** On a failed row child: its failure class (Blocked, InputError, ...). */
export const AtelierErrorType = defineSearchAttributeKey('AtelierErrorType', SearchAttributeType.KEYWORD);
export const AtelierRowsTotal = defineSearchAttributeKey('AtelierRowsTotal', SearchAttributeType.INT);
export const AtelierRowsOk = defineSearchAttributeKey('AtelierRowsOk', SearchAttributeType.INT);
export const AtelierRowsFailed = defineSearchAttributeKey('AtelierRowsFailed', SearchAttributeType.INT);

export const ALL_SEARCH_ATTRIBUTES = [
  AtelierRunId,
  AtelierDataset,
  AtelierBackend,
  AtelierModel,
  AtelierErrorType,
  AtelierRowsTotal,
  AtelierRowsOk,
  AtelierRowsFailed,
] as const;

/** `--search-attribute NAME=Type` flags for `temporal server start-dev`. */
export function devServerSearchAttributeFlags(): string[] {
  return ALL_SEARCH_ATTRIBUTES.flatMap((key) => [
    '--search-attribute',
    `${key.name}=${key.type === SearchAttributeType.INT ? 'Int' : 'Keyword'}`,
  ]);
}
