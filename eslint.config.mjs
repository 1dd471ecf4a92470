// Lint rules `npm test` enforces (scripts/test.mjs runs `eslint .` and `prettier --check .`).
import { builtinModules } from 'node:module';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import importX, { createNodeResolver } from 'eslint-plugin-import-x';

const nodeBuiltins = [...builtinModules, ...builtinModules.map((m) => `node:${m}`)];

// Workflow code runs in Temporal's deterministic sandbox: no Node built-ins, and nothing from the
// Node-side modules (activities, storage, lib/ outside lib/shared/). Types may come from anywhere.
const workflowSafeImports = {
  paths: nodeBuiltins.map((name) => ({ name, message: 'workflow code runs in a sandbox without Node built-ins' })),
  patterns: [
    {
      group: [
        '**/activities/**',
        '**/storage/**',
        '**/cli/**',
        '**/workers/**',
        '**/standins/**',
        '**/testing/**',
        '**/lib/*',
        '**/lib/*/**',
        '!**/lib/shared',
        '!**/lib/shared/**',
      ],
      allowTypeImports: true,
      message: 'workflow code may import values only from workflows/ and lib/shared/ (types are fine)',
    },
  ],
};

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', '.tools/**', 'gpu-workers/**', 'deploy/**', 'coverage/**', '**/*.js', '**/*.mjs', '**/*.cjs'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts', '**/*.mts'],
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { 'import-x': importX },
    settings: {
      'import-x/extensions': ['.ts', '.mts', '.js'],
      'import-x/parsers': { '@typescript-eslint/parser': ['.ts', '.mts'] },
      'import-x/resolver-next': [createNodeResolver({ extensions: ['.ts', '.mts', '.js', '.json'] })],
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/no-import-type-side-effects': 'error',
      // A cycle closed only by a dynamic import (the provider registry's specs load their adapters on
      // first call; adapters read the model table, which the registry feeds) cannot meet a
      // half-loaded module: the import runs after every module of the cycle has loaded.
      'import-x/no-cycle': ['error', { ignoreExternal: true, allowUnsafeDynamicCyclicDependency: true }],
      // Unused names starting with _ are deliberate (a destructured field left out, say).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    files: ['workflows/**/*.ts', 'lib/shared/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', workflowSafeImports] },
  },
  {
    // The storage layer sits below everything but lib/shared/: it knows keys and bytes, not runs,
    // datasets or providers, so any of those can use it without a cycle.
    files: ['storage/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          patterns: [
            {
              group: [
                '**/lib/*',
                '**/lib/*/**',
                '!**/lib/shared',
                '!**/lib/shared/**',
                '**/activities/**',
                '**/cli/**',
                '**/workflows/**',
                '**/testing/**',
              ],
              message: 'storage/ may import only from storage/ and lib/shared/',
            },
          ],
        },
      ],
    },
  },
  {
    // Test and benchmark tooling (a real cluster, versitygw, Go builds) is not part of the product.
    files: ['cli/**/*.ts', 'activities/**/*.ts', 'workflows/**/*.ts', 'workers/**/*.ts', 'lib/**/*.ts', 'storage/**/*.ts', 'web/**/*.ts'],
    ignores: ['workflows/**', 'lib/shared/**', 'storage/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['**/testing/**'], message: 'product code must not import testing/ (test and bench tooling)' }] },
      ],
    },
  },
);
