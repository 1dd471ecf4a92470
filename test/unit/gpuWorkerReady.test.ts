import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { watchReadyEvents, type WorkerEvent } from '../../cli/gpuWorker';

// `atelier edit --backend diffusers --gpus 0,1` waits for one "ready" line per GPU process on the
// processes' shared stdout. A line split across reads, or two lines glued by an older worker (its
// text and newline were separate writes), must still count every worker.

function ready(worker: string): string {
  return JSON.stringify({ event: 'ready', task_queue: 'gpu-m', worker, model: 'm', pad: 'é'.repeat(40) });
}

async function feed(chunks: (string | Buffer)[], expected: number): Promise<WorkerEvent[]> {
  const stream = new PassThrough();
  const seen: WorkerEvent[] = [];
  const done = watchReadyEvents(stream, expected, (event) => seen.push(event));
  for (const chunk of chunks) {
    stream.write(chunk);
    await new Promise((tick) => setImmediate(tick));
  }
  stream.end();
  await Promise.race([
    done,
    new Promise((_, fail) => setTimeout(() => fail(new Error(`only ${seen.length} of ${expected} ready events`)), 2000)),
  ]);
  return seen;
}

describe('GPU worker ready lines', () => {
  it('counts a line split across chunks, mid-character included', async () => {
    const bytes = Buffer.from(`${ready('h:1:gpu0')}\n${ready('h:1:gpu1')}\n`, 'utf8');
    const cut = bytes.indexOf(Buffer.from('é', 'utf8')) + 1; // inside a two-byte character
    const seen = await feed([bytes.subarray(0, 17), bytes.subarray(17, cut), bytes.subarray(cut)], 2);
    expect(seen.map((e) => e.worker)).toEqual(['h:1:gpu0', 'h:1:gpu1']);
  });

  it('counts two events glued on one line, and ignores log noise around them', async () => {
    const seen = await feed(
      [`loading {50%}...\n${ready('h:1:gpu0 {"}')}${ready('h:2:gpu1')}\n`, '{"broken": \n', `${ready('h:3:gpu2')}\n`],
      3,
    );
    expect(seen.map((e) => e.worker)).toEqual(['h:1:gpu0 {"}', 'h:2:gpu1', 'h:3:gpu2']);
  });

  it('counts a last line that has no newline', async () => {
    const seen = await feed([ready('h:1:gpu0')], 1);
    expect(seen).toHaveLength(1);
  });
});
