/**
 * Reading a run directory after (or while) a run: result.json and events.ndjson, zod-checked.
 * Writing result.json when Python could not (atomically: a temporary file, then a rename).
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ProtocolError } from "./errors.js";
import { RunEvent } from "./events.js";
import { RunResult } from "./result.js";

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

/** Write `value` as DIR/result.json through a temporary file and a rename. */
export function writeResultAtomic(runDir: string, value: RunResult): void {
  const path = join(runDir, "result.json");
  const tmp = join(runDir, `.result.json.${process.pid}.tmp`);
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`);
  renameSync(tmp, path);
}
