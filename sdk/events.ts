/**
 * Typed run events: NDJSON lines Python writes to the events pipe and to `DIR/events.ndjson`
 * (python/oplora/events.py). A discriminated union on `type`; objects stay loose, so a task may add
 * fields (`step` carries `lr`, `metrics` and whatever else the task reports).
 */
import { z } from "zod";
import { Artifact, PythonErrorSchema, RunResult } from "./result.js";

const base = { seq: z.int().nonnegative(), time: z.number() };

export const StartedEvent = z.looseObject({
  type: z.literal("started"),
  ...base,
  task: z.string(),
  run_dir: z.string(),
  pid: z.int(),
  device: z.string().nullable(),
  versions: z.record(z.string(), z.string().nullable()),
});

/**
 * What the run is doing before its first step: `loading` (importing torch and the task; `started` comes
 * before it, so its `device` is null), then `running` on `device`.
 */
export const PhaseEvent = z.looseObject({
  type: z.literal("phase"),
  ...base,
  phase: z.enum(["loading", "running"]),
  device: z.string().nullable().optional(),
});

export const StepEvent = z.looseObject({
  type: z.literal("step"),
  ...base,
  step: z.int().nonnegative(),
  total_steps: z.int().nonnegative(),
  loss: z.number().nullable(),
  lr: z.number().optional(),
  metrics: z.record(z.string(), z.unknown()).optional(),
});

export const EvalEvent = z.looseObject({
  type: z.literal("eval"),
  ...base,
  step: z.int().nonnegative(),
  metrics: z.record(z.string(), z.unknown()),
});

/** `path` is relative to the run directory. */
export const CheckpointEvent = z.looseObject({
  type: z.literal("checkpoint"),
  ...base,
  step: z.int().nonnegative(),
  path: z.string(),
});

/** A spec value that runs but is likely a mistake (e.g. a warm-up as long as the run); the run goes on. */
export const WarningEvent = z.looseObject({
  type: z.literal("warning"),
  ...base,
  field: z.string(),
  message: z.string(),
});

export const ArtifactEvent = z.looseObject({ type: z.literal("artifact"), ...base, ...Artifact.shape });

export const CompletedEvent = z.looseObject({ type: z.literal("completed"), ...base, result: RunResult });

export const ErrorEvent = z.looseObject({ type: z.literal("error"), ...base, error: PythonErrorSchema });

export const CancelledEvent = z.looseObject({
  type: z.literal("cancelled"),
  ...base,
  step: z.int().nonnegative().nullable().optional(),
});

export const RunEvent = z.discriminatedUnion("type", [
  StartedEvent,
  PhaseEvent,
  StepEvent,
  EvalEvent,
  CheckpointEvent,
  ArtifactEvent,
  WarningEvent,
  CompletedEvent,
  ErrorEvent,
  CancelledEvent,
]);

export type RunEvent = z.output<typeof RunEvent>;
export type RunEventType = RunEvent["type"];
/** The event of one `type`, e.g. `EventOf<"step">`. */
export type EventOf<T extends RunEventType> = Extract<RunEvent, { type: T }>;
