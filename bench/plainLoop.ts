// The saturation benchmark's baseline: what a user writes without an orchestrator. A plain
// concurrent loop over a CSV of `image,instruction` rows with the openai SDK, `concurrency` calls
// in flight, each answer decoded and written as <outDir>/<row>.png. No retries, no ledger, no resume.
// Run as its own process so its start-up (imports included) is measured like the CLI's.
//   node dist/bench/plainLoop.js <csv> <outDir> <concurrency>   (OPENAI_API_KEY, OPENAI_BASE_URL)
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import OpenAI, { toFile } from 'openai';

async function main(): Promise<void> {
  const [csv, outDir, concurrencyArg] = process.argv.slice(2);
  if (!csv || !outDir) throw new Error('usage: plainLoop <csv> <outDir> <concurrency>');
  const concurrency = Number(concurrencyArg ?? 16);
  const rows = readFileSync(csv, 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => {
      const comma = line.indexOf(',');
      return { image: join(dirname(csv), line.slice(0, comma)), instruction: line.slice(comma + 1) };
    });
  mkdirSync(outDir, { recursive: true });
  const client = new OpenAI({ maxRetries: 0 });
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < rows.length; i = next++) {
        const row = rows[i]!;
        try {
          const answer = await client.images.edit({
            model: 'gpt-image-2',
            prompt: row.instruction,
            image: await toFile(readFileSync(row.image), 'in.png', { type: 'image/png' }),
          });
          writeFileSync(join(outDir, `${i}.png`), Buffer.from(answer.data?.[0]?.b64_json ?? '', 'base64'));
        } catch {
          failed += 1;
        }
      }
    }),
  );
  process.stdout.write(`${rows.length - failed} ok, ${failed} failed\n`);
  process.exit(failed ? 2 : 0);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
