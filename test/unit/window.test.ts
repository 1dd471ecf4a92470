import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildWorkflowInput, type EditOptions } from '../../cli/edit';
import { tempDir, writeText } from '../helpers/fixtures';

// The window (rows in flight) is decoupled from the provider concurrency: by default it is larger,
// so the provider's queue holds the next calls while finished rows' children complete and new ones
// start (bench/saturation.ts measures what that buys).

function options(extra: Partial<EditOptions>): EditOptions {
  const dir = tempDir('atelier-window-');
  writeText(join(dir, 'rows.csv'), 'image,instruction\n,draw a cat\n');
  return {
    input: join(dir, 'rows.csv'),
    outputDir: join(dir, 'out'),
    backend: 'openai',
    model: 'gpt-image-2',
    instructionKey: 'instruction',
    numImages: 1,
    jpegQuality: 95,
    webpQuality: 95,
    stateDir: join(dir, 'state'),
    maxRetries: 4,
    heartbeatTimeout: 60,
    concurrency: 16,
    withWorkers: false,
    ...extra,
  };
}

describe('--window', () => {
  it('defaults to twice --concurrency', () => {
    expect(buildWorkflowInput(options({})).window).toBe(32);
    expect(buildWorkflowInput(options({ concurrency: 4 })).window).toBe(16);
    expect(buildWorkflowInput(options({ concurrency: 100 })).window).toBe(200);
  });

  it('stays as given', () => {
    expect(buildWorkflowInput(options({ window: 3 })).window).toBe(3);
  });
});
