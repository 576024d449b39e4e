/**
 * Per-task metrics: the `metrics` object a task's `run()` returns, as stored in result.json.
 *
 * Registry: `TASK_METRICS` maps a task name to its metrics schema. A task without an entry gets a loose
 * record, so a new task works before it types its metrics. To type yours, export a `z.looseObject`
 * schema next to your spec (e.g. `TextToImageMetrics` in sdk/spec/text-to-image.ts) and add one line here.
 * Keep the schemas loose: Python may add fields without breaking older SDKs.
 */
import { z } from "zod";
import type { TaskName } from "./spec/index.js";
import { LlavaMetrics } from "./spec/llava.js";
import { TextToImageMetrics } from "./spec/text-to-image.js";

/**
 * Matrix factorisation (one run): design.md section 5. Losses are mean squared errors
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
});

/** The study's metrics are its own (tables of arms x optimizers x spectra); typed loosely here. */
export const MatrixFactorizationStudyMetrics = z.looseObject({});

/** Metrics of a task without a registered schema. */
export const LooseMetrics = z.record(z.string(), z.unknown());

export const TASK_METRICS = {
  matrix_factorization: MatrixFactorizationMetrics,
  matrix_factorization_study: MatrixFactorizationStudyMetrics,
  text_to_image: TextToImageMetrics,
  llava: LlavaMetrics,
} satisfies Partial<Record<TaskName, z.ZodType>>;

type Registered = typeof TASK_METRICS;

/** The metrics type of task `T`. */
export type MetricsOf<T extends TaskName> = T extends keyof Registered
  ? z.output<Registered[T]>
  : z.output<typeof LooseMetrics>;

export function metricsSchemaFor(task: string): z.ZodType {
  return (TASK_METRICS as Record<string, z.ZodType>)[task] ?? LooseMetrics;
}
