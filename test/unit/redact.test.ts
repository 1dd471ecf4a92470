import { describe, expect, it } from 'vitest';
import { redactSecrets } from '../../lib/redact';
import { deriveRunId, validateRunId } from '../../lib/runId';

describe('redactSecrets', () => {
  it('removes known secrets and key-shaped strings', () => {
    const out = redactSecrets('401 Incorrect API key provided: sk-proj-****abcd1234. Bearer abc.def my-secret-value', ['my-secret-value']);
    expect(out).not.toContain('abcd1234');
    expect(out).not.toContain('my-secret-value');
    expect(out).not.toContain('abc.def');
    expect(out).toContain('Incorrect API key provided');
  });
});

describe('run ids', () => {
  const base = { inputPath: '/d/edits.csv', outputDir: '/o', backend: 'openai', model: 'm', params: { size: '1024x1024' }, instructionKey: 'instruction' };
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
