/**
 * `RunResult`: DIR/result.json, written once at the end of every run (by Python, or by the SDK when the
 * process died before it could). `metrics` is typed per task (sdk/metrics.ts), discriminated on `task`.
 * Paths inside (artifacts) are relative to `run_dir`.
 */
import { z } from "zod";
import { type MetricsOf, metricsSchemaFor } from "./metrics.js";
import { Spec, type TaskName } from "./spec/index.js";

export const PythonErrorSchema = z.looseObject({
  type: z.string(),
  message: z.string(),
  traceback: z.string().default(""),
});

export const ArtifactKind = z.enum([
  "adapter",
  "diffusers_lora",
  "image",
  "grid",
  "plot",
  "table",
  "predictions",
  "checkpoint",
  "file",
]);

/** One file a run produced; `path` is relative to the run directory. */
export const Artifact = z.looseObject({
  kind: ArtifactKind,
  path: z.string(),
  step: z.int().nonnegative().optional(),
  label: z.string().optional(),
});

export type Artifact = z.output<typeof Artifact>;
export type ArtifactKind = z.output<typeof ArtifactKind>;

export const RunStatus = z.enum(["succeeded", "failed", "cancelled"]);

const common = {
  status: RunStatus,
  run_dir: z.string(),
  artifacts: z.array(Artifact),
  error: PythonErrorSchema.nullable(),
  versions: z.record(z.string(), z.string().nullable()),
  device: z.string().nullable(),
  timing: z.looseObject({ started_at: z.string(), finished_at: z.string(), wall_s: z.number() }).optional(),
};

const taskNames = Spec.options.map((o) => o.shape.task.value) as TaskName[];

function resultFor(task: TaskName) {
  return z.looseObject({ ...common, task: z.literal(task), metrics: metricsSchemaFor(task).nullable() });
}

/** The fields result.json has for every task. */
export type RunResultBase = z.output<z.ZodObject<typeof common>>;

/** result.json for task `T`. */
export type RunResultOf<T extends TaskName> = T extends TaskName
  ? RunResultBase & { task: T; metrics: MetricsOf<T> | null }
  : never;
/** result.json of any task; narrow on `task` to get that task's metrics. */
export type RunResult = RunResultOf<TaskName>;
/** What `await run(...)` gives: a succeeded run of task `T`, its metrics always present. */
export type SucceededResultOf<T extends TaskName> = T extends TaskName
  ? RunResultOf<T> & { status: "succeeded"; metrics: MetricsOf<T> }
  : never;
export type RunStatus = z.output<typeof RunStatus>;

const [first, ...rest] = taskNames.map(resultFor);
export const RunResult = z.discriminatedUnion("task", [
  first as ReturnType<typeof resultFor>,
  ...rest,
]) as unknown as z.ZodType<RunResult>;

/** Scalar metrics, one level of nested objects flattened into dotted keys (`steps_to_excess.1e-3`). */
export function scalarMetrics(metrics: unknown): Record<string, number | string | boolean | null> {
  const out: Record<string, number | string | boolean | null> = {};
  if (!metrics || typeof metrics !== "object") return out;
  const scalar = (v: unknown): v is number | string | boolean | null =>
    v === null || ["number", "string", "boolean"].includes(typeof v);
  for (const [k, v] of Object.entries(metrics)) {
    if (scalar(v)) out[k] = v;
    else if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) if (scalar(v2)) out[`${k}.${k2}`] = v2;
    }
  }
  return out;
}
