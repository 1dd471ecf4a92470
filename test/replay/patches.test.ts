import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { temporal } from '@temporalio/proto';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { PATCH, PATCH_REGISTER, RETIRED_PATCH_IDS, type PatchName } from '../../workflows/patches';

// The patch register (workflows/patches.ts) against the workflow code and the recorded histories:
// every patch the code uses is registered at the stage the code uses it, every registered patch is
// used, and the register's fixture lists are what the fixtures hold. No server: source and
// fixtures are read as files.

const REPO = join(__dirname, '..', '..');
const PATCH_FUNCTIONS = new Set(['patched', 'deprecatePatch']);
const WORKFLOWS = join(REPO, 'workflows');
const FIXTURES = join(__dirname, 'fixtures');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

interface PatchCall {
  file: string;
  line: number;
  call: 'patched' | 'deprecatePatch';
  argument: string;
}

/** Every `patched(...)` / `deprecatePatch(...)` call in workflows/, with its argument as written (from the AST: comments are not calls). */
function patchCalls(): PatchCall[] {
  const calls: PatchCall[] = [];
  for (const file of sources(WORKFLOWS)) {
    const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node): void => {
      if (ts.isCallExpression(node) && ts.isIdentifier(node.expression) && PATCH_FUNCTIONS.has(node.expression.text)) {
        calls.push({
          file: relative(REPO, file),
          line: source.getLineAndCharacterOfPosition(node.getStart()).line + 1,
          call: node.expression.text as PatchCall['call'],
          argument: node.arguments.map((a) => a.getText(source)).join(', '),
        });
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
    // An alias (`import { patched as p }`) would hide calls from this scan: refuse it.
    expect(source.text, `${relative(REPO, file)} renames a patch function`).not.toMatch(/\b(patched|deprecatePatch)\s+as\s+\w/);
  }
  return calls;
}

/** The patch ids whose markers a recorded history holds. */
function markerIds(fixture: string): Set<string> {
  const history = temporal.api.history.v1.History.decode(readFileSync(join(FIXTURES, fixture)));
  const ids = new Set<string>();
  for (const event of history.events) {
    const marker = event.markerRecordedEventAttributes;
    if (marker?.markerName !== 'core_patch') continue;
    for (const payload of marker.details?.['patch-data']?.payloads ?? []) {
      ids.add((JSON.parse(Buffer.from(payload.data ?? []).toString('utf8')) as { id: string }).id);
    }
  }
  return ids;
}

const fixtures = readdirSync(FIXTURES)
  .filter((set) => statSync(join(FIXTURES, set)).isDirectory())
  .flatMap((set) =>
    readdirSync(join(FIXTURES, set))
      .filter((file) => file.endsWith('.binpb'))
      .map((file) => `${set}/${file}`),
  );
const markers = new Map(fixtures.map((fixture) => [fixture, markerIds(fixture)]));
const names = Object.keys(PATCH_REGISTER) as PatchName[];

describe('the patch register', () => {
  it('finds the calls it checks (the scan is not blind)', () => {
    expect(patchCalls().length).toBeGreaterThanOrEqual(names.length);
    expect(fixtures.length).toBeGreaterThan(0);
  });

  it('names every patch in workflows/ through a register constant, at the stage the register gives', () => {
    for (const { file, line, call, argument } of patchCalls()) {
      const where = `${file}:${line}: ${call}(${argument})`;
      const name = /^PATCH\.(\w+)$/.exec(argument)?.[1];
      expect(name, `${where} must name its id as PATCH.<name> from workflows/patches.ts`).toBeDefined();
      expect(names, `${where}: not in PATCH_REGISTER`).toContain(name);
      const stage = PATCH_REGISTER[name as PatchName].stage;
      expect(call === 'patched' ? 'patched' : 'deprecated', `${where}: the register says ${stage}`).toBe(stage);
    }
  });

  it('lists only patches the code uses, each id once, none retired', () => {
    const used = new Set(patchCalls().map((c) => /^PATCH\.(\w+)$/.exec(c.argument)?.[1]));
    for (const name of names) {
      expect(used, `${name} (${PATCH[name]}) is registered but no workflow calls it: remove it (see CONTRIBUTING.md)`).toContain(name);
      expect(PATCH_REGISTER[name].id).toBe(PATCH[name]);
    }
    const ids = names.map((n) => PATCH[n]);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(RETIRED_PATCH_IDS, `${id} was retired: a new patch needs a new id`).not.toContain(id);
  });

  it.each(names)('%s: covered by the recorded histories that hold its marker, and by no others', (name) => {
    const { id, coveredBy } = PATCH_REGISTER[name];
    expect(coveredBy.length, `no recorded history holds ${id}: record one (test/replay/fixtures/README.md)`).toBeGreaterThan(0);
    for (const fixture of coveredBy) expect(fixtures, `${name}: ${fixture} is not in test/replay/fixtures`).toContain(fixture);
    const holding = fixtures.filter((fixture) => markers.get(fixture)!.has(id));
    expect([...coveredBy].sort()).toEqual(holding.sort());
  });

  it.each(names)('%s: the histories that need its old branch exist and do not hold its marker', (name) => {
    const { id, neededBy, stage } = PATCH_REGISTER[name];
    // deprecatePatch() always takes the new branch: histories that needed the old one must be retired with it.
    if (stage === 'deprecated') expect(neededBy, `${id} is deprecated: retire the histories that need its old branch`).toEqual([]);
    for (const fixture of neededBy) {
      expect(fixtures, `${name}: ${fixture} is not in test/replay/fixtures`).toContain(fixture);
      expect(markers.get(fixture)!.has(id), `${fixture} holds ${id}: it takes the new branch`).toBe(false);
    }
  });
});
