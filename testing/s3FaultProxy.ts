import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

// A plain HTTP proxy between S3 clients and an S3 server (versitygw in the tests). It forwards every
// request unchanged (the Host header too, so SigV4 signatures still verify) and counts them, so a test
// reads the number of requests the store itself received, not what a client believes it sent. A test
// can script faults the way a real store answers under load: `503 SlowDown` for matching requests.

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

export interface S3FaultProxy {
  /** The proxy's endpoint (for AWS_ENDPOINT_URL). */
  readonly endpoint: string;
  /** Every request the proxy forwarded or refused, in order. */
  readonly requests: S3Request[];
  /** Answers matching requests with S3's 503 SlowDown. */
  slowDown(rule: S3FaultRule): void;
  clearFaults(): void;
  close(): Promise<void>;
}

const SLOW_DOWN =
  '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>';

export async function startS3FaultProxy(target: string): Promise<S3FaultProxy> {
  const upstream = new URL(target);
  const requests: S3Request[] = [];
  let rules: S3FaultRule[] = [];

  const forward = (req: IncomingMessage, res: ServerResponse) => {
    const out = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
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
    req.resume();
    req.on('end', () => {
      res.writeHead(503, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(SLOW_DOWN) });
      res.end(SLOW_DOWN);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    slowDown(rule) {
      rules.push({ ...rule });
    },
    clearFaults() {
      rules = [];
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
