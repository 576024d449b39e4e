/** The spec union: one schema per `task`, discriminated on `task`. Types are inferred, never written twice. */
import { z } from "zod";
import { LlavaSpec } from "./llava.js";
import { MatrixFactorizationSpec, MatrixFactorizationStudySpec } from "./matrix-factorization.js";
import { TextToImageSpec } from "./text-to-image.js";

export * from "./common.js";
export * from "./llava.js";
export * from "./matrix-factorization.js";
export * from "./text-to-image.js";
export * from "./training.js";

export const Spec = z.discriminatedUnion("task", [
  MatrixFactorizationSpec,
  MatrixFactorizationStudySpec,
  TextToImageSpec,
  LlavaSpec,
]);

/** What a user writes (defaults optional). */
export type SpecInput = z.input<typeof Spec>;
/** What the SDK sends to Python and records in spec.json (defaults filled in). */
export type Spec = z.output<typeof Spec>;
export type TaskName = Spec["task"];
/** The spec of task `T`, defaults filled in (what `validateSpec` returns for a literal `task`). */
export type SpecOf<T extends TaskName> = Extract<Spec, { task: T }>;
/** What a user writes for task `T`. */
export type SpecInputOf<T extends TaskName> = Extract<SpecInput, { task: T }>;
