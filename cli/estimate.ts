import { capabilities, checkParams, estimateCostUsd } from '../activities/providers/models';
import { BATCH_PRICE_FACTOR } from '../lib/shared/batch';
import { DatasetError, UsageError } from '../lib/shared/errors';
import { readRunDataset } from '../lib/dataset';
import { isHubLocation } from '../lib/dataset/hub';
import { pinnedInputCommit } from '../lib/run/plan';
import { rowSelector } from '../lib/shared/filterRows';
import { ledgerReader } from '../lib/run/ledger';
import { defaultOutputs, namedOutputs } from '../lib/run/outputNames';
import { rowDigests, type rowDigest, type RowDigests } from '../lib/run/rowDigest';
import { S3InputListing } from '../lib/dataset/inputIdentity';
import type { DatasetWorkflowInput } from '../lib/shared/types';
import { buildWorkflowInput, checkModelChoice, type EditOptions } from './edit';
import { ExitCodes, type CliIO, type CommandContext } from './io';
import { addExamples, addOptions } from './options';
import { RUN_OPTIONS } from './optionGroups';
import type { Command } from 'commander';

// `atelier estimate` (and `atelier edit --dry-run`): reads the dataset as a run would, without a
// server, a worker or any provider call, and prints the rows, the model calls and the estimated
// cost of what is left to do. Rows the output dir's ledger holds as done are not counted again.

export interface Estimate {
  rows: number;
  selected: number;
  alreadyOk: number;
  /** Rows done before for another request (parameters, model, instruction or image changed): run again. */
  changed: number;
  /** Rows left to run. */
  toRun: number;
  /** Model calls (a multi-turn row makes one per turn; models that return one image per call, one per image). */
  calls: number;
  /** Prompt-enhancer calls (one per instruction), when --prompt-enhance is on. */
  enhanceCalls: number;
  outputImages: number;
  /** Rows without input images (text-to-image). */
  generateRows: number;
  /** Most input images in one row to run. */
  maxInputImages: number;
  /** Rows with more input images than the model takes: they will fail without a call. */
  tooManyInputs: number;
  /** USD, or undefined when the model has no published per-image price here. */
  costUsd: number | undefined;
  /** What the cost leaves out or assumes. */
  costNote: string;
}

type EstimateRow = Parameters<typeof rowDigest>[0] & { index: number; record: Record<string, unknown> };

/**
 * The digest planning would give the row (activities/orchestration.ts), or undefined (compared by
 * the ledger's status alone) where it cannot be known without a run: embedded images are digested
 * by their stored copy, which only a run makes.
 */
async function estimateDigest(
  input: DatasetWorkflowInput,
  row: Omit<EstimateRow, 'outputs'>,
  s3Inputs: S3InputListing,
): Promise<RowDigests | undefined> {
  if (row.images.some((r) => r.kind === 'blob') || row.mask?.kind === 'blob') return undefined;
  const count = row.turns.length > 1 ? row.turns.length : input.numImages;
  let outputs = defaultOutputs(row.index, count);
  if (input.outputNameColumn) {
    const raw = row.record[input.outputNameColumn];
    const named = namedOutputs(raw === undefined || raw === null ? '' : String(raw), count);
    if ('error' in named) return undefined;
    outputs = named;
  }
  return rowDigests({ ...row, outputs }, input, s3Inputs);
}

