/**
 * Matrix factorisation, the paper's proxy task: fit B @ A (rank r) to M = U diag(sigma) V^T.
 * `matrix_factorization` is one run (MF or OP-MF); `matrix_factorization_study` is the whole comparison
 * (spectra x optimizers x arms x learning-rate grid x seeds) in one job: each arm with its best learning
 * rate from the same grid, steps to each relative-excess threshold, excess at the step budget.
 *
 * M is scaled so that ||M||_F^2 = rows * cols; loss = ||dW - M||_F^2 / (rows * cols) (1 at step 0);
 * relative excess = (loss - Eckart-Young optimum) / (1 - optimum), i.e. the excess over the initial excess.
 */
import { z } from "zod";
import {
  adapterSchema,
  Device,
  GeneratorConfig,
  Optimizer,
  OptimizerName,
  PeakMemoryBytes,
  PeakTensorBytes,
  Seed,
} from "./common.js";
import { ReportTo } from "./training.js";

export const Spectrum = z.enum(["gaussian", "geometric", "power_law"]);

const matrixFields = {
  rows: z.int().positive().max(8192).default(128).describe("M's rows (the LoRA layer's d_out)"),
  cols: z.int().positive().max(8192).default(128).describe("M's columns (the LoRA layer's d_in)"),
  geometric_ratio: z.number().gt(0).lt(1).default(0.8).describe("sigma_i = ratio^i (spectrum 'geometric')"),
  power_law_exponent: z.number().positive().default(1).describe("sigma_i = (i+1)^-exponent ('power_law')"),
};

export const MatrixConfig = z.strictObject({
  spectrum: Spectrum.default("geometric").describe(
    "singular values of M: 'gaussian' (an i.i.d. N(0,1) matrix), 'geometric', 'power_law'",
  ),
  ...matrixFields,
});

const thresholds = z
  .array(z.number().gt(0).lt(1))
  .min(1)
  .default([1e-2, 1e-3, 1e-4])
  .describe("relative excess levels (excess / initial excess) for steps_to_excess");

export const MatrixFactorizationSpec = z
  .strictObject({
    task: z.literal("matrix_factorization"),
    seed: Seed,
    device: Device,
    matrix: MatrixConfig.prefault({}),
    adapter: adapterSchema({}).prefault({ kind: "op-lora" }),
    optimizer: Optimizer.extend({
      name: OptimizerName.default("adam"),
      lr: z.number().positive().default(3e-3),
    }).prefault({}),
    train: z
      .strictObject({
        steps: z.int().positive().default(2000),
        log_every: z.int().positive().default(10).describe("record loss and effective rank every N steps"),
        report_to: ReportTo,
      })
      .prefault({}),
    thresholds,
  })
  .superRefine((spec, ctx) => {
    rankFits(spec.adapter.r, spec.matrix, ["adapter", "r"], ctx);
    if (spec.adapter.use_dora)
      ctx.addIssue({ code: "custom", path: ["adapter", "use_dora"], input: true, message: NO_DORA });
  });

/** Why matrix factorisation refuses DoRA (python/oplora/run/spec.py says the same). */
const NO_DORA =
  "matrix factorisation cannot use DoRA: its adapted weight W is zero, so DoRA's column norm ||W + dW||_c starts at 0 and so does its magnitude vector (the adapter could never move)";

/** Cross-field check: a rank-r factorisation of a rows x cols matrix needs r <= min(rows, cols). */
function rankFits(
  r: number,
  matrix: { rows: number; cols: number },
  path: string[],
  ctx: z.RefinementCtx,
): void {
  const most = Math.min(matrix.rows, matrix.cols);
  if (r > most)
    ctx.addIssue({
      code: "custom",
      path,
      input: r,
      message: `rank ${r} exceeds min(matrix.rows, matrix.cols) = ${most}`,
    });
}

const lrList = z.array(z.number().positive()).min(1);

