import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';
import { API_BACKEND_NAMES, batchBackends, PROVIDERS } from '../../activities/providers/registry';
import type { ProviderSpec } from '../../activities/providers/spec';

// Providers as one module each (issue 22): each provider lives in its folder, activities/providers/<name>/
// (adapter, listing, batch client, table rows, stand-in), behind one spec that registry.ts names once.
// An adapter loads its own SDK and no other provider's.
// ModelScope borrowed nextMidnight from gemini.ts (so loaded @google/genai) and, with fal,
// retryAfterMs from openai.ts (so loaded the openai SDK). The import graph is read from the sources
// with TypeScript's own pre-processor, following relative imports through the repository.

const ROOT = resolve(__dirname, '../..');
const SDKS = ['openai', '@google/genai'] as const;

/** The relative module specifiers of a file's imports and re-exports, static and dynamic (`import('./x')`). */
function relativeImports(file: string): { spec: string; typeOnly: boolean }[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const out: { spec: string; typeOnly: boolean }[] = [];
  const walk = (node: ts.Node) => {
    if (
      (ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) &&
      node.moduleSpecifier &&
      ts.isStringLiteral(node.moduleSpecifier)
    ) {
      const typeOnly = ts.isImportDeclaration(node) ? !!node.importClause?.isTypeOnly : node.isTypeOnly;
      out.push({ spec: node.moduleSpecifier.text, typeOnly });
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword) {
      const arg = node.arguments[0];
      if (arg && ts.isStringLiteral(arg)) out.push({ spec: arg.text, typeOnly: false });
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      out.push({ spec: node.argument.literal.text, typeOnly: true });
    }
    ts.forEachChild(node, walk);
  };
  walk(sf);
  return out.filter((i) => i.spec.startsWith('.'));
}

function resolveModule(from: string, spec: string): string | undefined {
  const base = resolve(dirname(from), spec);
  return [`${base}.ts`, join(base, 'index.ts')].find((p) => existsSync(p));
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'node_modules' || name === 'dist' || name.startsWith('.') ? [] : sourceFiles(path);
    return name.endsWith('.ts') ? [path] : [];
  });
}

const PROVIDERS_DIR = join(ROOT, 'activities/providers');
const FOLDERS = readdirSync(PROVIDERS_DIR).filter((name) => statSync(join(PROVIDERS_DIR, name)).isDirectory());

/** The provider folder a file is in, if any. */
function providerOf(file: string): string | undefined {
  const rel = relative(PROVIDERS_DIR, file);
  if (rel.startsWith('..')) return undefined;
  const [first, ...rest] = rel.split(sep);
  return rest.length ? first : undefined;
}

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
  openai: ['openai'],
  azure: ['openai'],
  openrouter: ['openai'],
  gemini: ['@google/genai'],
  vertex: ['@google/genai'],
  fal: [],
  modelscope: [],
};

describe('provider modules load only their own SDK', () => {
  for (const [name, sdks] of Object.entries(EXPECTED)) {
    it(`activities/providers/${name}/adapter.ts: ${sdks.length ? sdks.join(', ') : 'no SDK'}`, () => {
      const reached = packagesReached(`activities/providers/${name}/adapter.ts`);
      expect(SDKS.filter((sdk) => reached.has(sdk))).toEqual([...sdks]);
    });
  }

  it('the registry (and so every spec and table) loads no SDK: adapters, listings and batch clients load on first call', () => {
    const reached = packagesReached('activities/providers/registry.ts');
    expect(SDKS.filter((sdk) => reached.has(sdk))).toEqual([]);
  });
});

/**
 * Where one provider's folder may use another's: each pair with its reason. Anything else outside a
 * provider's folder reaches it only through the registry (its spec), so a new dependency on a
 * provider's internals fails here until it is declared and explained.
 */
const DECLARED: Record<string, readonly string[]> = {
  // Azure OpenAI is OpenAI's images API at a deployment: OpenAI's adapter, rows and stand-in.
  'activities/providers/azure': ['openai'],
  // Vertex AI serves the Gemini models through the same SDK: Gemini's adapter, rows and stand-in.
  'activities/providers/vertex': ['gemini'],
  // OpenRouter answers OpenAI-SDK errors (classifyOpenAIError) and its google/* models take Gemini's rows.
  'activities/providers/openrouter': ['openai', 'gemini'],
  // fal's nano-banana endpoints take Gemini's aspect ratios.
  'activities/providers/fal': ['gemini'],
  // The prompt enhancer and the judge speak OpenRouter's chat API (its error classes, its data URLs).
  'activities/providers/promptEnhance.ts': ['openrouter'],
  'activities/judge/client.ts': ['openrouter'],
  // The judge stand-in is the OpenRouter stand-in playing a chat model.
  'standins/judge.ts': ['openrouter'],
  // The demo starts the OpenAI stand-in with a latency of its own.
  'cli/demo.ts': ['openai'],
};

