/**
 * Real MF searches on the CPU (24x24, r = 2, 200 steps, ~1.5 s a trial): two arms (LoRA, OP-LoRA), one
 * Optuna study each, median pruner, warm workers. The stored studies are read back with optuna.load_study in a Python
 * subprocess. The whole file takes a few minutes on a busy 2-core machine.
 */
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { TAIL_STEPS } from "../../../sdk/metrics.js";
import type { SpecInput } from "../../../sdk/spec/index.js";
import { SEARCH_DB, tailLoss } from "../../../sdk/sweep/search.js";
import { type SweepEvent, type SweepOptions, type SweepResults, sweep } from "../../../sdk/sweep/sweep.js";
import { REPO, VENV_PYTHON, waitUntil } from "../helpers.js";

const base: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 24, cols: 24 },
  adapter: { kind: "lora", r: 2 },
  optimizer: { name: "adam" },
  // 200 steps: the default warm-up is 50, and a trial must still be running when the pruner's verdict at
  // step 50 comes back (at 40 steps a whole trial took ~0.3 s and ended before it did)
  train: { steps: 200, log_every: 10 },
};
const STEPS = 200;
const axes = { "adapter.kind": ["lora", "op-lora"] } as const;
const search = (trials: number) => ({
  space: { "optimizer.lr": { low: 1e-3, high: 1, log: true } },
  trials,
  sampler: "tpe" as const,
  pruner: "median" as const,
  objective: "final_loss",
  startupTrials: 3,
  confirmSeeds: [1, 2],
  seed: 0,
});

interface Stored {
  name: string;
  best: { number: number; value: number; params: Record<string, number> } | null;
  trials: {
    number: number;
    state: string;
    value: number | null;
    run_id: string | null;
    steps: number | null;
    error: string | null;
  }[];
}

/** Every study in DIR/search.db, through Optuna's own API (load_study). */
async function loadStudies(dir: string): Promise<Stored[]> {
  const code = `
import json, sys, optuna
url = "sqlite:///" + sys.argv[1]
out = []
for s in optuna.get_all_study_summaries(url):
    st = optuna.load_study(study_name=s.study_name, storage=url)
    done = [t for t in st.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = st.best_trial if done else None
    out.append({"name": s.study_name,
                "best": best and {"number": best.number, "value": best.value, "params": best.params},
                "trials": [{"number": t.number, "state": t.state.name, "value": t.value,
                            "run_id": t.user_attrs.get("run_id"), "steps": t.user_attrs.get("steps"),
                            "error": t.user_attrs.get("error")}
                           for t in st.trials]})
print(json.dumps(out))`;
  const r = await execa(VENV_PYTHON, ["-c", code, join(dir, SEARCH_DB)]);
  return (JSON.parse(r.stdout) as Stored[]).sort((a, b) => a.name.localeCompare(b.name));
}

const finished = (s: Stored) => s.trials.filter((t) => t.state === "COMPLETE" || t.state === "PRUNED");

async function collect(handle: AsyncIterable<SweepEvent> & PromiseLike<SweepResults>) {
  const events: SweepEvent[] = [];
  for await (const ev of handle) events.push(ev);
  return { events, results: await handle };
}

describe("tailLoss: the value a trial reports to the pruner", () => {
  it("is the mean of the losses logged in the last TAIL_STEPS steps, as tail_loss in Python", () => {
    const py = readFileSync(join(REPO, "python/oplora/tasks/text_to_image/task.py"), "utf8");
    expect(py).toMatch(new RegExp(`^TAIL_STEPS = ${TAIL_STEPS}$`, "m"));
    const each = tailLoss();
    const losses = Array.from({ length: 15 }, (_, i) => i + 1); // step s has loss s
    const means = losses.map((l, i) => each(i + 1, l));
    expect(means.slice(0, 3)).toEqual([1, 1.5, 2]); // min(10, steps so far)
    expect(means[9]).toBe(5.5);
    expect(means[14]).toBe(10.5); // steps 6..15
    const every5 = tailLoss(); // log_every 5: the logged losses of steps 6..15 are those of 10 and 15
    expect([5, 10, 15].map((s) => every5(s, s))).toEqual([5, 7.5, 12.5]);
  });
});

