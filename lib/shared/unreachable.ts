// "connection error" messages that say where: a row that could not reach its provider names the
// host it tried (a dead --base-url, a typo in an endpoint variable), never the URL's path, query
// or credentials, which may carry keys (`?key=...`, `https://user:token@host`).

/** The host and port of an endpoint URL, for messages; undefined when it does not parse. */
export function endpointHost(url: string | URL | undefined): string | undefined {
  if (url === undefined) return undefined;
  try {
    return new URL(url).host || undefined;
  } catch {
    return undefined;
  }
}

/** The first system error code (ECONNREFUSED, ENOTFOUND, ...) on an error's cause chain. */
function errorCode(err: unknown): string | undefined {
  let e: unknown = err;
  for (let depth = 0; e && typeof e === 'object' && depth < 5; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z_]+$/.test(code)) return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/**
 * `connection error: cannot reach <host> (<code>)`: the message every adapter gives a request that
 * never reached its server. The dataset run counts these across rows (RunState) and pauses when
 * the provider is unreachable, so the words `connection error` are part of the contract.
 */
export function connectionErrorMessage(url: string | URL | undefined, err: unknown): string {
  const host = endpointHost(url);
  const code = errorCode(err);
  const message = err instanceof Error ? err.message : String(err);
  // A message that quotes a URL (fetch refuses one with credentials, quoting it) is not repeated.
  const what = code ?? (/:\/\//.test(message) ? 'no connection' : message);
  return host ? `connection error: cannot reach ${host} (${what})` : `connection error: ${what}`;
}
