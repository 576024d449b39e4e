/**
 * Text-to-image DoRA / OP-LoRA comparison at each arm's best lr found by the project's own search (instead of
 * bench/text_to_image.py's 4-point lr grid): the five arms of bench/arms.py (lora, op-lora, dora, op-dora
 * with the magnitude generated, op-dora-direct) on the small SD UNet (scripts/make_tiny_sd.py --small), res
 * 32, batch 2, r = 8, attention targets, 40 AdamW steps, generator e = 128, h = 32 (--hidden-dim); the spec of
 * bench/text_to_image.py's `_spec`.
 *
 *   per arm  one sweep with a search block: TPE over optimizer.lr in [1e-4, 1e-1] (log), 8 trials, median
 *            pruner, objective tail_loss (the mean loss of the last 10 steps), sampler seed 0; its best lr
 *            re-run on confirmSeeds [1, 2]; 2 trials at a time, each worker on 1 thread
 *
 * Reported per arm: best lr, best tail_loss (seed 0), the confirmation's mean tail_loss, trials pruned, the
 * sweep's wall time; and the confirmed tail_loss of each arm over LoRA's and OP-DoRA (both magnitudes) over
 * DoRA's (bench/arms.py `ratios`). The data, noise and timesteps of step s depend only on the seed and s,
 * so the arms' runs at a seed are paired. Writes bench/results/t2i_search.json.
 *
 *   npx tsx bench/t2i_search.ts [--quick] [--out FILE] [--arms A,B] [--hidden-dim H]
 *
 * --quick: 2 trials, 4 steps, 1 confirm seed; --arms: only these arms of bench/arms.py (the LoRA ratios
 * need lora among them); --hidden-dim: the generator's h (default 32), e.g. to measure a narrower default.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import type { SpecInputOf } from "../sdk/spec/index.js";
import { type SearchBlockInput, sweep } from "../sdk/sweep/index.js";

const quick = process.argv.includes("--quick");
/** The value after `--name` on the command line, undefined without the flag. */
function flag(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}
const root = join(import.meta.dirname, "..");
const python = process.env.OPLORA_PYTHON ?? join(root, ".venv", "bin", "python");
const STEPS = quick ? 4 : 40;
const block: SearchBlockInput = {
  space: { "optimizer.lr": { low: 1e-4, high: 1e-1, log: true } },
  trials: quick ? 2 : 8,
  sampler: "tpe",
  pruner: "median",
  objective: "tail_loss",
  direction: "minimize",
  confirmSeeds: quick ? [1] : [1, 2],
  seed: 0,
};
const concurrency = 2;

/** Evaluate `expr` in Python beside bench/arms.py (the arms and their ratios are defined once, there). */
function arms<T>(expr: string, input: unknown = null): T {
  const code = `import json, sys\nfrom arms import ARMS, adapter, ratios\nx = json.load(sys.stdin)\nprint(json.dumps(${expr}))`;
  const out = execFileSync(python, ["-c", code], { cwd: import.meta.dirname, input: JSON.stringify(input) });
  return JSON.parse(out.toString()) as T;
}

type Adapter = SpecInputOf<"text_to_image">["adapter"];
const generator = { embedding_dim: 128, hidden_dim: Number(flag("--hidden-dim") ?? 32) };
if (!Number.isInteger(generator.hidden_dim) || generator.hidden_dim < 1)
  throw new Error(`--hidden-dim: expected a positive integer, got ${flag("--hidden-dim")}`);
const only = flag("--arms")?.split(",");
const adapters = arms<Record<string, Adapter>>(
  "{k: adapter(k, 8, x['generator']) for k in ARMS if x['only'] is None or k in x['only']}",
  { generator, only: only ?? null },
);
const unknown = (only ?? []).filter((a) => !(a in adapters));
if (unknown.length)
  throw new Error(`--arms: unknown arm ${unknown.join(", ")}; arms: see bench/arms.py ARMS`);

const work = mkdtempSync(join(tmpdir(), "oplora-bench-t2i-search-"));
const assets = join(work, "assets");
execFileSync(python, [join(root, "scripts", "make_tiny_sd.py"), "--small", assets], { stdio: "inherit" });

