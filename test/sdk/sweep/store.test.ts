import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { SweepLockedError } from "../../../sdk/sweep/errors.js";
import { acquireLock, clearTrialDir, LOCK, reusableResult } from "../../../sdk/sweep/store.js";

const tmp = () => mkdtempSync(join(tmpdir(), "oplora-store-"));

describe("run store", () => {
  it("refuses a second sweep while the lock's owner lives; takes over a stale lock", async () => {
    const dir = tmp();
    const release = await acquireLock(dir);
    await expect(acquireLock(dir)).rejects.toBeInstanceOf(SweepLockedError);
    await release();
    expect(existsSync(join(dir, LOCK))).toBe(false);

    // a live process of another program holds it
    const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 30000)"]);
    const { hostname } = await import("node:os");
    writeFileSync(join(dir, LOCK), JSON.stringify({ pid: child.pid, hostname: hostname() }));
    await expect(acquireLock(dir)).rejects.toThrow(`pid ${child.pid}`);
    child.kill("SIGKILL");
    await new Promise((r) => child.on("exit", r));
    // its owner is dead now: the lock is stale and taken over
    const again = await acquireLock(dir);
    await again();
  });

  it("reuses only a succeeded result with the same spec, and clears a trial dir safely", async () => {
    const dir = tmp();
    const run = join(dir, "runs", "abc");
    mkdirSync(run, { recursive: true });
    writeFileSync(join(run, "spec.json"), JSON.stringify({ b: 1, a: 2 }));
    const ok = {
      status: "succeeded",
      task: "matrix_factorization_study",
      run_dir: run,
      metrics: {},
      artifacts: [],
      error: null,
      versions: {},
      device: "cpu",
      timing: { started_at: "", finished_at: "", wall_s: 1 },
    };
    writeFileSync(join(run, "result.json"), JSON.stringify(ok));
    expect(await reusableResult(run, { a: 2, b: 1 })).toBeTruthy();
    expect(await reusableResult(run, { a: 3, b: 1 })).toBeUndefined();
    writeFileSync(join(run, "result.json"), JSON.stringify({ status: "failed" }));
    expect(await reusableResult(run, { a: 2, b: 1 })).toBeUndefined();
    await clearTrialDir(dir, run, "abc");
    expect(existsSync(run)).toBe(false);
    expect(readdirSync(join(dir, ".trash"))).toEqual([]);
    await clearTrialDir(dir, run, "abc"); // absent: a no-op
  });
});
