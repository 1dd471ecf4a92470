import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import {
  connect,
  constants,
  createSecureServer,
  type ClientHttp2Session,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type ServerHttp2Session,
  type ServerHttp2Stream,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { join } from 'node:path';

// The Temporal CLI's dev server (`temporal server start-dev`, 1.9.1) has no TLS option, so the TLS
// tests put this in front of it: a TLS-terminating gRPC proxy on loopback (Node's http2, ALPN h2)
// that requires a client certificate signed by the test CA and forwards every call, headers,
// messages and trailers unchanged, to the plaintext dev server. It records the client certificate
// and the `authorization` header of each call, so a test can see what the SDKs really sent.

export interface Pki {
  dir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed nothing here: trusting it instead must fail. */
  otherCa: string;
}

/** A throwaway CA, a server certificate for `serverName` only (not 127.0.0.1) and a client certificate. */
export function makePki(dir: string, serverName: string): Pki {
  const ssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const key = (name: string) => ssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', name);
  for (const ca of ['ca', 'other-ca']) {
    key(`${ca}.key`);
    ssl(
      'req',
      '-x509',
      '-new',
      '-key',
      `${ca}.key`,
      '-days',
      '2',
      '-subj',
      `/CN=atelier test ${ca}`,
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
      '-out',
      `${ca}.pem`,
    );
  }
  const leaf = (name: string, cn: string, ext: string) => {
    key(`${name}.key`);
    ssl('req', '-new', '-key', `${name}.key`, '-subj', `/CN=${cn}`, '-out', `${name}.csr`);
    writeFileSync(join(dir, `${name}.ext`), ext);
    ssl(
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-days',
      '2',
      '-extfile',
      `${name}.ext`,
      '-out',
      `${name}.pem`,
    );
  };
  leaf(
    'server',
    serverName,
    `basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:${serverName}\n`,
  );
  leaf(
    'client',
    'atelier-test-client',
    'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
  );
  const p = (f: string) => join(dir, f);
  return {
    dir,
    ca: p('ca.pem'),
    serverCert: p('server.pem'),
    serverKey: p('server.key'),
    clientCert: p('client.pem'),
    clientKey: p('client.key'),
    otherCa: p('other-ca.pem'),
  };
}

export interface TlsFront {
  address: string;
  /** One entry per forwarded call. */
  calls: Array<{ path: string; authorization: string | undefined; clientCn: string | undefined }>;
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set([':method', ':path', ':scheme', ':authority', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade']);

function forwardable(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) out[k] = v;
  return out;
}

export async function startTlsFront(pki: Pki, upstreamAddress: string): Promise<TlsFront> {
  const upstream: ClientHttp2Session = connect(`http://${upstreamAddress}`);
  upstream.on('error', () => undefined);
  const calls: TlsFront['calls'] = [];
  const server = createSecureServer({
    key: readFileSync(pki.serverKey),
    cert: readFileSync(pki.serverCert),
    ca: readFileSync(pki.ca),
    requestCert: true,
    rejectUnauthorized: true, // no certificate from the test CA, no connection
    ALPNProtocols: ['h2'],
  });
  server.on('stream', (stream: ServerHttp2Stream, headers: IncomingHttpHeaders) => {
    const socket = stream.session?.socket as TLSSocket | undefined;
    const cn = socket?.getPeerCertificate()?.subject?.CN;
    const path = String(headers[':path']);
    const auth = headers.authorization;
    calls.push({ path, authorization: Array.isArray(auth) ? auth.join(',') : auth, clientCn: Array.isArray(cn) ? cn.join(',') : cn });
    const up = upstream.request({
      ...forwardable(headers),
      [constants.HTTP2_HEADER_METHOD]: headers[':method'],
      [constants.HTTP2_HEADER_PATH]: path,
    });
    let trailers: OutgoingHttpHeaders = {};
    stream.pipe(up);
    up.on('response', (h, flags) => {
      // A trailers-only answer (an error status with no messages) ends in its headers.
      const endsHere = (flags & constants.NGHTTP2_FLAG_END_STREAM) !== 0 || h['grpc-status'] !== undefined;
      if (stream.destroyed) return;
      stream.respond(forwardable(h), endsHere ? { endStream: true } : { waitForTrailers: true });
      if (endsHere) return;
      up.on('data', (chunk: Buffer) => stream.write(chunk));
      up.on('trailers', (t) => (trailers = forwardable(t)));
      up.on('end', () => stream.end());
    });
    stream.on('wantTrailers', () => stream.sendTrailers(trailers));
    up.on('error', () => stream.destroyed || stream.close(constants.NGHTTP2_INTERNAL_ERROR));
    stream.on('error', () => up.destroyed || up.close(constants.NGHTTP2_CANCEL));
    stream.on('close', () => up.destroyed || up.close(constants.NGHTTP2_CANCEL));
  });
  const sessions = new Set<ServerHttp2Session>();
  server.on('session', (s) => {
    sessions.add(s);
    s.on('close', () => sessions.delete(s));
  });
  server.on('sessionError', () => undefined);
  server.on('tlsClientError', () => undefined); // refused handshakes are expected in the tests
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    calls,
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Open sessions (long polls) would keep close() waiting.
      for (const s of sessions) s.destroy();
      await closed;
      upstream.close();
    },
  };
}
