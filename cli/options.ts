import { type Command, InvalidArgumentError, Option } from 'commander';
import { UsageError } from '../lib/shared/errors';
import { parseFilterRows } from '../lib/shared/filterRows';

// Typed option declarations. An option is declared once, as an `Opt` (flags, help text, parser,
// default, help group, older spellings); commander's registration and the TypeScript type of a
// command's options both derive from the same declarations, so a handler's options type cannot
// drift from what the command line accepts. Shared groups live in ./optionGroups.ts; options only
// one command takes are declared next to its handler (cli/<command>.ts, `register<Command>`).

/** Turns an option's text into its value; `flag` is the option's primary spelling, for the message. */
export type Parser<T> = (value: string, flag: string) => T;

interface OptData<T> {
  readonly flags: string;
  readonly help: string;
  readonly parse?: Parser<T> | undefined;
  readonly defaultValue?: T | undefined;
  readonly required?: boolean;
  readonly choices?: readonly string[] | undefined;
  readonly hidden?: boolean;
  /** Older spellings (long flags), still accepted, not listed in --help. */
  readonly aliases?: readonly string[];
  /** Heading of the --help section it is listed under (commander's help groups). */
  readonly group?: string | undefined;
}

/**
 * One option. `P` says whether the value is always there after parsing (a default or a required
 * option) or may be absent; `T` is its type. Instances are immutable: `.default()`, `.required()`
 * and the others return a new declaration, so a shared one can be specialised per command.
 */
export class Opt<T, P extends boolean = false> {
  /** Type-level only (never set): the value type and its presence, for `OptionsOf`. */
  declare readonly valueType: T;
  declare readonly present: P;

  private constructor(readonly data: OptData<T>) {}

  /** An option taking a text value: `--size <WxH>`. */
  static text(flags: string, help: string): Opt<string> {
    return new Opt<string>({ flags, help });
  }

  /** An option whose text is parsed (and checked) into a value. */
  static parsed<T>(flags: string, help: string, parse: Parser<T>): Opt<T> {
    return new Opt<T>({ flags, help, parse });
  }

  /**
   * A switch: true when given. Typed as optional (absent = off) so that option objects built in code
   * (tests, `demo`) need not list every switch; on the command line it defaults to false.
   */
  static flag(flags: string, help: string): Opt<boolean> {
    return new Opt<boolean>({ flags, help, defaultValue: false });
  }

  private with<U = T, Q extends boolean = P>(change: Partial<OptData<U>>): Opt<U, Q> {
    return new Opt<U, Q>({ ...(this.data as unknown as OptData<U>), ...change });
  }

  default(value: T): Opt<T, true> {
    return this.with<T, true>({ defaultValue: value });
  }

  required(): Opt<T, true> {
    return this.with<T, true>({ required: true });
  }

  /** Neither required nor defaulted (a command that fills the value in itself, as `demo` does). */
  optional(): Opt<T, false> {
    return this.with<T, false>({ required: false, defaultValue: undefined });
  }

  choices(values: readonly string[]): Opt<T, P> {
    return this.with({ choices: values });
  }

  /** Accepted but not listed in --help (test knobs). */
  hidden(): Opt<T, P> {
    return this.with({ hidden: true });
  }

  /** Older spellings that still work (hidden from --help): `.alias('--filter-rows')`. */
  alias(...longFlags: string[]): Opt<T, P> {
    return this.with({ aliases: [...(this.data.aliases ?? []), ...longFlags] });
  }

  group(heading: string): Opt<T, P> {
    return this.with({ group: heading });
  }

  /** The primary long flag, e.g. `--rows`. */
  get long(): string {
    return this.data.flags.split(/[ ,]+/).find((f) => f.startsWith('--'))!;
  }

