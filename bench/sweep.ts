/**
 * Sweep overhead: a 24-trial MF sweep (tiny trials) run twice, side by side in one process: `cold` (one
 * `python -m oplora run` process per trial, each paying Python's start-up) and `warm` (one long-lived
 * worker per slot). Reports wall time, the sum of the trials' own training time (result.json
 * timing.wall_s) and the overhead ratio wall / (sum / concurrency). Writes bench/results/sweep.json.
 *
 *   npx tsx bench/sweep.ts [--quick] [--out FILE]        (--quick: 8 trials)
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { SpecInput } from "../sdk/spec/index.js";
import { type Mode, sweep } from "../sdk/sweep/index.js";

const quick = process.argv.includes("--quick");
const concurrency = 2;
const base: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 16, cols: 16 },
  adapter: { kind: "op-lora", r: 2, generator: { embedding_dim: 8, hidden_dim: 8 } },
  train: { steps: 50, log_every: 10 },
};
const plan = {
  axes: { "adapter.kind": ["lora", "op-lora"] as const, "optimizer.lr": quick ? [1e-2] : [1e-3, 3e-3, 1e-2] },
  seeds: [0, 1, 2, 3],
};

async function measure(mode: Mode) {
  const dir = mkdtempSync(join(tmpdir(), `oplora-bench-sweep-${mode}-`));
  const t0 = performance.now();
  const results = await sweep(base, { ...plan, concurrency, outDir: dir, mode });
  const wallS = (performance.now() - t0) / 1000;
  const trialS = results.rows.reduce((a, r) => a + (r.wallS ?? 0), 0);
  rmSync(dir, { recursive: true, force: true });
  const out = {
    mode,
    trials: results.rows.length,
    succeeded: results.counts.succeeded,
    wall_s: wallS,
    sum_trial_s: trialS,
    per_trial_wall_s: wallS / results.rows.length,
    overhead_ratio: wallS / (trialS / concurrency),
  };
  console.log(JSON.stringify(out));
  return out;
}

const warm = await measure("warm");
const cold = await measure("cold");
const result = {
  benchmark: "sweep",
  machine: { cpus: cpus().length, model: cpus()[0]?.model ?? "?" },
  trial: "matrix_factorization 16x16, r=2, 50 steps, CPU",
  concurrency,
  warm,
  cold,
  cold_over_warm_wall: cold.wall_s / warm.wall_s,
  note: "overhead_ratio = wall / (sum of trials' own wall_s / concurrency); 1.0 = no overhead. A trial's wall_s is timed inside run_spec and so includes the task's first imports (torch, peft, matplotlib): in cold mode every trial pays them there, which the ratio hides; compare wall_s across modes. Shared, noisy 2-core machine.",
};
const outArg = process.argv.indexOf("--out");
const outPath =
  outArg > 0 ? (process.argv[outArg + 1] as string) : join(import.meta.dirname, "results", "sweep.json");
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify({ cold_over_warm_wall: result.cold_over_warm_wall }));
