/**
 * Matrix factorisation, the paper's proxy task: fit B @ A (rank r) to M = U diag(sigma) V^T.
 * `matrix_factorization` is one run (MF or OP-MF); `matrix_factorization_study` is the whole protocol of
 * design.md section 5 (spectra x optimizers x arms x learning-rate grid x seeds) in one job.
 */
import { z } from "zod";
import { adapterSchema, Device, GeneratorConfig, Optimizer, OptimizerName, Seed } from "./common.js";

export const Spectrum = z.enum(["gaussian", "geometric", "power_law"]);

const matrixFields = {
  rows: z.int().positive().max(8192).default(128),
  cols: z.int().positive().max(8192).default(128),
  geometric_ratio: z.number().gt(0).lt(1).default(0.8).describe("sigma_i = ratio^i (spectrum 'geometric')"),
  power_law_exponent: z.number().positive().default(1).describe("sigma_i = (i+1)^-exponent ('power_law')"),
};

export const MatrixConfig = z.strictObject({ spectrum: Spectrum.default("geometric"), ...matrixFields });

const thresholds = z
  .array(z.number().gt(0).lt(1))
  .min(1)
  .default([1e-2, 1e-3, 1e-4])
  .describe("relative excess loss levels for steps_to_excess");

export const MatrixFactorizationSpec = z.strictObject({
  task: z.literal("matrix_factorization"),
  seed: Seed,
  device: Device,
  matrix: MatrixConfig.prefault({}),
  adapter: adapterSchema({}).prefault({ kind: "op-lora" }),
  optimizer: Optimizer.extend({ name: OptimizerName.default("adam"), lr: z.number().positive().default(3e-3) }).prefault(
    {},
  ),
  train: z
    .strictObject({
      steps: z.int().positive().default(2000),
      log_every: z.int().positive().default(10).describe("record loss and effective rank every N steps"),
    })
    .prefault({}),
  thresholds,
});

const lrList = z.array(z.number().positive()).min(1);

export const MatrixFactorizationStudySpec = z.strictObject({
  task: z.literal("matrix_factorization_study"),
  device: Device,
  seeds: z.array(z.int().nonnegative()).min(1).default([0, 1]),
  matrix: z.strictObject(matrixFields).prefault({ rows: 64, cols: 64 }),
  spectra: z.array(Spectrum).min(1).default(["gaussian", "geometric", "power_law"]),
  r: z.int().positive().default(8),
  generator: GeneratorConfig.prefault({}),
  optimizers: z.array(z.enum(["sgd", "momentum", "adam"])).min(1).default(["sgd", "momentum", "adam"]),
  lr_grid: z
    .strictObject({
      sgd: lrList.default([0.03, 0.1, 0.3, 1]),
      momentum: lrList.default([0.003, 0.01, 0.03, 0.1]),
      adam: lrList.default([3e-4, 1e-3, 3e-3, 1e-2]),
    })
    .prefault({})
    .describe("each arm's learning rates; every arm uses its best, and both arms are also compared per lr"),
  steps: z.int().positive().default(1000),
  log_every: z.int().positive().default(10),
  thresholds,
});
