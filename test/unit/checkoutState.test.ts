import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script (scripts/test.mjs's helper), no type declarations
import { checkoutStateEntries, gainedEntries } from '../../scripts/checkoutState.mjs';
import { tempDir } from '../helpers/fixtures';

// scripts/test.mjs fails the suite when the checkout's .atelier/ gained entries during vitest.

describe("the checkout's .atelier/ check", () => {
  it('lists what .atelier holds and names what a run added', () => {
    const root = tempDir('atelier-checkout-');
    expect(checkoutStateEntries(root)).toEqual([]);
    mkdirSync(join(root, '.atelier', 'logs'), { recursive: true });
    const before = checkoutStateEntries(root) as string[];
    expect(before).toEqual(['.atelier/logs']);
    mkdirSync(join(root, '.atelier', 'runs'));
    writeFileSync(join(root, '.atelier', 'runs', 'atelier-rows-1.json'), '{}');
    expect(gainedEntries(before, checkoutStateEntries(root))).toEqual(['.atelier/runs', '.atelier/runs/atelier-rows-1.json']);
  });
});