/** The registry's lines: each provider's name, and the module its spec is imported from. */
function registryLines(): { name: string; from: string | undefined }[] {
  const file = join(PROVIDERS_DIR, 'registry.ts');
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
  const importedFrom = new Map<string, string>();
  const lines: { name: string; from: string | undefined }[] = [];
  for (const statement of sf.statements) {
    if (ts.isImportDeclaration(statement) && ts.isStringLiteral(statement.moduleSpecifier)) {
      const bindings = statement.importClause?.namedBindings;
      if (bindings && ts.isNamedImports(bindings))
        for (const el of bindings.elements) importedFrom.set(el.name.text, statement.moduleSpecifier.text);
    }
    if (!ts.isVariableStatement(statement)) continue;
    for (const decl of statement.declarationList.declarations) {
      if (!ts.isIdentifier(decl.name) || decl.name.text !== 'PROVIDERS' || !decl.initializer) continue;
      let init: ts.Expression = decl.initializer;
      while (ts.isSatisfiesExpression(init) || ts.isAsExpression(init)) init = init.expression;
      if (!ts.isObjectLiteralExpression(init)) continue;
      for (const prop of init.properties) {
        if (!ts.isPropertyAssignment(prop) || !ts.isIdentifier(prop.initializer)) continue;
        lines.push({ name: prop.name.getText(sf), from: importedFrom.get(prop.initializer.text) });
      }
    }
  }
  return lines;
}

/**
 * Where a provider's name may stand outside its folder and its registry line, each with its reason
 * (the rest of the code reaches a provider through the registry: its name as data, its spec's parts).
 */
const NAMED_OUTSIDE: Record<string, readonly string[]> = {
  // `--backend`'s default.
  'cli/optionGroups.ts': ['openai'],
  // The demo runs the OpenAI stand-in.
  'cli/demo.ts': ['openai'],
};

