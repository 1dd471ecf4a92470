// Start-up tracing: with ATELIER_TRACE_STARTUP set, each phase of a command's start prints its time
// since the process began (node's own boot and the imports included), so the road to the first
// model call can be measured where it runs (bench/saturation.ts reads these lines).

const enabled = Boolean(process.env.ATELIER_TRACE_STARTUP);

export function traceStartup(phase: string): void {
  if (enabled) process.stderr.write(`[startup] ${phase} ${performance.now().toFixed(0)} ms\n`);
}
