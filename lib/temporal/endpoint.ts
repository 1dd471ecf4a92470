import { createHash } from 'node:crypto';

// A provider endpoint (`--base-url`, or a worker's OPENAI_BASE_URL and the like) is named in a run
// and in task queue names by a short digest, never by the URL itself: a base URL can carry a
// credential (user:password@host, a token in its query), and workflow inputs, histories and queue
// names are seen by everyone with access to the Temporal server.

/** The URL as both sides write it: trimmed, without trailing slashes. */
export function normaliseBaseUrl(url: string): string {
  return url.trim().replace(/\/+$/, '');
}

/** 12 hex digits of the SHA-256 of the normalised base URL. */
export function endpointTag(baseUrl: string): string {
  return createHash('sha256').update(normaliseBaseUrl(baseUrl)).digest('hex').slice(0, 12);
}

export const ENDPOINT_TAG_PATTERN = /^[0-9a-f]{12}$/;
