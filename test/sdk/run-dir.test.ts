import { existsSync, mkdtempSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { RunEvent } from "../../sdk/events.js";
import { readResult, writeCrashResult, writeFileAtomic } from "../../sdk/run-dir.js";

const dir = () => mkdtempSync(join(tmpdir(), "oplora-rundir-"));

describe("run-dir", () => {
  it("writeCrashResult: a schema-valid result.json with the artifacts, versions and device of the events", () => {
    const runDir = dir();
    const events: RunEvent[] = [
      {
        type: "started",
        seq: 0,
        time: 1_700_000_000,
        task: "matrix_factorization",
        run_dir: runDir,
        pid: 1,
        device: "cpu",
        versions: { torch: "2.13.0" },
      } as RunEvent,
      { type: "artifact", seq: 1, time: 1_700_000_001, kind: "table", path: "t.md", step: 3 } as RunEvent,
    ];
    const result = writeCrashResult({
      status: "failed",
      task: "matrix_factorization",
      runDir,
      events,
      startedAt: new Date(),
      error: { type: "ProcessCrashed", message: "gone" },
    });
    expect(result.artifacts).toEqual([{ kind: "table", path: "t.md", step: 3 }]);
    expect(result.error?.traceback).toBe("");
    expect(result.timing?.started_at).toBe(new Date(1_700_000_000_000).toISOString());
    expect(readResult(runDir)).toEqual(result);
    expect(JSON.parse(readFileSync(join(runDir, "result.json"), "utf8")).written_by).toBe("sdk");
  });

  it("writeCrashResult refuses a result that does not match the schema, and skips a missing run dir", () => {
    const runDir = dir();
    const bad = {
      status: "exploded",
      task: "matrix_factorization",
      runDir,
      error: null,
      startedAt: new Date(),
    };
    expect(() => writeCrashResult(bad as never)).toThrow();
    expect(existsSync(join(runDir, "result.json"))).toBe(false);
    const missing = join(runDir, "nope");
    const r = writeCrashResult({
      status: "cancelled",
      task: "llava",
      runDir: missing,
      error: null,
      startedAt: new Date(),
    });
    expect(r.status).toBe("cancelled");
    expect(existsSync(missing)).toBe(false);
  });

  it("writeFileAtomic replaces the file and leaves no temporary behind", () => {
    const d = dir();
    writeFileAtomic(join(d, "a.json"), "1");
    writeFileAtomic(join(d, "a.json"), "2");
    expect(readFileSync(join(d, "a.json"), "utf8")).toBe("2");
    expect(readdirSync(d)).toEqual(["a.json"]);
  });
});
