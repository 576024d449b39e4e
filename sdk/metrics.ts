/**
 * Per-task metrics: the `metrics` object a task's `run()` returns, as stored in result.json.
 *
 * Registry: `TASK_METRICS` maps a task name to its metrics schema. A task without an entry gets a loose
 * record, so a new task works before it types its metrics. To type yours, export a `z.looseObject`
 * schema next to your spec (each task's metrics live in its sdk/spec/<task>.ts, e.g. `TextToImageMetrics`)
 * and add one line here.
 * Keep the schemas loose: Python may add fields without breaking older SDKs.
 */
import { z } from "zod";
import type { TaskName } from "./spec/index.js";
import { LlavaMetrics } from "./spec/llava.js";
import { MatrixFactorizationMetrics, MatrixFactorizationStudyMetrics } from "./spec/matrix-factorization.js";
import { TextToImageMetrics } from "./spec/text-to-image.js";

/** Metrics of a task without a registered schema. */
export const LooseMetrics = z.record(z.string(), z.unknown());

export const TASK_METRICS = {
  matrix_factorization: MatrixFactorizationMetrics,
  matrix_factorization_study: MatrixFactorizationStudyMetrics,
  text_to_image: TextToImageMetrics,
  llava: LlavaMetrics,
} satisfies Partial<Record<TaskName, z.ZodType>>;

/** The metrics type of task `T`. */
export type MetricsOf<T extends TaskName> = T extends keyof typeof TASK_METRICS
  ? z.output<(typeof TASK_METRICS)[T]>
  : z.output<typeof LooseMetrics>;

export function metricsSchemaFor(task: string): z.ZodType {
  return (TASK_METRICS as Record<string, z.ZodType>)[task] ?? LooseMetrics;
}

/**
 * `tail_loss`'s window: the mean training loss of the last min(TAIL_STEPS, steps) steps. Python computes
 * the metric (TAIL_STEPS in python/oplora/tasks/text_to_image/task.py, which this must equal); the SDK's
 * search reports the same mean to its pruner (sweep/search.ts `tailLoss`).
 */
export const TAIL_STEPS = 10;

/**
 * The headline scalars of each task, in the order `listRuns` / `oplora runs` show them: matrix
 * factorisation `relative_excess` (0 at the Eckart-Young optimum) and `final_loss`; text-to-image
 * `final_loss`, `tail_loss` (the mean loss of the last 10 steps) and `cmmd`; LLaVA `final_loss`, `eval_loss`
 * and `vqa_accuracy`. A task without an entry (the MF study: its metrics are tables) shows none.
 */
export const KEY_METRICS: { readonly [T in keyof typeof TASK_METRICS]?: readonly (keyof MetricsOf<T>)[] } = {
  matrix_factorization: ["relative_excess", "final_loss"],
  text_to_image: ["final_loss", "tail_loss", "cmmd"],
  llava: ["final_loss", "eval_loss", "vqa_accuracy"],
};

export function keyMetricsFor(task: string): readonly string[] {
  return ((KEY_METRICS as Record<string, readonly string[] | undefined>)[task] ?? []) as readonly string[];
}