  /** commander options: the primary one, then one hidden option per alias, all writing `key`. */
  toOptions(key: string): Option[] {
    const { flags, help, parse, defaultValue, required, choices, hidden, aliases = [], group } = this.data;
    const primary = this.long;
    const argument = flags.slice(flags.indexOf(primary) + primary.length);
    const make = (spelling: string, description: string) => {
      const option = new KeyedOption(spelling, description, key);
      if (parse) option.argParser((value: string) => parse(value, primary));
      if (choices) option.choices(choices);
      // Aliases too: commander orders the help's sections by the first option of each, hidden or not.
      if (group) option.helpGroup(group);
      return option;
    };
    const main = make(flags, help);
    if (defaultValue !== undefined) main.default(defaultValue);
    if (required) main.makeOptionMandatory();
    if (hidden) main.hideHelp();
    return [main, ...aliases.map((alias) => make(`${alias}${argument}`, `same as ${primary}`).hideHelp())];
  }
}

/**
 * A commander option that stores its value under a name of our choosing rather than the camel-cased
 * flag, so an older spelling (`--filter-rows`) and its replacement (`--rows`) fill the same field, and a
 * field keeps its name in code (`outputDir`) whatever the flag is called (`--out`).
 */
class KeyedOption extends Option {
  constructor(
    flags: string,
    description: string,
    private readonly key: string,
  ) {
    super(flags, description);
  }

  override attributeName(): string {
    return this.key;
  }
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- any T: a group mixes value types
export type OptionGroup = Record<string, Opt<any, boolean>>;

type PresentKeys<G extends OptionGroup> = { [K in keyof G]: G[K] extends Opt<unknown, true> ? K : never }[keyof G];
type Simplify<T> = { [K in keyof T]: T[K] } & {};

/** The options object a command's action receives, derived from its declarations. */
export type OptionsOf<G extends OptionGroup> = Simplify<
  { [K in PresentKeys<G>]: G[K]['valueType'] } & { [K in Exclude<keyof G, PresentKeys<G>>]?: G[K]['valueType'] }
>;

/** Every option of a group, under one --help heading (a declaration's own heading wins). */
export function inGroup<G extends OptionGroup>(heading: string, options: G): G {
  return Object.fromEntries(Object.entries(options).map(([key, opt]) => [key, opt.data.group ? opt : opt.group(heading)])) as G;
}

/** Registers the declarations on a command (in their order) and returns it. */
export function addOptions(cmd: Command, options: OptionGroup): Command {
  for (const [key, opt] of Object.entries(options)) for (const option of opt.toOptions(key)) cmd.addOption(option);
  return cmd;
}

/** `Examples:` after a command's --help: `[command line, what it does]` pairs. */
export function addExamples(cmd: Command, examples: ReadonlyArray<readonly [string, string]>): Command {
  const lines = examples.flatMap(([line, what]) => [`  # ${what}`, `  $ ${line}`]);
  return cmd.addHelpText('after', `\nExamples:\n${lines.join('\n')}\n`);
}

// Parsers: each names the option in its message (commander prefixes "option '--x <n>' argument 'v' is invalid.").

export const positiveInt: Parser<number> = (value, flag) => {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new InvalidArgumentError(`${flag} must be a positive integer`);
  return Number(value);
};

export const nonNegativeInt: Parser<number> = (value, flag) => {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError(`${flag} must be a non-negative integer`);
  return Number(value);
};

export const percentInt: Parser<number> = (value, flag) => {
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 100)
    throw new InvalidArgumentError(`${flag} must be an integer from 1 to 100`);
  return Number(value);
};

export const nonNegativeNumber: Parser<number> = (value, flag) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${flag} must be a non-negative number`);
  return n;
};

export const positiveNumber: Parser<number> = (value, flag) => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || n <= 0) throw new InvalidArgumentError(`${flag} must be a positive number`);
  return n;
};

/**
 * A `--rows` spec, checked (a UsageError naming `--rows`); undefined stays undefined. Checked where
 * the command runs rather than when parsed, so code that builds options itself gets the same check.
 */
export function checkedRows<T extends string | undefined>(rows: T): T {
  if (rows === undefined) return rows;
  try {
    parseFilterRows(rows);
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  return rows;
}
