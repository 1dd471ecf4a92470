import { existsSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Where workers get workflow code: the bundle prebuilt by `npm run build` (fast start), or, when
 * running from TypeScript sources (tests), the workflows folder, bundled on the fly.
 */
export function workflowCodeOption(): { workflowBundle: { codePath: string } } | { workflowsPath: string } {
  const prebuilt = join(__dirname, 'workflow-bundle.js');
  if (existsSync(prebuilt)) return { workflowBundle: { codePath: prebuilt } };
  const source = ['index.ts', 'index.js'].map((f) => join(__dirname, '..', 'workflows', f)).find((p) => existsSync(p));
  if (!source) throw new Error(`no workflow code found next to ${__dirname}; run \`npm run build\``);
  return { workflowsPath: source };
}
