import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { cardConfigs, parseHubLocation, pickHubFiles } from '../../lib/dataset/hub';
import { cardFeatures, cardMetadata, mergeCard, parseHubRepoId } from '../../lib/export/hubPush';

// The card rules both ways, without a Hub: which files a card's `configs` and a path select
// (hf:// input), and the card `--push-to-hub` writes. The e2e tests (test/export/hub*.e2e.test.ts)
// check the same against `datasets` itself.

const FILES = [
  'README.md',
  'data/train-00000-of-00002.parquet',
  'data/train-00001-of-00002.parquet',
  'data/test-00000-of-00001.parquet',
  'edits/part-0.parquet',
  'extra/nested/more.parquet',
];

const CARD = `---
license: mit
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: test
    path: "data/test-*"
- config_name: extra
  data_dir: extra
---
# Text
`;

const pick = (path: string, files = FILES, card = CARD) => {
  const input = `hf://datasets/acme/x${path ? `/${path}` : ''}`;
  return pickHubFiles(files, cardConfigs(card, 'README.md'), parseHubLocation(input), input, 'acme/x@main').files;
};

describe('hf:// file selection', () => {
  it("follows the card's configs: default train, a split, a config, <config>/<split>, a folder, a file", () => {
    expect(pick('')).toEqual(['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet']);
    expect(pick('test')).toEqual(['data/test-00000-of-00001.parquet']);
    expect(pick('default/test')).toEqual(['data/test-00000-of-00001.parquet']);
    // data_dir without data_files: every file under it (`**`), as the train split.
    expect(pick('extra')).toEqual(['extra/nested/more.parquet']);
    expect(pick('edits')).toEqual(['edits/part-0.parquet']);
    expect(pick('data/test-00000-of-00001.parquet')).toEqual(['data/test-00000-of-00001.parquet']);
  });

  it('without configs, splits come from file and folder names', () => {
    expect(pick('', FILES, '# no header\n')).toEqual(['data/train-00000-of-00002.parquet', 'data/train-00001-of-00002.parquet']);
    expect(pick('test', ['train/a.parquet', 'test/b.parquet'], '')).toEqual(['test/b.parquet']);
  });

  it('names what does not exist, and what does', () => {
    expect(() => pick('validation')).toThrow(
      /hf:\/\/datasets\/acme\/x\/validation: dataset acme\/x@main has no config, split, folder or Parquet file "validation" \(configs: default, extra; splits: train, test\)/,
    );
    expect(() => pick('default/dev')).toThrow(/config "default" of dataset acme\/x@main has no split "dev"; its splits: train, test/);
    const csv = '---\nconfigs:\n- config_name: default\n  data_files: data/*.csv\n---\n';
    expect(() => pick('', ['data/a.csv'], csv)).toThrow(/holds data\/a\.csv; only Parquet data files are read from the Hub/);
    expect(() => cardConfigs('---\nconfigs: [\n---\n', 'README.md')).toThrow(/README\.md: the YAML header of README\.md cannot be read/);
  });
});

describe('the card --push-to-hub writes', () => {
  const columns = [
    { name: 'index', kind: 'int' },
    { name: 'input_image', kind: 'image' },
    { name: 'output_images', kind: 'imageList' },
    { name: 'instructions', kind: 'stringList' },
    { name: 'cost_usd', kind: 'double' },
  ] as const;

  it("writes datasets' YAML features, the split and the config", () => {
    expect(cardFeatures(columns)).toEqual([
      { name: 'index', dtype: 'int64' },
      { name: 'input_image', dtype: 'image' },
      { name: 'output_images', list: 'image' },
      { name: 'instructions', list: 'string' },
      { name: 'cost_usd', dtype: 'float64' },
    ]);
    const card = mergeCard(undefined, cardMetadata(columns, 7, 1234), '# acme/out\n');
    const yaml = parse(/^---\n([\s\S]*?)\n---\n/.exec(card)![1]!) as Record<string, unknown>;
    expect(yaml.configs).toEqual([{ config_name: 'default', data_files: [{ split: 'train', path: 'data/train-*' }] }]);
    expect((yaml.dataset_info as { splits: unknown }).splits).toEqual([{ name: 'train', num_bytes: 1234, num_examples: 7 }]);
    expect(card.endsWith('\n# acme/out\n')).toBe(true);
  });

  it("keeps an existing card's text and other keys, replacing only dataset_info and configs", () => {
    const before = '---\nlicense: mit\nconfigs:\n- config_name: old\n  data_files: old/*\ntags:\n- edits\n---\n# Notes\n\nKept.\n';
    const after = mergeCard(before, cardMetadata(columns, 1, 1), 'unused');
    const yaml = parse(/^---\n([\s\S]*?)\n---\n/.exec(after)![1]!) as Record<string, unknown>;
    expect(yaml.license).toBe('mit');
    expect(yaml.tags).toEqual(['edits']);
    expect(yaml.configs).toEqual([{ config_name: 'default', data_files: [{ split: 'train', path: 'data/train-*' }] }]);
    expect(after.endsWith('# Notes\n\nKept.\n')).toBe(true);
    // A card without a header keeps its text under the new one.
    expect(mergeCard('# Only text\n', cardMetadata(columns, 1, 1), 'unused')).toMatch(/^---\n[\s\S]*\n---\n\n# Only text\n$/);
  });

  it('takes <org>/<name> only', () => {
    expect(parseHubRepoId('acme/out')).toBe('acme/out');
    expect(parseHubRepoId('hf://datasets/acme/out')).toBe('acme/out');
    for (const bad of ['out', 'acme/out/x', 'acme/..', '../x']) expect(() => parseHubRepoId(bad)).toThrow(/expected <org>\/<name>/);
  });
});
