import type { Command, Option } from 'commander';
import { describe, expect, it } from 'vitest';
import type { CliIO } from '../../cli/io';
import { buildProgram } from '../../cli/main';

// The CLI's option vocabulary, checked over every registered command (cli/main.ts's list): one help
// text per option name, `--rows` wherever rows are chosen, one name for an output folder, and
// examples in every command's --help. Old spellings (--filter-rows, --output-dir) still parse.

const io: CliIO = { out: () => undefined, err: () => undefined, interrupted: new Promise<void>(() => undefined), isTTY: false };

/** A fresh program whose output (help, errors) is collected instead of printed. */
function program(): { program: Command; output: () => string } {
  let text = '';
  const p = buildProgram(io, () => undefined, ['node', 'atelier']);
  const capture = { writeOut: (s: string) => (text += s), writeErr: (s: string) => (text += s) };
  p.configureOutput(capture);
  for (const cmd of p.commands) cmd.configureOutput(capture);
  return { program: p, output: () => text };
}

function command(p: Command, name: string): Command {
  const found = p.commands.find((c) => c.name() === name);
  if (!found) throw new Error(`no command ${name}`);
  return found;
}

const isHidden = (o: Option) => (o as Option & { hidden: boolean }).hidden;

/** Parses options only (no action runs) and returns the values. */
function parse(name: string, args: string[]): Record<string, unknown> {
  const cmd = command(program().program, name);
  cmd.parseOptions(args);
  return cmd.opts();
}

/** Commands that choose rows by position, and those that write a folder. */
const ROW_COMMANDS = ['edit', 'estimate', 'demo', 'retry', 'judge'];
const FOLDER_COMMANDS = ['edit', 'estimate', 'demo', 'export'];

describe('the CLI option vocabulary', () => {
  const { program: p } = program();

  it('registers every command', () => {
    expect(p.commands.map((c) => c.name())).toEqual([
      'edit',
      'estimate',
      'demo',
      'models',
      'status',
      'watch',
      'cancel',
      'pause',
      'resume',
      'list',
      'retry',
      'export',
      'judge',
      'view',
      'server',
      'worker',
      'gpu-worker',
      'standin',
    ]);
  });

  it('gives each option name one help text and one field across all commands', () => {
    const help = new Map<string, Map<string, string[]>>();
    const field = new Map<string, Set<string>>();
    for (const cmd of p.commands) {
      for (const option of cmd.options) {
        const name = option.long!;
        field.set(name, (field.get(name) ?? new Set()).add(option.attributeName()));
        if (isHidden(option) && option.description.startsWith('same as ')) continue;
        const texts = help.get(name) ?? new Map<string, string[]>();
        texts.set(option.description, [...(texts.get(option.description) ?? []), cmd.name()]);
        help.set(name, texts);
      }
    }
    const twoTexts = [...help].filter(([, texts]) => texts.size > 1).map(([name, texts]) => ({ name, texts: Object.fromEntries(texts) }));
    expect(twoTexts).toEqual([]);
    const twoFields = [...field].filter(([, keys]) => keys.size > 1).map(([name, keys]) => `${name}: ${[...keys].join(', ')}`);
    expect(twoFields).toEqual([]);
    // --state-dir, declared once, is on every command that finds runs or a server.
    for (const name of [
      'edit',
      'estimate',
      'demo',
      'server',
      'status',
      'watch',
      'cancel',
      'pause',
      'resume',
      'list',
      'retry',
      'export',
      'judge',
      'view',
    ])
      expect(
        command(p, name).options.some((o) => o.long === '--state-dir'),
        name,
      ).toBe(true);
  });

  /**
   * One visible flag for one thing: on each of `commands` the only visible flag of `family` is
   * `canonical`, and it and its hidden older spelling `alias` fill `field`; no other command shows a
   * flag of `family` or fills `field`.
   */
  function expectOneSpelling(spec: {
    canonical: string;
    alias: string;
    field: string;
    family: RegExp;
    commands: string[];
    values: [string, string];
  }) {
    for (const cmd of p.commands) {
      const expected = spec.commands.includes(cmd.name());
      const visible = cmd.options.filter((o) => !isHidden(o)).map((o) => o.long!);
      expect(
        visible.filter((flag) => spec.family.test(flag)),
        cmd.name(),
      ).toEqual(expected ? [spec.canonical] : []);
      if (!expected)
        expect(
          cmd.options.map((o) => o.attributeName()),
          cmd.name(),
        ).not.toContain(spec.field);
    }
    const [a, b] = spec.values;
    for (const name of spec.commands) {
      expect(parse(name, [spec.canonical, a])[spec.field], name).toBe(a);
      expect(parse(name, [spec.alias, b])[spec.field], name).toBe(b);
    }
  }

  it('chooses rows with --rows everywhere (--filter-rows still works, hidden)', () => {
    expectOneSpelling({
      canonical: '--rows',
      alias: '--filter-rows',
      field: 'rows',
      family: /rows/,
      commands: ROW_COMMANDS,
      values: ['0:3,7', '2:'],
    });
  });

  it('names an output folder --out on every command that writes one (--output-dir still works, hidden)', () => {
    expectOneSpelling({
      canonical: '--out',
      alias: '--output-dir',
      field: 'outputDir',
      family: /^--out(put)?(-dir|-folder)?$/,
      commands: FOLDER_COMMANDS,
      values: ['a', 'b'],
    });
  });

  it('lists provider parameters under their provider in edit --help', () => {
    const { program: q, output } = program();
    command(q, 'edit').outputHelp();
    const help = output();
    const section = (heading: string) => help.slice(help.indexOf(heading)).split('\n\n')[0]!;
    expect(section('OpenAI parameters:')).toMatch(/--background[\s\S]*--moderation/);
    expect(section('Gemini / OpenRouter parameters:')).toMatch(/--aspect-ratio[\s\S]*--image-size/);
    expect(section('Diffusion parameters')).toMatch(/--seed[\s\S]*--negative-prompt/);
    expect(help).not.toMatch(/--filter-rows|--output-dir|--batch-poll-ms/);
  });

  it('shows examples in every command help', () => {
    for (const cmd of p.commands) {
      const { program: q, output } = program();
      command(q, cmd.name()).outputHelp();
      expect(output(), cmd.name()).toMatch(/\nExamples:\n {2}# .+\n {2}\$ (\S+=\S+ )*atelier /);
    }
  });

  it('says a missing --model in one line, with the old --output-dir spelling too', async () => {
    for (const out of ['--out', '--output-dir']) {
      const { program: q, output } = program();
      await expect(q.parseAsync(['node', 'atelier', 'edit', '--input', 'x.csv', out, 'o'])).rejects.toMatchObject({
        code: 'commander.missingMandatoryOptionValue',
      });
      expect(output()).toMatch(/^error: required option '--model <name>' not specified\n\(add --help for the options\)\n$/);
    }
  });

  it('checks a --rows spec by the name --rows, whichever spelling was used', async () => {
    const { checkedRows } = await import('../../cli/options');
    expect(() => checkedRows('3:1')).toThrow(/^--rows "3:1"/);
    expect(checkedRows('0:3,7')).toBe('0:3,7');
    expect(checkedRows(undefined)).toBeUndefined();
  });
});
