import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createServer } from 'node:net';

// Before `atelier server --port P` starts a dev server, P must be free: a server already answering
// there (another `temporal server start-dev`, say) would otherwise be taken for ours. When it is
// taken, the error names the process holding it where Linux's /proc can tell.

/** Whether 127.0.0.1:`port` can be bound now. */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.unref();
    server.once('error', () => resolve(false));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** Inodes of the sockets listening on `port` (any address), from /proc/net/tcp and tcp6. */
function listeningInodes(port: number): string[] {
  const inodes: string[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = readFileSync(table, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // local_address is HEXIP:HEXPORT; st 0A is LISTEN; the inode is the tenth field.
      const local = fields[1];
      if (!local || fields[3] !== '0A') continue;
      if (parseInt(local.split(':')[1] ?? '', 16) === port && fields[9]) inodes.push(fields[9]);
    }
  }
  return inodes;
}

/**
 * "pid 1234 (temporal server start-dev --port 7233 ...)" for the process listening on `port`,
 * "a process this user cannot see" when the socket is there but its owner is not ours to read, or
 * undefined where /proc does not say (not Linux, or nobody listens).
 */
export function describePortOwner(port: number): string | undefined {
  const inodes = new Set(listeningInodes(port).map((i) => `socket:[${i}]`));
  if (inodes.size === 0) return undefined;
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      let target: string;
      try {
        target = readlinkSync(`/proc/${pid}/fd/${fd}`);
      } catch {
        continue;
      }
      if (!inodes.has(target)) continue;
      let command = '';
      try {
        command = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
      } catch {
        // Gone meanwhile, or not readable: the pid alone still helps.
      }
      return `pid ${pid}${command ? ` (${command.length > 160 ? `${command.slice(0, 157)}...` : command})` : ''}`;
    }
  }
  return 'a process this user cannot see';
}

/** Throws-ready text for a port that is taken, or undefined when it is free. */
export async function portInUse(port: number, what: string): Promise<string | undefined> {
  if (await portFree(port)) return undefined;
  const owner = describePortOwner(port);
  return `${what} ${port} is in use${owner ? ` by ${owner}` : ''}: stop that process or choose another port`;
}
