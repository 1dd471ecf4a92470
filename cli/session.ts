import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, isGrpcServiceError } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import type { Worker } from '@temporalio/worker';
import {
  isOrphanedEmbeddedServer,
  isOwnServer,
  readServerRecord,
  startDevServer,
  stopServerByPid,
  type DevServerHandle,
  type ServerRecord,
} from '../lib/temporal/devServer';
import { UsageError } from '../lib/shared/errors';
import { installWorkerLogging } from '../lib/logging';
import { ALL_SEARCH_ATTRIBUTES } from '../lib/shared/searchAttributes';
import { findTemporalCli } from '../lib/temporal/temporalCli';
import { endDeadWorkersActivities } from '../lib/temporal/deadWorkers';
import { tracePhase } from '../lib/phaseTrace';
import {
  connectClient,
  connectNative,
  describeTarget,
  plainTarget,
  temporalTargetFromEnv,
  type TemporalTarget,
} from '../lib/temporal/temporalConnection';
import type { ModelCheckInput, ModelCheckResult } from '../activities/providers/modelCheck';
import { spawnGpuWorker } from './gpuWorker';

// Temporal's IndexedValueType for each SDK attribute type (TEXT=1, KEYWORD=2, INT=3, ...): taken
// from the generated protos, not written as numbers (an off-by-one here once registered Keyword
// attributes as Text, which PostgreSQL visibility refuses beyond three).
const INDEXED_VALUE_TYPE = {
  KEYWORD: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
  INT: temporal.api.enums.v1.IndexedValueType.INDEXED_VALUE_TYPE_INT,
} as const;

// How a CLI command reaches Temporal: TEMPORAL_ADDRESS (with TEMPORAL_NAMESPACE and the TLS / API key
// settings of lib/temporal/temporalConnection) when set; else the
// dev server `atelier server` runs for this state dir; else (for commands that run rows) an
// embedded dev server whose state lives under --state-dir, stopped when the command ends.

export interface SessionOptions {
  stateDir: string;
  /** Run workers in this process (always, with an embedded server). */
  withWorkers: boolean;
  /** May start an embedded server when none is running. */
  mayStartServer: boolean;
  queues?: readonly string[];
  concurrency?: number;
  rateLimitPerSecond?: number;
  /** Python GPU worker processes to start with the in-process workers (`--backend diffusers`). */
  gpuWorker?: { args: string[]; processes: number };
  log?: (line: string) => void;
}

export interface Session {
  client: Client;
  namespace: string;
  address: string;
  uiUrl: string | undefined;
  /** True when this command started the server (it stops with the command). */
  embedded: boolean;
  /** Whether the project's search attributes are registered on the server. */
  searchAttributes: boolean;
  /** In-process workers (empty when external workers serve the queues). */
  workers: Worker[];
  /** Resolves when the in-process workers stop, rejects if one crashes; undefined without them. */
  workersDone: Promise<void> | undefined;
  /**
   * With in-process workers: their model check, asked in this process (same environment, same list
   * cache) instead of through a workflow, a round trip through the server before the run starts.
   * Only for the provider queues these workers serve.
   */
  checkModelInProcess?: (input: ModelCheckInput) => Promise<ModelCheckResult>;
  close(): Promise<void>;
}

/**
 * The server `atelier server` (or a running `edit`) keeps for this state dir, if it answers and is
 * proven to be that one (isOwnServer): never a stranger's server that took over the recorded port.
 */
export async function runningServer(stateDir: string): Promise<ServerRecord | undefined> {
  const record = readServerRecord(stateDir);
  return record && (await isOwnServer(stateDir, record)) ? record : undefined;
}

/** gRPC status codes told apart below (ALREADY_EXISTS / UNIMPLEMENTED are tolerated, and said). */
const GRPC_INVALID_ARGUMENT = 3;
const GRPC_ALREADY_EXISTS = 6;
const GRPC_UNIMPLEMENTED = 12;

