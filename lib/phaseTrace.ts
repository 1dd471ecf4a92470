// Phase tracing: with ATELIER_TRACE_PHASES set, a command prints when each phase of its start and
// end is reached, in ms since its process began (node's own boot and the imports included), so the
// road to the first model call and from the last one to the exit can be measured where they run
// (bench/saturation.ts collects these lines). Each line also gives the CPU time the process has
// used so far (user + system, all its threads): on a machine shared with other work the wall times
// stretch with the load, the CPU times much less, so they say what a phase costs by itself.

const enabled = Boolean(process.env.ATELIER_TRACE_PHASES);

export function tracePhase(phase: string): void {
  if (!enabled) return;
  const cpu = process.cpuUsage();
  process.stderr.write(`[phase] ${phase} ${performance.now().toFixed(0)} ms (cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms)\n`);
}
