// Phase tracing: with ATELIER_TRACE_PHASES set, a command prints when each phase of its start and
// end is reached, in ms since its process began (node's own boot and the imports included), so the
// road to the first model call and from the last one to the exit can be measured where they run
// (bench/saturation.ts collects these lines).

const enabled = Boolean(process.env.ATELIER_TRACE_PHASES);

export function tracePhase(phase: string): void {
  if (enabled) process.stderr.write(`[phase] ${phase} ${performance.now().toFixed(0)} ms\n`);
}