function grpcCode(err: unknown): number | undefined {
  return isGrpcServiceError(err) ? err.code : undefined;
}

/**
 * Checks (and, where missing, registers) the project's search attributes on an external server.
 * Tolerated, and said: an attribute another client registered meanwhile (ALREADY_EXISTS), or a
 * server without the operator API (UNIMPLEMENTED): runs then start without attributes. Anything
 * else (a type the store refuses, no permission, ...) is a real failure and is thrown, because a
 * swallowed error here once hid that none of the attributes were registered.
 */
export async function ensureSearchAttributes(
  client: Client,
  namespace: string,
  log: (line: string) => void = () => undefined,
): Promise<boolean> {
  const operator = client.connection.operatorService;
  let missing: (typeof ALL_SEARCH_ATTRIBUTES)[number][];
  try {
    const { customAttributes } = await operator.listSearchAttributes({ namespace });
    missing = ALL_SEARCH_ATTRIBUTES.filter((key) => !(customAttributes && key.name in customAttributes));
  } catch (err) {
    if (grpcCode(err) === GRPC_UNIMPLEMENTED) {
      log('this Temporal server does not list search attributes (operator API unsupported): runs start without Atelier search attributes');
      return false;
    }
    throw new UsageError(`could not list the search attributes of namespace ${namespace}: ${(err as Error).message}`);
  }
  if (missing.length === 0) return true;
  try {
    await operator.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((key) => [key.name, INDEXED_VALUE_TYPE[key.type]])),
    });
    log(`registered search attributes ${missing.map((k) => k.name).join(', ')} in namespace ${namespace}`);
    return true;
  } catch (err) {
    const code = grpcCode(err);
    if (code === GRPC_ALREADY_EXISTS) {
      log(`search attributes already registered in namespace ${namespace} (by another client meanwhile)`);
      return true;
    }
    if (code === GRPC_UNIMPLEMENTED) {
      log(
        'this Temporal server cannot register search attributes (operator API unsupported): runs start without Atelier search attributes',
      );
      return false;
    }
    // One command per attribute: the CLI pairs several --name with several --type by position.
    const register = missing.map(
      (k) =>
        `temporal operator search-attribute create --namespace ${namespace} --name ${k.name} --type ${k.type === 'INT' ? 'Int' : 'Keyword'}`,
    );
    throw new UsageError(
      `could not register the search attributes ${missing.map((k) => k.name).join(', ')} in namespace ${namespace}: ${(err as Error).message}\n` +
        `register them as an operator (${register.map((c) => `\`${c}\``).join(', ')}) and run again`,
    );
  }
}

/**
 * Runs `start` (a workflow start with Atelier's search attributes), retrying while the server
 * refuses the attributes as unknown. A server keeps a per-namespace cache of attribute mappings
 * (refreshed within a minute), so right after registration, by this client or another, a start
 * can be refused with "no mapping defined for search attribute" although the attribute exists.
 */
export async function whileSearchAttributesPropagate<T>(
  start: () => Promise<T>,
  log: (line: string) => void,
  timeoutMs = 90_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (let attempt = 0; ; attempt++) {
    try {
      return await start();
    } catch (err) {
      const cause = (err as { cause?: unknown }).cause ?? err;
      const unmapped = isGrpcServiceError(cause) && cause.code === GRPC_INVALID_ARGUMENT && /search attribute/i.test(cause.message);
      if (!unmapped || Date.now() > deadline) throw err;
      if (attempt === 0)
        log('the server has not picked up the newly registered search attributes yet (it refreshes within a minute); retrying');
      await sleep(1000);
    }
  }
}

export async function openSession(options: SessionOptions): Promise<Session> {
  const stateDir = resolve(options.stateDir);
  const external = process.env.TEMPORAL_ADDRESS;
  const namespace = process.env.TEMPORAL_NAMESPACE || 'default';
  let server: DevServerHandle | undefined;
  let address: string;
  let uiUrl: string | undefined;
  if (external) {
    address = external;
  } else {
    let running = await runningServer(stateDir);
    if (running && options.mayStartServer && isOrphanedEmbeddedServer(running)) {
      // Left behind by an `edit` that was killed: no workers serve it. Started afresh on the same
      // database, the run's history is all there and the rows resume.
      options.log?.(`stopping the embedded Temporal server an earlier command left running (pid ${running.pid}); starting it afresh`);
      await stopServerByPid(stateDir, running.pid);
      running = undefined;
    }
    if (running) {
      address = running.address;
      uiUrl = running.uiUrl;
    } else if (options.mayStartServer) {
      tracePhase('server starting');
      server = await startDevServer({
        temporalPath: findTemporalCli(),
        stateDir,
        namespace,
        // The workers' SDK (and its native core) and the activities (sharp, the batch clients, the
        // results writers: ~0.3 s of CPU) load while the server starts, not before it is spawned.
        whileStarting: () => {
          void import('@temporalio/worker').catch(() => undefined);
          void import('../workers').catch(() => undefined);
        },
      });
      tracePhase('server up');
      address = server.address;
      uiUrl = server.uiUrl;
    } else {
      throw new UsageError(
        `no Temporal server is running for state dir ${stateDir}: set TEMPORAL_ADDRESS, or start one with \`npx atelier server --state-dir ${options.stateDir}\``,
      );
    }
  }
  // An external server may need TLS and an API key; the project's own dev servers are plaintext.
  const target: TemporalTarget = external ? temporalTargetFromEnv(process.env, address) : plainTarget(address, namespace);
  if (external) options.log?.(`Temporal: ${describeTarget(target)}`);
  const runWorkers = server !== undefined || options.withWorkers;
  if (runWorkers) await installWorkerLogging({ file: join(stateDir, 'logs', 'worker.log') });

  const modelListCacheDir = join(stateDir, 'cache', 'provider-models');
  const cleanups: Array<() => Promise<void>> = [];
  try {
    const connection = await connectClient(target);
    cleanups.push(() => connection.close());
    const client = new Client({ connection, namespace });
    // Project-started dev servers register them at start; other servers are checked.
    const searchAttributes = external ? await ensureSearchAttributes(client, namespace, options.log) : true;
    let workers: Worker[] = [];
    let workersDone: Promise<void> | undefined;
    if (runWorkers && !external) {
      // Before this command's workers poll: what a killed command's workers left started goes on now,
      // not after its heartbeat timeout (lib/temporal/deadWorkers.ts).
      // Best effort: a sweep that fails leaves those tasks to their heartbeat timeouts, as before.
      const ended = await endDeadWorkersActivities(client).catch((err: unknown) => {
        options.log?.(
          `could not look for tasks a stopped worker left started (${(err as Error).message}); they resume after their heartbeat timeout`,
        );
        return [];
      });
      if (ended.length > 0)
        options.log?.(
          `ended ${ended.length} task(s) a stopped worker left started, so their retries need not wait for a heartbeat timeout: ${[...new Set(ended.map((e) => e.activityType))].join(', ')}`,
        );
    }
    if (runWorkers) {
      const nativeConnection = await connectNative(target);
      cleanups.unshift(() => nativeConnection.close());
      const { createWorkers } = await import('../workers');
      workers = await createWorkers({
        connection: nativeConnection,
        namespace,
        env: process.env,
        // Provider model lists (the plan-time model check) are cached with the server's state.
        modelListCacheDir,
        ...(options.queues ? { queues: options.queues } : {}),
        ...(options.concurrency ? { concurrency: options.concurrency } : {}),
        ...(options.rateLimitPerSecond ? { rateLimitPerSecond: options.rateLimitPerSecond } : {}),
        workerOptions: { shutdownGraceTime: '5 seconds' },
      });
      tracePhase('workers created');
      const running = Promise.all(workers.map((w) => w.run())).then(() => undefined);
      workersDone = running;
      if (options.gpuWorker) {
        const gpu = spawnGpuWorker(
          ['--address', address, '--namespace', namespace, ...options.gpuWorker.args],
          process.env,
          options.log ?? (() => undefined),
          options.gpuWorker.processes,
        );
        cleanups.unshift(() => gpu.stop());
        options.log?.('starting the GPU worker (loading and warming up the model)...');
        await gpu.ready;
        workersDone = Promise.race([running, gpu.exited.then(() => undefined)]);
      }
      // Shutting down before close: stop polling, let in-flight tasks finish within the grace time.
      cleanups.unshift(async () => {
        for (const w of workers) if (w.getState() === 'RUNNING') w.shutdown();
        await running.catch(() => undefined);
      });
    }
    return {
      client,
      namespace,
      address,
      uiUrl,
      embedded: server !== undefined,
      searchAttributes,
      workers,
      workersDone,
      ...(runWorkers
        ? {
            checkModelInProcess: async (input: ModelCheckInput) =>
              (await import('../workers'))
                .modelCheckActivitiesFromEnv(input.backend, process.env, modelListCacheDir)
                .checkModelServed(input),
          }
        : {}),
      async close() {
        for (const cleanup of cleanups) await cleanup().catch(() => undefined);
        tracePhase('workers and connections closed');
        // The workers have drained: the server may go, and need not be waited for.
        await server?.release();
      },
    };
  } catch (err) {
    for (const cleanup of cleanups) await cleanup().catch(() => undefined);
    await server?.stop();
    throw err;
  }
}

