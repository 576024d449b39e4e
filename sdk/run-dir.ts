/**
 * Reading a run directory after (or while) a run: result.json and events.ndjson, zod-checked.
 * Writing result.json when Python could not (`writeCrashResult`), and the SDK's one atomic file writer.
 */
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ProtocolError } from "./errors.js";
import { type EventOf, RunEvent } from "./events.js";
import { RunResult } from "./result.js";
import type { TaskName } from "./spec/index.js";

/** DIR/result.json, or null when there is none yet. */
export function readResult(runDir: string): RunResult | null {
  const path = join(runDir, "result.json");
  if (!existsSync(path)) return null;
  const parsed = RunResult.safeParse(JSON.parse(readFileSync(path, "utf8")));
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
    const parsed = RunEvent.safeParse(JSON.parse(line));
    if (!parsed.success)
      throw new ProtocolError(`${path}:${i + 1}: not a valid event: ${parsed.error.message}`);
    events.push(parsed.data);
  }
  return events;
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
  if (existsSync(input.runDir))
    writeFileAtomic(join(input.runDir, "result.json"), `${JSON.stringify(result, null, 2)}\n`);
  return result;
}
