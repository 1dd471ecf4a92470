// The OpenAI stand-in in a process of its own, so a benchmark that reads its own CPU time counts
// the workers' work and not the stand-in's (which decodes and inverts every image it is sent).
// Prints `ready <baseURL>` on stdout, then serves until stdin closes or SIGTERM.
//   node dist/bench/standinProcess.js [latencyMs=0]
import { startOpenAIStandin } from '../activities/providers/openai/standin';

async function main(): Promise<void> {
  const standin = await startOpenAIStandin({ latencyMs: Number(process.argv[2] ?? 0) });
  process.stdout.write(`ready ${standin.baseURL}\n`);
  const stop = () => void standin.close().then(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.stdin.once('close', stop);
  process.stdin.resume();
}

void main();
