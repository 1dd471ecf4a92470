import { describe, expect, it } from 'vitest';
import { redactSecrets } from '../../lib/redact';
import { deriveRunId, validateRunId } from '../../lib/run/runId';

describe('redactSecrets', () => {
  it('removes known secrets and key-shaped strings', () => {
    const out = redactSecrets('401 Incorrect API key provided: sk-proj-****abcd1234. Bearer abc.def my-secret-value', ['my-secret-value']);
    expect(out).not.toContain('abcd1234');
    expect(out).not.toContain('my-secret-value');
    expect(out).not.toContain('abc.def');
    expect(out).toContain('Incorrect API key provided');
  });
});

describe("redaction of the newer backends' keys", () => {
  it('masks fal.ai keys and its Key auth header even when the key is not in the secrets list', () => {
    const key = '3f2a9c1e-7b4d-4e8a-9f01-2c3d4e5f6a7b:0123456789abcdef0123456789abcdef';
    const out = redactSecrets(`401 bad key ${key}; sent Authorization: Key abc.def-123`);
    expect(out).not.toContain(key);
    expect(out).not.toContain('abc.def-123');
    expect(out).toContain('Authorization: Key ***');
    // A request id (a bare UUID) is not a key.
    expect(redactSecrets('request 3f2a9c1e-7b4d-4e8a-9f01-2c3d4e5f6a7b failed')).toContain('3f2a9c1e-7b4d-4e8a-9f01-2c3d4e5f6a7b');
    expect(redactSecrets('Bearer tok123')).toBe('Bearer ***');
  });
});

describe('run ids', () => {
  const base = {
    inputPath: '/d/edits.csv',
    outputDir: '/o',
    backend: 'openai',
    model: 'm',
    params: { size: '1024x1024' },
    instructionKey: 'instruction',
  };
  it('are stable for equal settings and differ when an output-deciding setting changes', () => {
    expect(deriveRunId(base)).toBe(deriveRunId({ ...base, params: { size: '1024x1024', quality: undefined } }));
    expect(deriveRunId(base)).toMatch(/^atelier-edits-[0-9a-f]{12}$/);
    expect(deriveRunId({ ...base, model: 'm2' })).not.toBe(deriveRunId(base));
    expect(deriveRunId({ ...base, params: { size: '512x512' } })).not.toBe(deriveRunId(base));
    expect(deriveRunId({ ...base, outputDir: '/o2' })).not.toBe(deriveRunId(base));
  });
  it('reject unsafe characters', () => {
    expect(validateRunId('ok-run_1.2')).toBeUndefined();
    expect(validateRunId('../evil')).toMatch(/must be/);
    expect(validateRunId('a b')).toMatch(/must be/);
  });
});