export const MatrixFactorizationStudySpec = z
  .strictObject({
    task: z.literal("matrix_factorization_study"),
    device: Device,
    seeds: z.array(z.int().nonnegative()).min(1).default([0, 1]),
    matrix: z.strictObject(matrixFields).prefault({ rows: 64, cols: 64 }),
    spectra: z.array(Spectrum).min(1).default(["gaussian", "geometric", "power_law"]),
    r: z.int().positive().default(8).describe("LoRA rank of both arms"),
    generator: GeneratorConfig.prefault({}),
    optimizers: z
      .array(z.enum(["sgd", "momentum", "adam"]))
      .min(1)
      .default(["sgd", "momentum", "adam"]),
    lr_grid: z
      .strictObject({
        // Measured at 64x64, r = 8 (loss normalised to 1 at step 0): OP-MF diverges above lr ~1 with plain SGD
        // or momentum, MF only above ~30 (SGD); MF keeps speeding up to the top of each grid. Each grid spans
        // both arms' best lrs as far as 5 values allow (table.md marks a best lr at a grid edge with *).
        sgd: lrList.default([1, 3, 10, 30, 100]),
        momentum: lrList.default([0.3, 1, 3, 10, 30]),
        adam: lrList.default([3e-3, 1e-2, 3e-2, 1e-1, 3e-1]),
      })
      .prefault({})
      .describe("each arm's learning rates; every arm uses its best, and both arms are also compared per lr"),
    // 500 steps: the default study (180 trials) takes ~2-4 min on 2 busy CPU cores; bench/mf_study.py runs larger.
    steps: z.int().positive().default(500).describe("optimizer steps per trial (the budget)"),
    log_every: z.int().positive().default(10).describe("record loss and effective rank every N steps"),
    thresholds,
  })
  .superRefine((spec, ctx) => rankFits(spec.r, spec.matrix, ["r"], ctx));

/**
 * Metrics of one matrix factorisation run. Losses are mean squared errors
 * `||scaling * B @ A - M||_F^2 / (rows * cols)`, with M scaled so the loss at step 0 (ΔW = 0) is 1.
 */
export const MatrixFactorizationMetrics = z.looseObject({
  final_loss: z.number(),
  optimal_loss: z
    .number()
    .describe("Eckart-Young: sum of the squared singular values beyond r, / (rows*cols)"),
  excess_loss: z.number().describe("final_loss - optimal_loss"),
  relative_excess: z
    .number()
    .describe("excess_loss / the excess at step 0 (1 at the start, 0 at the optimum)"),
  loss_curve: z.array(z.looseObject({ step: z.int(), loss: z.number().nullable() })),
  effective_rank_curve: z.array(z.looseObject({ step: z.int(), effective_rank: z.number().nullable() })),
  steps_to_excess: z
    .record(z.string(), z.int().nullable())
    .describe(
      'first step whose relative excess fell below each threshold, keyed "1e-2", "1e-3", ... (null: never)',
    ),
  peak_memory_bytes: PeakMemoryBytes.optional(), // absent in results written before it was recorded
  peak_tensor_bytes: PeakTensorBytes.optional(),
});

/** The study's metrics are its own (tables of arms x optimizers x spectra); typed loosely. */
export const MatrixFactorizationStudyMetrics = z.looseObject({});

// The types of the schemas above (what validateSpec returns / what result.json holds).
export type MatrixFactorizationSpec = z.output<typeof MatrixFactorizationSpec>;
export type MatrixFactorizationStudySpec = z.output<typeof MatrixFactorizationStudySpec>;
export type MatrixFactorizationMetrics = z.output<typeof MatrixFactorizationMetrics>;
export type MatrixFactorizationStudyMetrics = z.output<typeof MatrixFactorizationStudyMetrics>;
export type MatrixConfig = z.output<typeof MatrixConfig>;
export type Spectrum = z.output<typeof Spectrum>;
