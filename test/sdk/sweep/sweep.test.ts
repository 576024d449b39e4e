/**
 * Real matrix-factorisation sweeps on the CPU (tiny: 16x16, r = 2, 30 steps) through warm workers.
 * Three Python start-ups per sweep at most; the whole file takes about a minute on a busy 2-core machine.
 */
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { SpecInput } from "../../../sdk/spec/index.js";
import { readManifest } from "../../../sdk/sweep/store.js";
import { type SweepEvent, type SweepResults, sweep } from "../../../sdk/sweep/sweep.js";

const base: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 16, cols: 16 },
  adapter: { kind: "op-lora", r: 2, generator: { embedding_dim: 8, hidden_dim: 8 } },
  train: { steps: 30, log_every: 10 },
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function collect(handle: AsyncIterable<SweepEvent> & PromiseLike<SweepResults>) {
  const events: SweepEvent[] = [];
  for await (const ev of handle) events.push(ev);
  return { events, results: await handle };
}

describe("sweep (real MF runs, warm workers)", () => {
  const dir = mkdtempSync(join(tmpdir(), "oplora-sweep-"));
  // 2 arms x 2 seeds that succeed, plus a LoRA arm on a CUDA device that does not exist (fails)
  const plan = {
    zip: { "adapter.kind": ["lora", "op-lora", "lora"], device: ["cpu", "cpu", "cuda:7"] },
    seeds: [0, 1],
  } as const;

  it("runs every trial (concurrency 2); the table matches each run's result.json; failures are recorded", async () => {
    const { events, results } = await collect(sweep(base, { ...plan, concurrency: 2, outDir: dir }));
    expect(results.rows).toHaveLength(6);
    expect(results.counts).toEqual({ succeeded: 4, failed: 2, cancelled: 0, pruned: 0, not_run: 0 });
    for (const row of results.rows) {
      const result = JSON.parse(readFileSync(join(row.runDir, "result.json"), "utf8"));
      const spec = JSON.parse(readFileSync(join(row.runDir, "spec.json"), "utf8"));
      expect(row.status).toBe(result.status);
      expect(spec.adapter.kind).toBe(row.axes["adapter.kind"]);
      expect(spec.seed).toBe(row.axes.seed);
      if (row.status === "succeeded") {
        expect(row.metrics.final_loss).toBe(result.metrics.final_loss);
        const reached = Object.entries(result.metrics.steps_to_excess as Record<string, number | null>);
        expect(reached.length).toBeGreaterThan(0);
        for (const [k, v] of reached) expect(row.metrics[`steps_to_excess.${k}`]).toBe(v);
        expect(row.wallS).toBe(result.timing.wall_s);
      } else {
        expect(row.axes.device).toBe("cuda:7");
        expect(row.error?.message).toContain("cuda:7");
      }
    }
    const started = events.filter((e) => e.type === "trial_started");
    expect(started).toHaveLength(6);
    expect(events.some((e) => e.type === "trial_progress" && e.event.type === "step")).toBe(true);
    expect(events.filter((e) => e.type === "trial_failed")).toHaveLength(2);
    expect(events.at(-1)?.type).toBe("sweep_finished");
    const manifest = await readManifest(dir);
    expect(manifest?.trials.map((t) => t.status)).toEqual(results.rows.map((r) => r.status));
    expect(manifest?.trials.every((t) => t.dir === `runs/${t.id}`)).toBe(true);
  });

  it("resuming skips succeeded trials (untouched) and re-runs failed ones", async () => {
    const before = await readManifest(dir);
    const mtimes = new Map(
      before?.trials.map((t) => [t.id, statSync(join(dir, t.dir, "result.json")).mtimeMs]),
    );
    const { events, results } = await collect(sweep(base, { ...plan, concurrency: 2, outDir: dir }));
    const skipped = events
      .filter((e) => e.type === "trial_skipped")
      .map((e) => ("trial" in e ? e.trial.id : ""));
    const ran = events.filter((e) => e.type === "trial_started").map((e) => ("trial" in e ? e.trial.id : ""));
    expect(skipped).toHaveLength(4);
    expect(ran).toHaveLength(2);
    for (const row of results.rows) {
      const mtime = statSync(join(row.runDir, "result.json")).mtimeMs;
      if (row.status === "succeeded") {
        expect(row.reused).toBe(true);
        expect(mtime).toBe(mtimes.get(row.id));
      } else {
        expect(ran).toContain(row.id);
        expect(mtime).toBeGreaterThan(mtimes.get(row.id) as number);
      }
    }
  });

  it("resuming re-runs a succeeded trial whose result.json or events.ndjson is truncated", async () => {
    const before = await readManifest(dir);
    const done = before?.trials.filter((t) => t.status === "succeeded") ?? [];
    const [a, b] = done;
    const cut = (path: string) => writeFileSync(path, readFileSync(path, "utf8").slice(0, 30));
    cut(join(dir, a?.dir as string, "result.json"));
    cut(join(dir, b?.dir as string, "events.ndjson"));
    const { events, results } = await collect(sweep(base, { ...plan, concurrency: 2, outDir: dir }));
    const ran = events.filter((e) => e.type === "trial_started").map((e) => ("trial" in e ? e.trial.id : ""));
    expect(ran).toEqual(expect.arrayContaining([a?.id, b?.id]));
    expect(ran).toHaveLength(4); // the 2 corrupt + the 2 failing ones
    for (const id of [a?.id, b?.id]) {
      const row = results.rows.find((r) => r.id === id);
      expect(row?.status).toBe("succeeded");
      expect(row?.reused).toBe(false);
      expect(JSON.parse(readFileSync(join(row?.runDir as string, "result.json"), "utf8")).status).toBe(
        "succeeded",
      );
    }
  });

  it("a second sweep on the same directory at once is refused", async () => {
    const first = sweep(base, { seeds: [5], outDir: dir, mode: "cold" });
    const second = sweep(base, { seeds: [6], outDir: dir });
    // the loser fails at once on the lock; the winner is then cancelled
    const outcome = await Promise.race([
      first.result().then(
        () => "first finished",
        (e: unknown) => e,
      ),
      second.result().then(
        () => "second finished",
        (e: unknown) => e,
      ),
    ]);
    expect(String(outcome)).toMatch(/in use by another sweep \(pid \d+ on \S+ since \S+\)/);
    await Promise.allSettled([first.cancel(), second.cancel()]);
  });

  it("a worker killed mid-trial fails that trial only; cancel stops the rest, keeps finished ones, leaves no process", async () => {
    const cdir = mkdtempSync(join(tmpdir(), "oplora-cancel-"));
    const long = 10_000_000;
    // slot 0: A (short) then C (long); slot 1: B (long, its worker killed) then D (short, on a fresh worker)
    const controller = new AbortController();
    const handle = sweep(base, {
      zip: { "train.steps": [30, long, long + 1, 31], "train.log_every": [10, 10, 10, 10] },
      concurrency: 2,
      outDir: cdir,
      signal: controller.signal,
      killGraceMs: 3000,
    });
    const ids = handle.trials.map((t) => t.id);
    const [A, B, C, D] = ids;
    let killed = false;
    const finished = new Set<string>();
    const stepping = new Set<string>();
    for await (const ev of handle) {
      if (ev.type === "trial_finished") finished.add(ev.trial.id);
      if (ev.type === "trial_progress" && ev.event.type === "step") stepping.add(ev.trial.id);
      if (!killed && ev.type === "trial_progress" && ev.trial.id === B && ev.event.type === "step") {
        const started = handle.events.find(
          (e) => e.type === "trial_progress" && e.trial.id === B && e.event.type === "started",
        );
        const pid =
          started?.type === "trial_progress" && started.event.type === "started" ? started.event.pid : -1;
        process.kill(pid, "SIGKILL");
        killed = true;
      }
      if (finished.has(D as string) && stepping.has(C as string) && !controller.signal.aborted)
        controller.abort();
    }
    const results = await handle;
    const status = Object.fromEntries(results.rows.map((r) => [r.id, r.status]));
    expect(status).toEqual({
      [A as string]: "succeeded",
      [B as string]: "failed",
      [C as string]: "cancelled",
      [D as string]: "succeeded",
    });
    const b = results.rows.find((r) => r.id === B);
    expect(b?.error?.type).toBe("WorkerCrashedError");
    expect(JSON.parse(readFileSync(join(cdir, "runs", C as string, "result.json"), "utf8")).status).toBe(
      "cancelled",
    );
    expect(results.stopped).toBe(true);
    expect(handle.pids.length).toBeGreaterThanOrEqual(3);
    for (const pid of handle.pids) expect(alive(pid)).toBe(false);
  });
});
