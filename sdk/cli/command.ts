/**
 * What a CLI command is: `{name, summary, run(argv)}`, `run` resolving to the exit code.
 * Exit codes: 0 ok, 1 run failed, 2 invalid spec, sweep or arguments, 130 cancelled.
 */
import { readFileSync } from "node:fs";
import { type ParseArgsConfig, parseArgs } from "node:util";
import { CancelledError, InputError, OploraError, SpecInvalidError } from "../errors.js";
import { SweepInvalidError } from "../sweep/errors.js";

export interface Command {
  name: string;
  summary: string;
  run(argv: string[]): Promise<number>;
}

export const EXIT = { ok: 0, failed: 1, invalid: 2, cancelled: 130 } as const;

/** Bad arguments: printed with the command's usage, exit 2. */
export class UsageError extends OploraError {
  override name = "UsageError";
}

type Options = NonNullable<ParseArgsConfig["options"]>;

export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

/** Parse `argv` strictly; `--help` prints `help` and returns undefined. */
export function parseCommandArgs(argv: string[], options: Options, help: string): ParsedArgs | undefined {
  let parsed: ParsedArgs;
  try {
    parsed = parseArgs({
      args: argv,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    }) as ParsedArgs;
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${help}`);
  }
  if (parsed.values.help) {
    process.stdout.write(`${help.trimEnd()}\n`);
    return undefined;
  }
  return parsed;
}

/** Read a JSON spec file; unreadable or not JSON -> UsageError. */
export function readJsonFile(path: string | undefined, what = "SPEC.json"): unknown {
  if (!path) throw new UsageError(`missing ${what}`);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new UsageError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UsageError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Print an error the way the CLI does and return its exit code. */
export function reportError(e: unknown): number {
  const err = e as Error;
  if (
    e instanceof UsageError ||
    e instanceof SpecInvalidError ||
    e instanceof InputError ||
    e instanceof SweepInvalidError
  ) {
    process.stderr.write(`oplora: ${err.message}\n`);
    return EXIT.invalid;
  }
  if (e instanceof CancelledError) {
    process.stderr.write(`oplora: ${err.message}\n`);
    return EXIT.cancelled;
  }
  if (e instanceof OploraError) {
    process.stderr.write(`oplora: ${err.message}\n`);
    const tb = (e as { traceback?: string }).traceback;
    if (tb && process.env.OPLORA_DEBUG) process.stderr.write(`${tb}\n`);
    return EXIT.failed;
  }
  process.stderr.write(`oplora: unexpected error: ${err?.stack ?? String(e)}\n`);
  return EXIT.failed;
}
