import { createReadStream } from 'node:fs';
import { basename } from 'node:path';
import { createInterface } from 'node:readline';
import { IMAGE_COLUMN_CANDIDATES } from '../shared/constants';
import { DatasetError } from '../shared/errors';
import { IndexTracker, maskRef, parseImageCell, toImageRef, type DatasetHeader, type DatasetReadOptions, type DatasetRow } from './common';

// DataFlow-style JSONL: {"images": "a.png" | ["a.png", "b.png"], "conversations": [{"role": "user",
// "content": "..."}, ...]}. Every user turn is one instruction; several make a multi-turn row, each
// turn editing the previous turn's output. ShareGPT's {"from": "human", "value": ...} is read too.
// A row without a conversation takes its instruction from --instruction-key.

const DEFAULT_IMAGE_KEYS = ['images', ...IMAGE_COLUMN_CANDIDATES];

function textOf(content: unknown): string | undefined {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    // OpenAI-style content parts: keep the text parts.
    const texts = content.flatMap((part) =>
      part && typeof part === 'object' && typeof (part as { text?: unknown }).text === 'string' ? [(part as { text: string }).text] : [],
    );
    return texts.length > 0 ? texts.join('\n') : undefined;
  }
  return undefined;
}

function userTurns(conversation: unknown, where: string, key: string): string[] {
  if (!Array.isArray(conversation)) throw new DatasetError(`${where}: "${key}" must be a list of messages`);
  const turns: string[] = [];
  conversation.forEach((message, i) => {
    if (!message || typeof message !== 'object') throw new DatasetError(`${where}: "${key}"[${i}] is not a message object`);
    const m = message as Record<string, unknown>;
    const role = String(m.role ?? m.from ?? '').toLowerCase();
    if (role !== 'user' && role !== 'human') return; // assistant turns are outputs, not instructions
    const text = textOf(m.content ?? m.value);
    if (text === undefined) throw new DatasetError(`${where}: "${key}"[${i}] has no text content`);
    turns.push(text.replace(/<image>/g, '').trim());
  });
  return turns;
}

function imagesOf(value: unknown, where: string, key: string, file: string, options: DatasetReadOptions) {
  if (value === undefined || value === null) return [];
  const cellWhere = `${where}, "${key}"`;
  if (typeof value === 'string') return parseImageCell(value, cellWhere).map((v) => toImageRef(v, file, options, cellWhere));
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) {
    return value.filter((v) => v.trim() !== '').map((v) => toImageRef(v.trim(), file, options, cellWhere));
  }
  throw new DatasetError(`${where}: "${key}" must be an image path/URL or a list of them`);
}

export async function* readJsonlDataset(
  file: string,
  options: DatasetReadOptions,
  onHeader?: (header: DatasetHeader) => void,
): AsyncGenerator<DatasetRow> {
  const conversationKey = options.conversationKey ?? 'conversations';
  const indexes = new IndexTracker();
  const name = basename(file);
  const columns = new Set<string>();
  let imageKeySeen = false;
  let position = 0;
  let lineNo = 0;
  const lines = createInterface({ input: createReadStream(file), crlfDelay: Infinity });
  try {
    for await (const line of lines) {
      lineNo += 1;
      if (line.trim() === '') continue;
      const where = `${file}: line ${lineNo}`;
      let record: unknown;
      try {
        record = JSON.parse(line);
      } catch (err) {
        throw new DatasetError(`${where}: invalid JSON (${(err as Error).message})`);
      }
      if (!record || typeof record !== 'object' || Array.isArray(record))
        throw new DatasetError(`${where}: each line must be a JSON object`);
      const rec = record as Record<string, unknown>;
      Object.keys(rec).forEach((k) => columns.add(k));

      let turns: string[];
      if (rec[conversationKey] !== undefined) {
        turns = userTurns(rec[conversationKey], where, conversationKey);
        if (turns.length === 0) throw new DatasetError(`${where}: "${conversationKey}" has no user message`);
      } else if (typeof rec[options.instructionKey] === 'string') {
        turns = [(rec[options.instructionKey] as string).trim()];
      } else {
        throw new DatasetError(
          `${where}: no "${conversationKey}" list and no "${options.instructionKey}" string (see --conversation-key, --instruction-key)`,
        );
      }
      const imageKey = options.imageKey ?? DEFAULT_IMAGE_KEYS.find((k) => rec[k] !== undefined);
      if (imageKey !== undefined && rec[imageKey] !== undefined) imageKeySeen = true;
      const images = imageKey ? imagesOf(rec[imageKey], where, imageKey, file, options) : [];
      const index = indexes.take(rec.index, position, where);
      const mask = options.maskKey ? maskRef(rec[options.maskKey], `${where}, "${options.maskKey}"`, file, options) : undefined;
      yield { position, index, where: `${name} line ${lineNo}`, turns, images, ...(mask ? { mask } : {}), record: rec };
      position += 1;
    }
  } catch (err) {
    if (err instanceof DatasetError) throw err;
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') throw new DatasetError(`input file not found: ${file}`);
    throw new DatasetError(`${file}: ${e.message}`);
  }
  if (position === 0) throw new DatasetError(`${file}: no data rows`);
  if (options.imageKey && !imageKeySeen) {
    throw new DatasetError(`${file}: no row has the "${options.imageKey}" key (--image-key); keys seen: ${[...columns].join(', ')}`);
  }
  onHeader?.({ columns: [...columns], imageKey: options.imageKey, instructionKey: options.instructionKey });
}