export async function estimateRun(input: DatasetWorkflowInput): Promise<Estimate> {
  const selected = rowSelector(input.filterRows);
  const s3Inputs = new S3InputListing();
  const api = input.backend !== 'diffusers';
  const caps = api ? capabilities(input.backend as Exclude<typeof input.backend, 'diffusers'>, input.model) : undefined;
  const perCall = caps ? caps.maxImagesPerCall : input.numImages;
  let stateOf: Awaited<ReturnType<typeof ledgerReader>> | undefined;
  try {
    stateOf = await ledgerReader(input.outputDir);
  } catch {
    stateOf = undefined; // no output dir yet: nothing done
  }
  const e: Estimate = {
    rows: 0,
    selected: 0,
    alreadyOk: 0,
    changed: 0,
    toRun: 0,
    calls: 0,
    enhanceCalls: 0,
    outputImages: 0,
    generateRows: 0,
    maxInputImages: 0,
    tooManyInputs: 0,
    costUsd: 0,
    costNote: '',
  };
  // --batch: multi-turn rows cannot go through a batch (direct at the standard price, or refused).
  let multiTurnRows = 0;
  let multiTurnImages = 0;
  try {
    // Counting needs no copy of embedded images: nothing is stored before a run.
    // An hf:// input is counted at the commit the run's plan pinned, as planning will read it.
    const pinned = isHubLocation(input.inputPath)
      ? await pinnedInputCommit(input.outputDir, input.inputPath).catch(() => undefined)
      : undefined;
    const rows = readRunDataset(
      input,
      async () => ({ kind: 'blob', source: '(embedded)' }),
      () => undefined,
      { repoBytes: 0, bytesRead: 0, requests: 0, ...(pinned ? { pinned } : {}) },
    );
    for await (const row of rows) {
      e.rows += 1;
      if (!selected(row.position)) continue;
      e.selected += 1;
      // Done means done for what the row asks now: the row's digest (settings, instruction, inputs,
      // output names) as planning computes it, so a parameter change counts the calls it will make.
      if (stateOf) {
        const digests = await estimateDigest(input, row, s3Inputs);
        const state = await stateOf({ index: row.index, digest: digests?.digest });
        // An entry from an earlier release (S3 inputs digested by name) is adopted by planning, not redone.
        if (state.status === 'ok' || (state.status === 'changed' && state.entry.digest === digests?.legacyDigest)) {
          e.alreadyOk += 1;
          continue;
        }
        if (state.status === 'changed') e.changed += 1;
      }
      e.maxInputImages = Math.max(e.maxInputImages, row.images.length);
      if (caps && row.images.length > caps.maxInputImages) {
        e.tooManyInputs += 1;
        continue;
      }
      e.toRun += 1;
      const images = row.turns.length > 1 ? row.turns.length : input.numImages;
      e.calls += row.turns.length > 1 ? row.turns.length : Math.ceil(input.numImages / Math.max(1, perCall));
      e.outputImages += images;
      if (row.turns.length > 1) {
        multiTurnRows += 1;
        multiTurnImages += images;
      }
      if (row.images.length === 0) e.generateRows += 1;
      if (input.promptEnhance) e.enhanceCalls += row.turns.length;
    }
  } catch (err) {
    if (err instanceof DatasetError) throw new UsageError(err.message);
    throw err;
  }
  if (!api) {
    e.costUsd = undefined;
    e.costNote = 'local GPU model: no per-call price';
  } else {
    const backend = input.backend as Exclude<typeof input.backend, 'diffusers'>;
    const price = capabilities(backend, input.model).price;
    e.costUsd = estimateCostUsd(backend, input.model, input.params, undefined, e.outputImages);
    if (price.free) e.costNote = 'free quota';
    else if (price.fromUsage) e.costNote = "OpenRouter states each call's cost in its answer only";
    else if (e.costUsd === undefined) e.costNote = `no published per-image price for ${input.model}`;
    else e.costNote = 'output images at the per-image price; input image tokens of edits are extra';
    // The estimate does not undercount: a quality it has no price for (auto: the provider picks) is
    // priced as high; say so rather than print a number that looks like auto's.
    if (price.perImage && !price.free && (!input.params.quality || !price.perImage[input.params.quality]) && price.perImage.high)
      e.costNote += `; quality ${input.params.quality ?? 'auto (the default)'} priced as high (the provider picks the quality: the cost can be lower)`;
    if (input.promptEnhance && e.enhanceCalls) e.costNote += '; prompt-enhancer calls not included';
    if (input.batch && e.costUsd !== undefined) {
      const direct = input.batch.fallback === 'direct' ? multiTurnImages : 0;
      const batched = estimateCostUsd(backend, input.model, input.params, undefined, e.outputImages - multiTurnImages);
      const standard = estimateCostUsd(backend, input.model, input.params, undefined, direct);
      e.costUsd =
        batched === undefined || standard === undefined ? undefined : Math.round((batched * BATCH_PRICE_FACTOR + standard) * 1e6) / 1e6;
      e.costNote += `; --batch: half price${multiTurnRows ? `, except ${multiTurnRows} multi-turn row${multiTurnRows > 1 ? 's' : ''} (${input.batch.fallback === 'direct' ? 'direct, standard price' : 'refused'})` : ''}`;
    }
  }
  return e;
}

