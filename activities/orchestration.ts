import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { readFile, rename, rm } from 'node:fs/promises';
import { extname, join } from 'node:path';
import { ApplicationFailure } from '@temporalio/common';
import { stringify } from 'csv-stringify';
import { writeFileAtomic } from '../lib/atomicFile';
import { readCsvDataset, type CsvHeader } from '../lib/dataset/csv';
import { DatasetError } from '../lib/errors';
import { completedEntry, readLedgerEntry, writeLedgerEntry } from '../lib/ledger';
import { PlanWriter, readPlanMeta, readPlanRows, runMetaDir, type PlanRow } from '../lib/plan';
import { parseDatasetWorkflowInput } from '../lib/workflowInput';
import type {
  DatasetRunSummary,
  DatasetWorkflowInput,
  PlanRunResult,
  RecordFailureInput,
  RowRef,
  RowsPage,
} from '../lib/types';

/** Failure types that end the dataset workflow with a message for the user (CLI exit code 1). */
export const RunErrorTypes = {
  dataset: 'DatasetError',
  invalidInput: 'InvalidWorkflowInput',
  outputDirInUse: 'OutputDirInUse',
} as const;

const SUMMARY_CHARS = 80;
const RESULT_COLUMNS = ['output_image', 'status', 'error'] as const;

interface RunOwnership {
  runId: string;
  inputPath: string;
  backend: string;
  model: string;
}

function rowsReader(input: DatasetWorkflowInput, onHeader: (h: CsvHeader) => void): AsyncGenerator<PlanRow> {
  const ext = extname(input.inputPath).toLowerCase();
  if (ext === '.csv') {
    return readCsvDataset(input.inputPath, { instructionKey: input.instructionKey, imageKey: input.imageKey }, onHeader);
  }
  throw new DatasetError(`${input.inputPath}: unsupported input format "${ext || '(none)'}"; this version reads .csv files`);
}

/** An output dir belongs to one run: its outputs and ledger mean nothing to a run with other settings. */
async function claimOutputDir(input: DatasetWorkflowInput): Promise<void> {
  const file = join(runMetaDir(input.outputDir), 'run.json');
  try {
    const owner = JSON.parse(await readFile(file, 'utf8')) as RunOwnership;
    if (owner.runId !== input.runId) {
      throw ApplicationFailure.nonRetryable(
        `output dir ${input.outputDir} already holds run ${owner.runId} (${owner.backend} ${owner.model}, input ${owner.inputPath}); ` +
          `use another --output-dir, or pass --run-id ${owner.runId} to continue that run`,
        RunErrorTypes.outputDirInUse,
      );
    }
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const ownership: RunOwnership = { runId: input.runId, inputPath: input.inputPath, backend: input.backend, model: input.model };
  await writeFileAtomic(file, JSON.stringify(ownership, null, 2));
}

export function createOrchestrationActivities() {
  return {
    /** Validates the input, reads the whole dataset into the plan (streaming), counts rows already done. */
    async planRun(raw: DatasetWorkflowInput): Promise<PlanRunResult> {
      let input: DatasetWorkflowInput;
      try {
        input = parseDatasetWorkflowInput(raw);
      } catch (err) {
        throw ApplicationFailure.nonRetryable((err as Error).message, RunErrorTypes.invalidInput);
      }
      await claimOutputDir(input);
      const writer = new PlanWriter(input.outputDir);
      await writer.open();
      let header: CsvHeader | undefined;
      let alreadyOk = 0;
      try {
        for await (const row of rowsReader(input, (h) => (header = h))) {
          await writer.add(row);
          if (await completedEntry(input.outputDir, row.index)) alreadyOk += 1;
        }
      } catch (err) {
        await writer.abort();
        if (err instanceof DatasetError) throw ApplicationFailure.nonRetryable(err.message, RunErrorTypes.dataset);
        throw err;
      }
      const meta = await writer.commit({
        runId: input.runId,
        inputPath: input.inputPath,
        columns: header!.columns,
        imageKey: header!.imageKey,
        instructionKey: header!.instructionKey,
      });
      return { input, totalRows: meta.totalRows, alreadyOk };
    },

    /** The next rows to dispatch from `cursor`, skipping rows the ledger already holds as done. */
    async nextRowsPage(args: { outputDir: string; cursor: number; limit: number }): Promise<RowsPage> {
      const rows = await readPlanRows(args.outputDir, args.cursor, args.limit);
      const pending: RowRef[] = [];
      for (const row of rows) {
        if (await completedEntry(args.outputDir, row.index)) continue;
        const summary = row.instruction.length > SUMMARY_CHARS ? `${row.instruction.slice(0, SUMMARY_CHARS - 1)}…` : row.instruction;
        pending.push({ position: row.position, index: row.index, summary });
      }
      return { rows: pending, nextCursor: rows.length < args.limit ? null : args.cursor + rows.length };
    },

    /** Records a row's final failure, unless the row already succeeded. */
    async recordRowFailure(input: RecordFailureInput): Promise<void> {
      const existing = await readLedgerEntry(input.outputDir, input.index);
      if (existing?.status === 'ok') return;
      await writeLedgerEntry(input.outputDir, {
        index: input.index,
        position: input.position,
        status: 'failed',
        runId: input.runId,
        model: input.model,
        errorType: input.errorType,
        error: input.error,
        finishedAt: new Date().toISOString(),
      });
    },

    /** Writes results.csv from the plan and the ledger: every input row exactly once. */
    async writeResults(args: { runId: string; outputDir: string }): Promise<DatasetRunSummary> {
      const meta = await readPlanMeta(args.outputDir);
      const resultsCsv = join(args.outputDir, 'results.csv');
      const temp = `${resultsCsv}.tmp-${process.pid}`;
      const inputColumns = meta.columns.filter((c) => !(RESULT_COLUMNS as readonly string[]).includes(c));
      const out = createWriteStream(temp);
      const csv = stringify({ header: true, columns: [...inputColumns, ...RESULT_COLUMNS] });
      csv.pipe(out);
      const counts = { total: 0, ok: 0, failed: 0, pending: 0 };
      const chunk = 1000;
      try {
        for (let start = 0; start < meta.totalRows; start += chunk) {
          for (const row of await readPlanRows(args.outputDir, start, chunk)) {
            const done = await completedEntry(args.outputDir, row.index);
            const entry = done ?? (await readLedgerEntry(args.outputDir, row.index));
            const status = done ? 'ok' : entry?.status === 'failed' ? 'failed' : 'pending';
            counts.total += 1;
            counts[status] += 1;
            const record: Record<string, string> = { ...row.record };
            record.output_image = done?.outputImage ?? '';
            record.status = status;
            record.error = status === 'failed' ? `${entry?.errorType ?? 'Error'}: ${entry?.error ?? ''}` : '';
            if (!csv.write(record)) await once(csv, 'drain');
          }
        }
        csv.end();
        await once(out, 'finish');
        await rename(temp, resultsCsv);
      } catch (err) {
        out.destroy();
        await rm(temp, { force: true });
        throw err;
      }
      return { runId: args.runId, resultsCsv, ...counts };
    },
  };
}

export type OrchestrationActivities = ReturnType<typeof createOrchestrationActivities>;
