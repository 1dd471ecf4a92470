import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { assertBuilt, REPO } from './helpers/cli';
import { tempDir } from './helpers/fixtures';

// `atelier` as a person installs it from a checkout (`npm link`, as docs/testing.md says), into a
// global prefix of the test's own, then run from a folder outside the checkout: the command is on
// PATH, it runs a whole demo there (embedded server, stand-in, workers), and nothing is written
// into the checkout. `--ignore-scripts`: the checkout is already built (npm test builds it), and a
// link must not rebuild dist/ under the running suite.

const run = promisify(execFile);

describe('an installed atelier, run outside the checkout', () => {
  it('npm link puts atelier on PATH; --version, --help and a demo work from another folder', async () => {
    assertBuilt();
    const prefix = tempDir('atelier-prefix-');
    const elsewhere = tempDir('atelier-elsewhere-');
    const npmEnv = { ...process.env, NPM_CONFIG_PREFIX: prefix, NPM_CONFIG_UPDATE_NOTIFIER: 'false' };
    await run('npm', ['link', '--ignore-scripts', '--no-audit', '--no-fund'], { cwd: REPO, env: npmEnv });
    const bin = join(prefix, 'bin', 'atelier');
    expect(existsSync(bin)).toBe(true);

    const before = existsSync(join(REPO, '.atelier')) ? readdirSync(join(REPO, '.atelier')).sort() : [];
    // A PATH without the checkout's node_modules/.bin: only the linked command can answer.
    const env = {
      PATH: `${join(prefix, 'bin')}:${process.env
        .PATH!.split(':')
        .filter((p) => !p.includes('node_modules'))
        .join(':')}`,
      HOME: process.env.HOME!,
    };
    const version = spawnSync('atelier', ['--version'], { cwd: elsewhere, env, encoding: 'utf8' });
    expect(version.status, version.stderr).toBe(0);
    expect(version.stdout.trim()).toBe((JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version);
    const help = spawnSync('atelier', ['--help'], { cwd: elsewhere, env, encoding: 'utf8' });
    expect(help.stdout).toMatch(/Usage: atelier/);

    // The demo, end to end, from the other folder (no key: the bundled stand-in answers).
    const out = join(elsewhere, 'demo-out');
    const demo = await run('atelier', ['demo', '--out', out], { cwd: elsewhere, env, timeout: 240_000 });
    expect(`${demo.stdout}${demo.stderr}`).toMatch(/ok: \d+/);
    expect(readFileSync(join(out, 'results.csv'), 'utf8')).toMatch(/status/);
    // Nothing of it went into the checkout.
    const after = existsSync(join(REPO, '.atelier')) ? readdirSync(join(REPO, '.atelier')).sort() : [];
    expect(after).toEqual(before);
  }, 300_000);
});