const base = (adapter: Adapter): SpecInputOf<"text_to_image"> => ({
  task: "text_to_image",
  device: "cpu",
  seed: 0,
  model: { pretrained: join(assets, "sd") },
  adapter,
  data: { folder: join(assets, "data", "train"), resolution: 32, random_flip: true },
  optimizer: { lr: 1e-3 }, // searched
  train: { steps: STEPS, batch_size: 2, gradient_accumulation_steps: 1 },
  eval: { prompts: [] },
});

const t0 = performance.now();
const perArm = [];
for (const [arm, adapter] of Object.entries(adapters)) {
  const outDir = join(work, "sweeps", arm);
  const a0 = performance.now();
  const r = await sweep(base(adapter), { outDir, concurrency, search: block, env: { OMP_NUM_THREADS: "1" } });
  const wallS = (performance.now() - a0) / 1000;
  const study = r.search?.studies[0];
  const conf = r.search?.confirmations[0];
  if (!study || !conf) throw new Error(`t2i_search ${arm}: the sweep returned no study or confirmation`);
  const trials = [...study.trials].sort((x, y) => x.number - y.number);
  const row = {
    arm,
    adapter,
    best_lr: (study.best?.params["optimizer.lr"] as number | undefined) ?? null,
    best_tail_loss: study.best?.objective ?? null,
    confirm_tail_loss: conf.rows.map((c) => (c.metrics.tail_loss as number | null) ?? null),
    confirm_mean_tail_loss: conf.mean,
    confirm_std_tail_loss: conf.std,
    trials: trials.length,
    pruned: trials.filter((t) => t.state === "pruned").length,
    failed: trials.filter((t) => t.state === "fail").length,
    trial_steps: trials.reduce((s, t) => s + (t.steps ?? 0), 0),
    trial_log: trials.map((t) => ({
      number: t.number,
      state: t.state,
      lr: t.params["optimizer.lr"],
      tail_loss: t.objective,
      steps: t.steps,
    })),
    edge_warnings: study.edgeWarnings,
    wall_s: wallS,
  };
  perArm.push(row);
  console.log(JSON.stringify({ ...row, adapter: undefined, trial_log: undefined }));
}
rmSync(work, { recursive: true, force: true });

const confirmed = Object.fromEntries(
  perArm.flatMap((a) => (a.confirm_mean_tail_loss === null ? [] : [[a.arm, a.confirm_mean_tail_loss]])),
);
const result = {
  benchmark: "t2i_search",
  machine: { cpus: cpus().length, model: cpus()[0]?.model ?? "?" },
  setting: `text_to_image small SD UNet 64/128 ch, 2 layers/block, res 32, batch 2, r=8, to_q/k/v/out.0, AdamW, ${STEPS} steps, generator e=128 h=${generator.hidden_dim}, 1 thread per trial, ${concurrency} trials at a time`,
  search_block: block,
  arms: perArm,
  // null: LoRA has no confirmed tail_loss to divide by
  confirmed_tail_loss_ratios:
    "lora" in confirmed ? arms<Record<string, number>>("ratios(x)", confirmed) : null,
  wall_s: (performance.now() - t0) / 1000,
  note: "best_tail_loss: the study's best trial (seed 0); confirm_*: that lr re-run on the confirmation seeds; ratios are of confirm_mean_tail_loss. trial_steps counts the steps every trial ran (pruned ones up to the pruner's stop). The median pruner compares each trial's mean loss of the last 10 steps (its best so far) against the median of the complete trials' at that step, from step warmupSteps (default floor(steps / 4): 10 of 40) on, after 5 startup trials.",
};
const outPath = flag("--out") ?? join(import.meta.dirname, "results", "t2i_search.json");
mkdirSync(dirname(outPath), { recursive: true });
writeFileSync(outPath, `${JSON.stringify(result, null, 2)}\n`);
console.log(JSON.stringify({ confirmed_tail_loss_ratios: result.confirmed_tail_loss_ratios }));
