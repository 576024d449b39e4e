/**
 * Reading a run directory after (or while) a run: result.json and events.ndjson, zod-checked.
 * Writing result.json when Python could not (`writeCrashResult`), and the SDK's one atomic file writer.
 */
import { randomBytes } from "node:crypto";
import { appendFileSync, existsSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { InputError, ProtocolError } from "./errors.js";
import { type EventOf, RunEvent } from "./events.js";
import { RunResult } from "./result.js";
import type { TaskName } from "./spec/index.js";

/**
 * Refuse a run directory that cannot be one before anything starts: `outDir` naming an existing file, or a
 * path under a file. Throws InputError (the CLI's exit 2) naming the file.
 */
export function checkOutDir(outDir: string): void {
  const abs = resolve(outDir);
  for (let p = abs; ; p = dirname(p)) {
    if (existsSync(p)) {
      if (statSync(p).isDirectory()) return;
      const what = p === abs ? "is an existing file" : `is under the file ${p}`;
      throw new InputError(`--out ${outDir} ${what}; a run directory must be a directory`, abs);
    }
    if (dirname(p) === p) return;
  }
}

/** The run directory's lock file (sdk/lock.ts format), held by the SDK or `python -m oplora run`. */
export const RUN_LOCK = "run.lock";

/** DIR/result.json, or null when there is none yet. */
export function readResult(runDir: string): RunResult | null {
  const path = join(runDir, "result.json");
  if (!existsSync(path)) return null;
  const parsed = RunResult.safeParse(parseJson(readFileSync(path, "utf8"), path));
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new ProtocolError(`${path} does not match RunResult: ${issues}`);
  }
  return parsed.data;
}

/** Every event in DIR/events.ndjson (a run that is still going has the ones so far). */
export function readEvents(runDir: string): RunEvent[] {
  const path = join(runDir, "events.ndjson");
  if (!existsSync(path)) return [];
  const lines = readFileSync(path, "utf8").split("\n");
  const events: RunEvent[] = [];
  for (const [i, line] of lines.entries()) {
    if (!line.trim()) continue;
    const parsed = RunEvent.safeParse(parseJson(line, `${path}:${i + 1}`));
    if (!parsed.success)
      throw new ProtocolError(`${path}:${i + 1}: not a valid event: ${parsed.error.message}`);
    events.push(parsed.data);
  }
  return events;
}

/**
 * The JSON in `path`, or undefined when it is missing, unreadable or not JSON: the one lenient reader of
 * run and sweep files (sweep store, report, run listing), for files whose absence is an answer, not an error.
 */
export function readJsonIfValid<T = unknown>(path: string): T | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as T;
  } catch {
    return undefined;
  }
}

function parseJson(text: string, where: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ProtocolError(`${where}: not valid JSON (truncated?): ${(e as Error).message}`);
  }
}

/**
 * What is wrong with a finished run directory's result.json or events.ndjson (file and problem named), or
 * null when both read back valid. Readers (report, sweep resume) show such a run as corrupt, never reuse it.
 */
export function runDirProblem(runDir: string): string | null {
  try {
    if (!readResult(runDir)) return `${join(runDir, "result.json")}: missing`;
    readEvents(runDir);
    return null;
  } catch (e) {
    if (e instanceof ProtocolError) return e.message;
    throw e;
  }
}

/** Write `text` to `path` through a temporary file and a rename (readers never see half a file). */
export function writeFileAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

export interface CrashResultInput {
  status: "failed" | "cancelled";
  task: TaskName;
  runDir: string;
  /** Why it failed (null for a cancelled run). */
  error: { type: string; message: string; traceback?: string } | null;
  /** When the run started, if no `started` event says it. */
  startedAt: Date;
  /** The events the run emitted: its artifacts, versions and device go into the result. */
  events?: readonly RunEvent[] | undefined;
}

/**
 * result.json for a run whose Python process died before writing one, validated against `RunResult`,
 * written atomically when the run directory exists (`written_by: "sdk"`). Returns the result.
 */
export function writeCrashResult(input: CrashResultInput): RunResult {
  const events = input.events ?? [];
  const started = events.find((e): e is EventOf<"started"> => e.type === "started");
  const startedAt = started ? new Date(started.time * 1000) : input.startedAt;
  const now = new Date();
  const result = RunResult.parse({
    status: input.status,
    task: input.task,
    run_dir: input.runDir,
    metrics: null,
    artifacts: events.flatMap((e) =>
      e.type === "artifact"
        ? [
            {
              kind: e.kind,
              path: e.path,
              ...(e.step !== undefined && { step: e.step }),
              ...(e.label !== undefined && { label: e.label }),
            },
          ]
        : [],
    ),
    error: input.error,
    versions: started?.versions ?? {},
    device:
      events.findLast((e): e is EventOf<"phase"> => e.type === "phase" && e.device != null)?.device ??
      started?.device ??
      null,
    timing: {
      started_at: startedAt.toISOString(),
      finished_at: now.toISOString(),
      wall_s: (now.getTime() - startedAt.getTime()) / 1000,
    },
    written_by: "sdk",
  });
  if (existsSync(input.runDir)) {
    writeFileAtomic(join(input.runDir, "result.json"), `${JSON.stringify(result, null, 2)}\n`);
    appendTerminalEvent(input.runDir, result);
  }
  return result;
}

const TERMINAL = new Set(["completed", "error", "cancelled"]);

/**
 * End DIR/events.ndjson with the `error` / `cancelled` event Python never wrote (it was killed), so a
 * reader of the event log alone sees how the run ended. Nothing when the log already ends in one.
 */
function appendTerminalEvent(runDir: string, result: RunResult): void {
  const path = join(runDir, "events.ndjson");
  const text = existsSync(path) ? readFileSync(path, "utf8") : "";
  let seq = -1;
  let last: string | undefined;
  for (const line of text.split("\n")) {
    try {
      const ev = JSON.parse(line) as { seq?: unknown; type?: unknown };
      if (typeof ev.seq === "number") seq = Math.max(seq, ev.seq);
      last = String(ev.type);
    } catch {
      // a line cut short by the kill: skip it
    }
  }
  if (last !== undefined && TERMINAL.has(last)) return;
  const base = { seq: seq + 1, time: Date.now() / 1000, written_by: "sdk" };
  const event = RunEvent.parse(
    result.status === "cancelled"
      ? { type: "cancelled", ...base, step: null }
      : {
          type: "error",
          ...base,
          error: result.error ?? { type: "ProcessCrashed", message: "the run died" },
        },
  );
  const sep = text && !text.endsWith("\n") ? "\n" : "";
  appendFileSync(path, `${sep}${JSON.stringify(event)}\n`);
}
