import { spawn, type ChildProcess } from 'node:child_process';
import { REPO } from './cli';

// A "host" for multi-host tests on one machine: processes in a mount namespace of their own where
// /tmp is a fresh, empty tmpfs (every test's client files live under /tmp, so a host cannot see
// them), optionally in a PID namespace of their own too (the first process is its init: killing
// the host ends every process on it at once, as a machine that dies). Network stays shared: hosts
// talk over loopback to Temporal and the object store, as separate machines would over a network.

export interface HostOptions {
  /** A PID namespace of its own (with its own /proc). */
  pidNamespace?: boolean;
  /** A path that must be out of the host's sight; it refuses to start if it can see it. */
  mustNotSee?: string;
}

export class Host {
  readonly child: ChildProcess;
  output = '';
  readonly exited: Promise<number | null>;

  constructor(command: string[], env: NodeJS.ProcessEnv, options: HostOptions = {}) {
    const guard = options.mustNotSee ? `if [ -e "$HOST_MUST_NOT_SEE" ]; then echo "client files visible" >&2; exit 3; fi; ` : '';
    // The host keeps the repository (the software it runs) in sight even when the checkout itself
    // lives under /tmp (CI clones there): it is bind-mounted aside, /tmp is covered, and the
    // checkout is mounted back at its own path inside the fresh /tmp.
    const keepRepo = `case "$HOST_REPO" in /tmp/*) stage=$(mktemp -d -p /run atelier-host-XXXXXX); mount --bind "$HOST_REPO" "$stage"; ;; *) stage=; ;; esac; `;
    const restoreRepo = `if [ -n "$stage" ]; then mkdir -p "$HOST_REPO"; mount --bind "$stage" "$HOST_REPO"; umount "$stage"; rmdir "$stage"; fi; `;
    const script = `set -e; ${keepRepo}mount -t tmpfs tmpfs /tmp; ${restoreRepo}${guard}exec "$@"`;
    // --kill-child: when unshare dies, its child dies too (with --pid, every process on the host),
    // so no host process can outlive the test and later poll another test's server on a reused port.
    const unshare = ['--mount', '--propagation', 'private', ...(options.pidNamespace ? ['--pid', '--mount-proc'] : []), '--kill-child'];
    this.child = spawn('unshare', [...unshare, 'bash', '-c', script, 'host', ...command], {
      cwd: REPO,
      env: { ...env, HOST_REPO: REPO, ...(options.mustNotSee ? { HOST_MUST_NOT_SEE: options.mustNotSee } : {}) },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: stopping the host signals every process on it, not just unshare.
      detached: true,
    });
    this.child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('close', (code) => resolve(code)));
  }

  async waitFor(pattern: RegExp, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!pattern.test(this.output)) {
      if (this.child.exitCode !== null || Date.now() > deadline) throw new Error(`host never printed ${pattern}:\n${this.output}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * SIGTERM (a clean stop) or SIGKILL (the host dies) to every process on the host; a host still
   * there after the grace time is killed.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
    const signalAll = (s: NodeJS.Signals) => {
      try {
        process.kill(-this.child.pid!, s);
      } catch {
        // already gone
      }
    };
    if (this.child.exitCode === null && this.child.signalCode === null) signalAll(signal);
    const timer = setTimeout(() => signalAll('SIGKILL'), graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(timer);
    }
    // The host's processes share unshare's process group: none may linger after it.
    signalAll('SIGKILL');
  }
}
