// Provider error messages can echo credentials (OpenAI's 401 quotes a masked key, proxies may echo
// headers). Everything that reaches the ledger, results, logs or workflow history goes through here.

const KEY_PATTERNS: RegExp[] = [
  /\bsk-[A-Za-z0-9_*-]{6,}/g, // OpenAI-style keys, masked or not
  /\bAIza[0-9A-Za-z_-]{20,}/g, // Google API keys
  /\bms-[0-9a-f]{8}-[0-9a-f-]{20,}/gi, // ModelScope tokens
  /\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:[0-9a-f]{16,}/gi, // fal.ai keys (key id:secret)
  /(Authorization:\s*Key\s+)[^\s"']+/gi, // fal.ai's auth header, echoed
  /(Bearer\s+)[^\s"']+/gi,
];

export function redactSecrets(text: string, secrets: readonly (string | undefined)[] = []): string {
  let out = text;
  for (const secret of secrets) {
    if (secret && secret.length >= 4) out = out.split(secret).join('***');
  }
  for (const pattern of KEY_PATTERNS) {
    // A pattern's first group (`Bearer `, `Authorization: Key `) is kept, the credential after it masked.
    out = out.replace(pattern, (_match, prefix?: unknown) => (typeof prefix === 'string' ? `${prefix}***` : '***'));
  }
  return out;
}