export function describeEstimate(input: DatasetWorkflowInput, e: Estimate): string[] {
  const done = `${e.alreadyOk ? `, ${e.alreadyOk} already done` : ''}${e.changed ? `, ${e.changed} done before for another request (run again)` : ''}`;
  const selected = e.selected !== e.rows ? `, ${e.selected} selected` : '';
  return [
    `${input.backend} ${input.model}: ${input.inputPath}`,
    `rows: ${e.rows}${selected}${done}; to run: ${e.toRun}${e.generateRows ? ` (${e.generateRows} text-to-image)` : ''}${e.tooManyInputs ? `; ${e.tooManyInputs} with more input images than ${input.model} takes (they fail without a call)` : ''}`,
    `model calls: ${e.calls}${e.enhanceCalls ? ` (+ ${e.enhanceCalls} prompt-enhancer calls)` : ''}  output images: ${e.outputImages}  (first attempts; retries add calls)`,
    `estimated cost: ${e.costUsd === undefined ? 'unknown' : `$${e.costUsd.toFixed(4)}`} (${e.costNote})`,
  ];
}

/** `atelier estimate` / `edit --dry-run`: exit 0 after printing; nothing is started or spent. */
export async function runEstimate(options: EditOptions, io: CliIO): Promise<number> {
  const input = buildWorkflowInput(options);
  for (const warning of checkModelChoice(input)) io.err(`warning: ${warning}`);
  const e = await estimateRun(input);
  if (input.backend !== 'diffusers' && e.maxInputImages > 0) {
    // Advice the table knows (Gemini 2.5 Flash Image "works best with up to 3 images").
    const advice = checkParams(input.backend, input.model, {}, { inputImages: e.maxInputImages }).filter((p) => /works best/.test(p));
    for (const warning of advice) io.err(`warning: ${warning}`);
  }
  for (const line of describeEstimate(input, e)) io.out(line);
  if (input.maxCostUsd !== undefined && e.costUsd !== undefined && e.costUsd > input.maxCostUsd && e.toRun > 0) {
    const rows = Math.ceil(input.maxCostUsd / (e.costUsd / e.toRun));
    io.out(`budget (--max-cost): $${input.maxCostUsd}, below the estimate: the run will pause after about ${rows} of ${e.toRun} rows`);
  }
  io.err('nothing was started or spent (dry run)');
  return ExitCodes.ok;
}

/** `atelier estimate`: `edit`'s options, nothing started. */
export function registerEstimate(program: Command, { io, setExit }: CommandContext): void {
  const cmd = program
    .command('estimate')
    .description('rows, model calls and estimated cost of an edit run, before anything is started or spent');
  addOptions(cmd, RUN_OPTIONS).action(async (opts: EditOptions) => setExit(await runEstimate(opts, io)));
  addExamples(cmd, [
    ['atelier estimate --input edits.csv --out out --model gpt-image-2 --quality medium', 'what the whole dataset would cost'],
    ['atelier estimate --input edits.csv --out out --model gpt-image-2 --rows 0:100 --batch', 'the first 100 rows through the batch API'],
  ]);
}
