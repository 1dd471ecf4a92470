import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

// A plain HTTP proxy between S3 clients and an S3 server (versitygw in the tests). It forwards every
// request unchanged (the Host header too, so SigV4 signatures still verify) and counts them, so a test
// reads the number of requests the store itself received, not what a client believes it sent. A test
// scripts the faults a real store shows under load or trouble, each the way the client meets it:
// - `503 SlowDown` answered instead of forwarding (S3's throttling; nothing reaches the store);
// - a reset mid-body: the store's answer is forwarded, then the connection dies halfway through the
//   body (a GET whose bytes stop: the client must not take a short read for the object);
// - a reset after commit: the request is forwarded and the store answers, but the connection dies
//   before the answer reaches the client (the write happened, the client saw an error: its retry
//   meets its own object, the hardest case for a create-only commit);
// - a stopped server: the port refuses connections until `up()` (the same port, so clients need no
//   new endpoint), and connections open at `down()` are cut;
// - a refusal: an S3 error answer (status, code and message as S3 words them, e.g. 404 NoSuchBucket
//   or 403 SignatureDoesNotMatch) instead of forwarding, for chosen requests only: a bucket gone or
//   credentials refused just when the run reads its pages or writes its tables.
// A bucket that is gone and credentials that no longer match for every request are the store's own
// answers: the tests make the store give them (storeFaults.e2e.test.ts).

export interface S3Request {
  method: string;
  /** Path and query as sent (`/bucket/key?x-id=PutObject`). */
  url: string;
}

export interface S3FaultRule {
  method?: string;
  /** Matched against the request's path (with its query). */
  path: RegExp;
  /** How many matching requests get the fault (Infinity: every one, until cleared). */
  times: number;
}

/** An S3 error answer, as the store words it. */
export interface S3Refusal {
  status: number;
  code: string;
  message: string;
}

/** S3's own refusals for a bucket gone and for a request signed with other credentials. */
export const S3_REFUSALS = {
  noSuchBucket: { status: 404, code: 'NoSuchBucket', message: 'The specified bucket does not exist' },
  signatureDoesNotMatch: {
    status: 403,
    code: 'SignatureDoesNotMatch',
    message: 'The request signature we calculated does not match the signature you provided. Check your key and signing method.',
  },
} satisfies Record<string, S3Refusal>;

type Fault = 'slowDown' | 'resetMidBody' | 'resetAfterCommit' | 'refuse';

export interface S3FaultProxy {
  /** The proxy's endpoint (for AWS_ENDPOINT_URL). */
  readonly endpoint: string;
  /** Every request the proxy forwarded or refused, in order (none while it is down). */
  readonly requests: S3Request[];
  /** Answers matching requests with S3's 503 SlowDown. */
  slowDown(rule: S3FaultRule): void;
  /** Forwards matching requests, then cuts the answer halfway through its body. */
  resetMidBody(rule: S3FaultRule): void;
  /** Forwards matching requests and lets the store answer, then cuts the connection before the answer. */
  resetAfterCommit(rule: S3FaultRule): void;
  /** Answers matching requests with an S3 error (S3_REFUSALS), without forwarding them. */
  refuse(rule: S3FaultRule & { answer: S3Refusal }): void;
  /** How many requests got each fault so far. */
  readonly injected: Record<Fault, number>;
  clearFaults(): void;
  /** Stops listening (connections are refused) and cuts the open ones. */
  down(): Promise<void>;
  /** Listens again on the same port. */
  up(): Promise<void>;
  close(): Promise<void>;
}

const SLOW_DOWN =
  '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';

function errorBody(answer: S3Refusal, url: string): string {
  const resource = url.split('?')[0]!;
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${answer.code}</Code><Message>${answer.message}</Message><Resource>${resource}</Resource><RequestId>fault-proxy</RequestId></Error>`;
}

export async function startS3FaultProxy(target: string): Promise<S3FaultProxy> {
  const upstream = new URL(target);
  const requests: S3Request[] = [];
  let rules: (S3FaultRule & { fault: Fault; answer?: S3Refusal })[] = [];
  const injected: Record<Fault, number> = { slowDown: 0, resetMidBody: 0, resetAfterCommit: 0, refuse: 0 };
  const sockets = new Set<Socket>();

  const forward = (req: IncomingMessage, res: ServerResponse, fault?: 'resetMidBody' | 'resetAfterCommit') => {
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        if (fault === 'resetAfterCommit') {
          // The store has answered (the write is done): read its answer to the end, tell the client nothing.
          answer.resume();
          answer.on('end', () => res.socket?.destroy());
          return;
        }
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        if (fault !== 'resetMidBody') return void answer.pipe(res);
        // The headers promise the whole length; the connection dies after half of the first chunk.
        answer.once('data', (chunk: Buffer) => {
          answer.destroy();
          res.write(chunk.subarray(0, Math.max(1, chunk.length >> 1)), () => res.socket?.destroy());
        });
      },
    );
    out.on('error', () => res.destroy());
    req.pipe(out);
  };

  const server: Server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    const url = req.url ?? '/';
    requests.push({ method, url });
    const rule = rules.find((r) => r.times > 0 && (!r.method || r.method === method) && r.path.test(url));
    if (!rule) return forward(req, res);
    rule.times -= 1;
    injected[rule.fault] += 1;
    if (rule.fault === 'resetMidBody' || rule.fault === 'resetAfterCommit') return forward(req, res, rule.fault);
    const [status, body] = rule.answer ? [rule.answer.status, errorBody(rule.answer, url)] : [503, SLOW_DOWN];
    req.resume();
    req.on('end', () => {
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) });
      // A HEAD's answer has no body (S3's has none either: the client reads the status alone).
      res.end(method === 'HEAD' ? undefined : body);
    });
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  const listen = (port: number) =>
    new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
  const stop = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
  await listen(0);
  const { port } = server.address() as AddressInfo;
  const add = (fault: Fault) => (rule: S3FaultRule) => void rules.push({ ...rule, fault });
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    injected,
    slowDown: add('slowDown'),
    resetMidBody: add('resetMidBody'),
    resetAfterCommit: add('resetAfterCommit'),
    refuse: ({ answer, ...rule }) => void rules.push({ ...rule, fault: 'refuse', answer }),
    clearFaults() {
      rules = [];
    },
    down: stop,
    up: () => listen(port),
    close: () => (server.listening ? stop() : Promise.resolve()),
  };
}