export function workflowUiUrl(session: Session, workflowId: string): string | undefined {
  if (!session.uiUrl) return undefined;
  return `${session.uiUrl}/namespaces/${encodeURIComponent(session.namespace)}/workflows/${encodeURIComponent(workflowId)}`;
}

/**
 * What a person needs once a command with an embedded server ends: that server (and the Temporal UI
 * URL printed) stops with the command, the same database under the state dir keeps the run's
 * history, and these commands show it again (status and view need no server at all).
 */
export function embeddedUiAfterwards(session: Pick<Session, 'namespace'>, stateDir: string, runId: string): string {
  const dir = stateDir === './.atelier' ? '' : ` --state-dir ${stateDir}`;
  return [
    'the Temporal UI above is served by the server this command started, and stops with it; to see the run again:',
    `  npx atelier server${dir}   (then http://127.0.0.1:8233/namespaces/${encodeURIComponent(session.namespace)}/workflows/${encodeURIComponent(runId)})`,
    `  npx atelier status ${runId}${dir}   or   npx atelier view ${runId}${dir}   (no server needed)`,
  ].join('\n');
}

/**
 * Sets a provider queue's rate limit on the server (UpdateTaskQueueConfig), so every worker of the
 * queue, on any machine, shares one limit. Returns false where the server does not support it
 * (UNIMPLEMENTED: the in-process workers then enforce the limit with maxTaskQueueActivitiesPerSecond,
 * and the caller says so); any other failure is thrown rather than run without the limit asked for.
 */
export async function setQueueRateLimit(session: Session, taskQueue: string, requestsPerSecond: number): Promise<boolean> {
  try {
    await session.client.workflowService.updateTaskQueueConfig({
      namespace: session.namespace,
      identity: 'atelier-cli',
      taskQueue,
      taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      updateQueueRateLimit: { rateLimit: { requestsPerSecond }, reason: `atelier --rpm ${Math.round(requestsPerSecond * 60)}` },
    });
    return true;
  } catch (err) {
    if (grpcCode(err) === GRPC_UNIMPLEMENTED) return false;
    throw new UsageError(`could not set the rate limit of task queue ${taskQueue}: ${(err as Error).message}`);
  }
}
