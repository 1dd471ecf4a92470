import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { assertBuilt, REPO } from './helpers/cli';

// freePort() (lib/temporal/devServer.ts) names a port for a server started next: the dev server's
// frontend and UI, and the tests' `atelier server --port`. Until that server binds it, no other
// process's bind(0) may be handed the same port, or the server dies on "address already in use"
// (under the full suite's load, the GPU test's server was reported ready and then refused its GPU
// worker's connect). The check runs in a network namespace of its own whose ephemeral range is 20
// ports, so binding every free port there proves the point without touching this machine's ports.

const CHECK = `
const net = require('node:net');
const { freePort } = require(${JSON.stringify(join(REPO, 'dist', 'lib', 'temporal', 'devServer.js'))});
(async () => {
  const port = await freePort();
  const held = [];
  for (;;) {
    const server = net.createServer();
    const bound = await new Promise((r) => { server.once('error', () => r(false)); server.listen(0, '127.0.0.1', () => r(true)); });
    if (!bound) break;
    held.push(server);
  }
  const handedOut = held.map((s) => s.address().port);
  held.forEach((s) => s.close());
  const server = net.createServer();
  const explicit = await new Promise((r) => { server.once('error', (e) => r(e.code)); server.listen(port, '127.0.0.1', () => r('bound')); });
  server.close();
  console.log(JSON.stringify({ port, handedOut, explicit }));
})();
`;

describe('freePort', () => {
  it('keeps the port it names out of other processes’ bind(0) until the server binds it', () => {
    assertBuilt();
    const script = [
      'ip link set lo up',
      "sysctl -q -w net.ipv4.ip_local_port_range='40000 40019'",
      `exec ${JSON.stringify(process.execPath)} -e "$CHECK"`,
    ].join(' && ');
    const out = execFileSync('unshare', ['--net', 'bash', '-c', script], { env: { ...process.env, CHECK }, encoding: 'utf8' });
    const { port, handedOut, explicit } = JSON.parse(out.trim()) as { port: number; handedOut: number[]; explicit: string };
    // Every other port of the range was handed out (the range was exhausted), this one was not.
    expect(port).toBeGreaterThanOrEqual(40000);
    expect(port).toBeLessThanOrEqual(40019);
    expect(handedOut.length).toBeGreaterThan(0);
    expect(handedOut).not.toContain(port);
    // The server it was named for still gets it.
    expect(explicit).toBe('bound');
  });
});
