import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

// Plumbing every stand-in shares: what a stand-in offers tests (the Standin interface), scripted
// faults, a sliding-second rate limiter, JSON replies, request bodies, OpenAI's error body (which
// OpenAI-compatible servers answer with too), and a loopback server with the controls built on it.
// Kept apart from any one stand-in, so stand-ins and the modules they mount import it without a cycle.

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

export async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** OpenAI's error body: `{error: {message, type, param, code}}`. */
export function openAIErrorBody(message: string, code: string | null = null, param: string | null = null) {
  return { error: { message, type: 'invalid_request_error', param, code } };
}

export interface FaultStep {
  status: number;
  /** JSON body (any status, 200 included); defaults to an OpenAI-shaped error for the status. */
  body?: unknown;
  /** Sent verbatim instead of `body` (malformed responses). */
  raw?: string;
  headers?: Record<string, string>;
  delayMs?: number;
}

/** What every stand-in offers the tests and benchmarks, whatever wire format it speaks. */
export interface Standin<Call, Step = FaultStep> {
  /** Base URL to give the provider's SDK or adapter. */
  baseURL: string;
  calls: Call[];
  /** Requests whose prompt contains `match` get `steps` in order, then succeed (or repeat them all). */
  script(match: string, steps: Step[], options?: { repeat?: boolean }): void;
  callsFor(match: string): Call[];
  close(): Promise<void>;
}

/** Options every stand-in takes. */
export interface StandinOptions {
  port?: number;
  /** Added to every response, to look like a real model. */
  latencyMs?: number;
  /** Above this many requests in any sliding second: the provider's 429 with a one-second retry. */
  rateLimitPerSecond?: number;
}

interface Script<S> {
  match: string;
  steps: S[];
  repeat: boolean;
  served: number;
}

/** Requests admitted in the last second; `admit()` is false above the rate (that request is not counted). */
export class SlidingWindowLimiter {
  private readonly times: number[] = [];
  constructor(private readonly perSecond: number) {}
  admit(now = Date.now()): boolean {
    while (this.times.length && this.times[0]! <= now - 1000) this.times.shift();
    if (this.times.length >= this.perSecond) return false;
    this.times.push(now);
    return true;
  }
}

/** Scripted faults per prompt substring, shared by the stand-ins. */
export class FaultScripts<S = FaultStep> {
  private readonly scripts: Script<S>[] = [];
  add(match: string, steps: S[], options: { repeat?: boolean } = {}): void {
    this.scripts.push({ match, steps, repeat: options.repeat ?? false, served: 0 });
  }
  /** The next step for this prompt, if any (consumes it). */
  next(prompt: string): S | undefined {
    const script = this.scripts.find((s) => prompt.includes(s.match));
    if (!script) return undefined;
    return script.repeat ? script.steps[script.served++ % script.steps.length] : script.steps[script.served++];
  }
}

/** Sends a scripted step (after its delay); the caller records the status. */
export async function sendStep(
  res: ServerResponse,
  step: FaultStep,
  defaultBody: unknown,
  headers: Record<string, string> = {},
): Promise<void> {
  if (step.delayMs) await sleep(step.delayMs);
  if (res.destroyed) return;
  if (step.raw !== undefined) {
    res.writeHead(step.status, { 'content-type': 'application/json', ...headers, ...(step.headers ?? {}) });
    res.end(step.raw);
    return;
  }
  sendJson(res, step.status, step.body ?? defaultBody, { ...headers, ...(step.headers ?? {}) });
}

export function closeServer(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}

/**
 * Serves `handler` on a free (or the given) loopback port. Connections are kept alive as real APIs
 * keep them: undici (fetch, the openai SDK) stops reusing a connection 1 s before the server's
 * Keep-Alive hint, so a 1 s hint made every call a new connection (and its CPU), which real APIs
 * don't. Closing stays quick: closeServer closes every connection.
 */
export async function listenOnLoopback(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  port = 0,
): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  server.keepAliveTimeout = 5000;
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

/** The controls every stand-in returns: its calls, scripted faults by prompt substring, close. */
export function standinControls<Call extends { prompt: string }, Step>(
  calls: Call[],
  scripts: FaultScripts<Step>,
  server: Server,
): Omit<Standin<Call, Step>, 'baseURL'> {
  return {
    calls,
    script(match, steps, options = {}) {
      scripts.add(match, steps, options);
    },
    callsFor(match) {
      return calls.filter((c) => c.prompt.includes(match));
    },
    close: () => closeServer(server),
  };
}