describe("search (real MF runs, Optuna studies)", () => {
  it("two arms x 10 trials, median pruner: pruned trials stop early; best per arm = the stored study's best", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-search-"));
    const opts: SweepOptions = { axes, outDir: dir, concurrency: 1, search: search(10) };
    const { results } = await collect(sweep(base, opts));
    const res = results.search;
    if (!res) throw new Error("no search results");
    expect(res.studies.map((s) => s.name)).toEqual(["adapter.kind=lora", "adapter.kind=op-lora"]);
    const stored = await loadStudies(dir);
    expect(stored.map((s) => s.name)).toEqual(res.studies.map((s) => s.name));
    let pruned = 0;
    for (const [i, study] of res.studies.entries()) {
      const db = stored[i] as Stored;
      expect(study.trials).toHaveLength(10);
      expect(finished(db)).toHaveLength(10);
      for (const t of study.trials) {
        expect(["complete", "pruned"]).toContain(t.state);
        const row = results.rows.find((r) => r.id === t.runId);
        if (!row) throw new Error(`no row for trial ${t.number}`);
        if (t.state === "pruned") {
          pruned++;
          expect(t.steps).toBeLessThan(STEPS);
          expect(row.status).toBe("pruned");
          const result = JSON.parse(readFileSync(join(row.runDir, "result.json"), "utf8"));
          expect(result.status).toBe("cancelled");
        } else {
          expect(t.steps).toBe(STEPS);
          expect(row.status).toBe("succeeded");
          expect(t.objective).toBe(row.metrics.final_loss);
        }
      }
      // the best per arm is the stored study's best trial, and the best of the complete rows
      expect(study.best?.number).toBe(db.best?.number);
      expect(study.best?.objective).toBe(db.best?.value);
      expect(study.best?.params).toEqual(db.best?.params);
      const complete = study.trials.filter((t) => t.state === "complete").map((t) => t.objective as number);
      expect(study.best?.objective).toBe(Math.min(...complete));
      // confirmation: the best params re-run with seeds 1 and 2
      const conf = res.confirmations.find((c) => c.study === study.name);
      expect(conf?.rows.map((r) => r.status)).toEqual(["succeeded", "succeeded"]);
      for (const r of conf?.rows ?? []) {
        const spec = JSON.parse(readFileSync(join(r.runDir, "spec.json"), "utf8"));
        expect(spec.optimizer.lr).toBe(study.best?.params["optimizer.lr"]);
      }
      expect(conf?.mean).toBeCloseTo(
        ((conf?.rows[0]?.metrics.final_loss as number) + (conf?.rows[1]?.metrics.final_loss as number)) / 2,
        12,
      );
    }
    expect(pruned).toBeGreaterThan(0);
    expect(results.counts.pruned).toBe(pruned);
  }, 600_000);

  it("killed mid-search and run again: no finished trial re-runs, exactly `trials` per arm", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-search-kill-"));
    const script = join(dir, "run.mjs");
    writeFileSync(
      script,
      `import { sweep } from ${JSON.stringify(join(REPO, "dist", "sdk", "index.js"))};
const h = sweep(${JSON.stringify(base)}, { axes: ${JSON.stringify(axes)}, outDir: ${JSON.stringify(join(dir, "s"))},
  concurrency: 2, search: ${JSON.stringify(search(6))} });
for await (const ev of h) if (ev.type === "trial_started" || ev.type === "trial_finished")
  console.log(JSON.stringify({ type: ev.type, pids: h.pids }));
await h;`,
    );
    const child = execa("node", [script], { detached: true, reject: false, buffer: false });
    let finishedSeen = 0;
    let pids: number[] = [];
    child.stdout?.on("data", (chunk: Buffer) => {
      for (const line of chunk.toString().split("\n").filter(Boolean)) {
        const msg = JSON.parse(line) as { type: string; pids: number[] };
        pids = msg.pids;
        if (msg.type === "trial_finished") finishedSeen++;
      }
    });
    expect(await waitUntil(() => finishedSeen >= 4, 300_000, 100)).toBe(true);
    // kill the sweep's process groups: the node process and every worker / the search process
    for (const pid of [child.pid as number, ...pids])
      try {
        process.kill(-pid, "SIGKILL");
      } catch {}
    await child;
    const before = await loadStudies(join(dir, "s"));
    const kept = new Set(before.flatMap((s) => finished(s).map((t) => t.run_id)));
    expect(kept.size).toBeGreaterThanOrEqual(4);
    expect(before.flatMap((s) => finished(s)).length).toBeLessThan(12);

    const { events, results } = await collect(
      sweep(base, { axes, outDir: join(dir, "s"), concurrency: 2, search: search(6) }),
    );
    const rerun = events.filter((e) => e.type === "trial_started").map((e) => e.trial.id);
    for (const id of rerun) expect(kept.has(id)).toBe(false);
    const after = await loadStudies(join(dir, "s"));
    for (const s of after) expect(finished(s)).toHaveLength(6);
    for (const s of results.search?.studies ?? []) expect(s.trials).toHaveLength(6);
  }, 600_000);

  it("a diverging trial stops at its first NaN loss: failed row with TrainingDiverged, Optuna FAIL with the message", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-search-diverge-"));
    const diverging: SpecInput = { ...base, matrix: { rows: 8, cols: 6 }, optimizer: { name: "sgd" } };
    const block = { ...search(2), space: { "optimizer.lr": { low: 1e5, high: 1e6, log: true } } };
    const { results } = await collect(
      sweep(diverging, { axes: { "adapter.kind": ["lora"] }, outDir: dir, concurrency: 1, search: block }),
    );
    expect(results.rows.map((r) => [r.status, r.error?.type])).toEqual([
      ["failed", "TrainingDiverged"],
      ["failed", "TrainingDiverged"],
    ]);
    expect(results.search?.studies[0]?.trials.map((t) => t.state)).toEqual(["fail", "fail"]);
    const [study] = await loadStudies(dir);
    expect(study?.trials).toHaveLength(2);
    for (const t of study?.trials ?? []) {
      expect(t.state).toBe("FAIL");
      const row = results.rows.find((r) => r.id === t.run_id);
      expect(t.error).toMatch(
        /^training diverged at step \d+: loss (nan|inf) with lr [\d.e+]+; lower optimizer\.lr/,
      );
      expect(t.error).toBe(row?.error?.message);
      expect(t.steps).toBeLessThan(STEPS);
    }
  }, 120_000);
});
