// Provider error messages can echo credentials (OpenAI's 401 quotes a masked key, proxies may echo
// headers). Everything that reaches the ledger, results, logs or workflow history goes through here.

const KEY_PATTERNS: RegExp[] = [
  /\bsk-[A-Za-z0-9_\-*]{6,}/g, // OpenAI-style keys, masked or not
  /\bAIza[0-9A-Za-z_\-]{20,}/g, // Google API keys
  /\bms-[0-9a-f]{8}-[0-9a-f-]{20,}/gi, // ModelScope tokens
  /(Bearer\s+)[^\s"']+/gi,
];

export function redactSecrets(text: string, secrets: readonly (string | undefined)[] = []): string {
  let out = text;
  for (const secret of secrets) {
    if (secret && secret.length >= 4) out = out.split(secret).join('***');
  }
  for (const pattern of KEY_PATTERNS) {
    out = out.replace(pattern, (match, bearer?: string) =>
      typeof bearer === 'string' && match.toLowerCase().startsWith('bearer') ? `${bearer}***` : '***',
    );
  }
  return out;
}
