/**
 * Built-in sweeps that reproduce the paper's matrix-factorisation claims at demo size (seconds per trial
 * on a CPU). Each is a base spec plus a plan; `oplora study <name>` runs it and writes its report.
 *
 *   mf-convergence     MF vs OP-MF x seeds, each arm at its own tuned Adam lr: speed and final loss
 *   mf-lr-sensitivity  both arms across an lr grid x seeds: how much each depends on the lr
 *   mf-half-rank       both arms at r in {2, 4, 8} x seeds (own lrs): OP-MF at r vs MF at 2r
 */
import type { SpecInput } from "../spec/index.js";
import type { SweepPlan } from "./expand.js";

export interface Study {
  name: string;
  summary: string;
  base: SpecInput;
  plan: SweepPlan;
}

/**
 * Each arm's Adam lr on the demo target, from `oplora study mf-lr-sensitivity` (2 seeds, 300 steps):
 * MF's excess fell from 0.44 (1e-3) to ~1e-9 (3e-2); OP-MF reached ~1e-9 at every lr of the grid.
 */
export const TUNED_LR = { lora: 3e-2, "op-lora": 3e-3 } as const;

const demoBase = (steps: number): SpecInput => ({
  task: "matrix_factorization",
  device: "cpu",
  matrix: { spectrum: "geometric", rows: 32, cols: 32, geometric_ratio: 0.8 },
  adapter: { kind: "op-lora", r: 4 },
  optimizer: { name: "adam" },
  train: { steps, log_every: 10 },
});

export const STUDIES: Record<string, Study> = {
  "mf-convergence": {
    name: "mf-convergence",
    summary: "MF vs OP-MF x 3 seeds at each arm's tuned lr: steps to LoRA's final loss, final loss",
    base: demoBase(300),
    plan: {
      zip: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [TUNED_LR.lora, TUNED_LR["op-lora"]] },
      seeds: [0, 1, 2],
    },
  },
  "mf-lr-sensitivity": {
    name: "mf-lr-sensitivity",
    summary: "MF and OP-MF across lr {1e-3 .. 3e-2} x 2 seeds: final loss vs learning rate",
    base: demoBase(300),
    plan: {
      axes: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [1e-3, 3e-3, 1e-2, 3e-2] },
      seeds: [0, 1],
    },
  },
  "mf-half-rank": {
    name: "mf-half-rank",
    summary: "MF and OP-MF at r in {2, 4, 8} x 2 seeds (tuned lrs): OP-MF at r vs MF at 2r",
    base: demoBase(300),
    plan: {
      zip: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [TUNED_LR.lora, TUNED_LR["op-lora"]] },
      axes: { "adapter.r": [2, 4, 8] },
      seeds: [0, 1],
    },
  },
};
