// The backends Atelier can send rows to, as types: one per entry of the provider registry
// (activities/providers/registry.ts, the one list), plus `diffusers` (local models on the Python GPU
// workers). Workflow code reads these types; it never loads the registry (type-only import: the
// workflow bundle holds no provider code). The runtime lists (`--backend`'s choices, the workers' key
// lookup) are the registry's own exports.

import type { ApiBackend } from '../../activities/providers/registry';

/** Cloud APIs, served by TypeScript provider adapters on `api-<backend>` queues. */
export type { ApiBackend } from '../../activities/providers/registry';
/** Which provider family serves the model activity; each has its own task queue. */
export type Backend = ApiBackend | 'diffusers';