describe('each provider is one folder behind one spec, registered once', () => {
  it('the folders are the backends, each registered by its spec under its own name', () => {
    expect(Object.keys(PROVIDERS).sort()).toEqual([...FOLDERS].sort());
    expect(API_BACKEND_NAMES).toEqual(Object.keys(PROVIDERS));
    // Each registry line binds a name to the spec of the folder of that name.
    const lines = registryLines();
    expect(lines.map((l) => l.name)).toEqual(Object.keys(PROVIDERS));
    for (const { name, from } of lines) expect(from, name).toBe(`./${name}/spec`);
  });

  it("adding a provider touches its folder and one registry line: no other code names it (its name, its key's environment variables)", () => {
    // Code that names a provider: a string that is its name or one of its environment variables (a
    // branch on the backend, a lookup), or an object key that is its name (a per-provider table).
    // Prose that mentions one (an example in --help, a message) is not a place to edit for a new one.
    // Tests, benches and test tooling exempt: they exercise a provider by name.
    const files = sourceFiles(ROOT).filter((f) => {
      const rel = relative(ROOT, f);
      return !rel.startsWith(`test${sep}`) && !rel.startsWith(`bench${sep}`) && !rel.startsWith(`testing${sep}`);
    });
    const named = new Map<string, string>(Object.keys(PROVIDERS).map((name) => [name, name]));
    for (const [name, spec] of Object.entries(PROVIDERS as Record<string, ProviderSpec>))
      for (const v of [...spec.env.keys, spec.env.baseUrl]) named.set(v, name);
    // A provider's folder may name those it declares a dependency on, and those declared on it
    // (Vertex runs on Gemini's adapter, which so knows Vertex).
    const related = (home: string, provider: string) =>
      (DECLARED[`activities/providers/${home}`] ?? []).includes(provider) ||
      (DECLARED[`activities/providers/${provider}`] ?? []).includes(home);
    const found: string[] = [];
    for (const file of files) {
      const rel = relative(ROOT, file);
      if (rel === join('activities', 'providers', 'registry.ts')) continue;
      const home = providerOf(file);
      const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true, ts.ScriptKind.TS);
      const visit = (node: ts.Node) => {
        let text: string | undefined;
        const moduleName =
          ts.isImportDeclaration(node.parent) ||
          ts.isExportDeclaration(node.parent) ||
          (ts.isCallExpression(node.parent) && node.parent.expression.kind === ts.SyntaxKind.ImportKeyword);
        if (ts.isStringLiteralLike(node) && !moduleName) text = node.text;
        else if (ts.isIdentifier(node) && ts.isPropertyAssignment(node.parent) && node.parent.name === node) text = node.text;
        const provider = text === undefined ? undefined : named.get(text);
        if (provider && provider !== home && !(home && related(home, provider)) && !(NAMED_OUTSIDE[rel] ?? []).includes(provider))
          found.push(`${rel}:${sf.getLineAndCharacterOfPosition(node.getStart()).line + 1} ${text}`);
        ts.forEachChild(node, visit);
      };
      ts.forEachChild(sf, visit);
    }
    expect(found).toEqual([]);
  });

  it('the workflow code loads no provider module: it reads the backends as types only', () => {
    // What webpack bundles for the workflows: their static value imports, followed through the repo.
    const seen = new Set<string>();
    const reached: string[] = [];
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      for (const { spec, typeOnly } of relativeImports(file)) {
        if (typeOnly) continue;
        const target = resolveModule(file, spec);
        if (!target) continue;
        const rel = relative(ROOT, target);
        if (rel.startsWith(`activities${sep}`)) reached.push(`${relative(ROOT, file)} -> ${rel}`);
        else visit(target);
      }
    };
    visit(join(ROOT, 'workflows', 'index.ts'));
    expect(reached).toEqual([]);
  });

  it('registry.ts has one import per provider, of its spec, and nothing else of its folder', () => {
    const registry = join(PROVIDERS_DIR, 'registry.ts');
    const named = relativeImports(registry).flatMap((i) => {
      const target = resolveModule(registry, i.spec);
      const provider = target && providerOf(target);
      return provider ? [relative(PROVIDERS_DIR, target)] : [];
    });
    expect(named.sort()).toEqual(FOLDERS.map((f) => join(f, 'spec.ts')).sort());
  });

  it('every folder holds its adapter, its table rows, its spec and its stand-in; listing and batch where the spec has them', () => {
    for (const name of FOLDERS) {
      const spec = (PROVIDERS as Record<string, ProviderSpec>)[name]!;
      const has = (file: string) => existsSync(join(PROVIDERS_DIR, name, file));
      expect(
        ['adapter.ts', 'models.ts', 'spec.ts', 'standin.ts'].filter((f) => !has(f)),
        name,
      ).toEqual([]);
      expect(has('list.ts'), `${name}: list.ts iff the spec lists`).toBe(spec.listing.list !== undefined);
      expect(has('batch.ts'), `${name}: batch.ts iff the spec has batch`).toBe(spec.batch !== undefined);
    }
  });

  it('the batch backends are the specs with a batch capability (no list of them elsewhere)', () => {
    const withBatch = Object.entries(PROVIDERS as Record<string, ProviderSpec>)
      .filter(([, s]) => s.batch)
      .map(([name]) => name);
    expect(batchBackends()).toEqual(withBatch);
    expect(withBatch).toEqual(['openai', 'gemini']);
    const hardCoded = sourceFiles(ROOT).filter(
      (f) => !f.includes(`${sep}test${sep}`) && /\bBATCH_(BACKENDS|LIMITS)\b/.test(readFileSync(f, 'utf8')),
    );
    expect(hardCoded.map((f) => relative(ROOT, f))).toEqual([]);
  });

  it("nothing outside a provider's folder names its internals, but the declared dependencies", () => {
    // Tests and benches exempt: they test a provider's internals and start its stand-in directly.
    const files = sourceFiles(ROOT).filter((f) => {
      const rel = relative(ROOT, f);
      return !rel.startsWith(`test${sep}`) && !rel.startsWith(`bench${sep}`);
    });
    const undeclared: string[] = [];
    for (const file of files) {
      const home = providerOf(file);
      const rel = relative(ROOT, file);
      const declared = DECLARED[rel] ?? (home ? DECLARED[`activities/providers/${home}`] : undefined) ?? [];
      for (const { spec } of relativeImports(file)) {
        const target = resolveModule(file, spec);
        const provider = target && providerOf(target);
        if (!provider || provider === home) continue;
        if (rel === 'activities/providers/registry.ts' && target.endsWith(`${provider}${sep}spec.ts`)) continue;
        if (!declared.includes(provider)) undeclared.push(`${rel} -> ${relative(ROOT, target)}`);
      }
    }
    expect(undeclared).toEqual([]);
  });

  it("a stand-in imports nothing of ours but the stand-ins' HTTP helpers: it plays the provider's API from its docs, not from our adapter or table", () => {
    for (const name of FOLDERS) {
      for (const file of readdirSync(join(PROVIDERS_DIR, name)).filter((f) => f.startsWith('standin'))) {
        const path = join(PROVIDERS_DIR, name, file);
        for (const { spec } of relativeImports(path)) {
          const target = relative(ROOT, resolveModule(path, spec) ?? spec);
          const ok = target === join('standins', 'server.ts') || /^activities\/providers\/[a-z]+\/standin(Batch)?\.ts$/.test(target);
          expect(ok, `${name}/${file} imports ${target}`).toBe(true);
        }
      }
    }
  });
});
