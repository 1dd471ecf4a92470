import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

// Providers as one module each (issue 22): an adapter loads its own SDK and no other provider's.
// ModelScope borrowed nextMidnight from gemini.ts (so loaded @google/genai) and, with fal,
// retryAfterMs from openai.ts (so loaded the openai SDK). The import graph is read from the sources
// with TypeScript's own pre-processor, following relative imports through the repository.

const ROOT = resolve(__dirname, '../..');
const SDKS = ['openai', '@google/genai'] as const;

/** The bare packages a module reaches through its static imports (type-only imports excluded). */
function packagesReached(entry: string): Set<string> {
  const seen = new Set<string>();
  const packages = new Set<string>();
  const visit = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    const source = readFileSync(file, 'utf8');
    const sf = ts.createSourceFile(file, source, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
    for (const statement of sf.statements) {
      if (!ts.isImportDeclaration(statement) && !ts.isExportDeclaration(statement)) continue;
      const spec = statement.moduleSpecifier;
      if (!spec || !ts.isStringLiteral(spec)) continue;
      // `import type` and `export type` vanish at compile time: they load nothing.
      if (ts.isImportDeclaration(statement) && statement.importClause?.isTypeOnly) continue;
      if (ts.isExportDeclaration(statement) && statement.isTypeOnly) continue;
      const name = spec.text;
      if (name.startsWith('.')) {
        const base = resolve(dirname(file), name);
        const found = [`${base}.ts`, join(base, 'index.ts')].find((p) => existsSync(p));
        if (found) visit(found);
      } else if (!name.startsWith('node:')) {
        packages.add(name.startsWith('@') ? name.split('/').slice(0, 2).join('/') : name.split('/')[0]!);
      }
    }
  };
  visit(join(ROOT, entry));
  return packages;
}

const EXPECTED: Record<string, readonly string[]> = {
  'activities/providers/openai.ts': ['openai'],
  'activities/providers/azure.ts': ['openai'],
  'activities/providers/openrouter.ts': ['openai'],
  'activities/providers/gemini.ts': ['@google/genai'],
  'activities/providers/vertex.ts': ['@google/genai'],
  'activities/providers/fal.ts': [],
  'activities/providers/modelscope.ts': [],
};

describe('provider modules load only their own SDK', () => {
  for (const [file, sdks] of Object.entries(EXPECTED)) {
    it(`${file}: ${sdks.length ? sdks.join(', ') : 'no SDK'}`, () => {
      const reached = packagesReached(file);
      expect(SDKS.filter((sdk) => reached.has(sdk))).toEqual([...sdks]);
    });
  }
});
