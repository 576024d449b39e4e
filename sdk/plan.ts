/**
 * Before a run: `plan(spec)` (layer count, shape groups, LoRA and generator parameters, training memory and
 * whether it fits the device) and `listTargetModules({model, task})` (what `target_modules` may name).
 * Both run in Python (python/oplora/plan.py, quick.py) through the quick lane; nothing loads weights.
 */
import { z } from "zod";
import type { PythonOptions } from "./bridge/python.js";
import { type CallOptions, quickBridge } from "./bridge/quick.js";
import type { SpecInput } from "./spec/index.js";
import { validateSpec } from "./spec/validate.js";

export const ShapeGroup = z.looseObject({
  lora_A_shape: z.array(z.int()),
  lora_B_shape: z.array(z.int()),
  layers: z.int(),
  lora_parameters_per_layer: z.int(),
  generator_parameters_per_layer: z.int(),
});

export const Plan = z.looseObject({
  task: z.string(),
  adapter_kind: z.enum(["lora", "op-lora"]),
  layers: z.int(),
  groups: z.array(ShapeGroup),
  lora_parameters: z.int(),
  generator_parameters: z.int(),
  trainable_parameters: z.int(),
  base_parameters: z.int(),
  memory_bytes: z.looseObject({
    base_weights: z.number(),
    trainable_state: z.number(),
    lora_weights: z.number(),
    generated_factors: z.number(),
    gradients_after_peak: z.number().nonpositive(),
    total: z.number(),
  }),
  memory_formula: z
    .record(z.string(), z.string())
    .describe(
      "how each memory_bytes term is computed (a task adds its own: held tensors, activations, transients); the total is the tensors of a training step at its peak",
    ),
  device: z.string(),
  device_memory_bytes: z.number().nullable(),
  fits: z.boolean(),
  message: z.string(),
});
export type Plan = z.output<typeof Plan>;

/** Counts and a memory estimate for `spec` (validated first: an invalid spec throws SpecInvalidError). */
export function plan(spec: SpecInput, options: PythonOptions & CallOptions = {}): Promise<Plan> {
  const valid = validateSpec(spec);
  return quickBridge(options).call("plan", { spec: valid }, Plan, options);
}

export const TargetModule = z.looseObject({ name: z.string(), type: z.string(), shape: z.array(z.int()) });
export const TargetModules = z.looseObject({
  model: z.string().nullable(),
  component: z.string().nullable(),
  modules: z.array(TargetModule),
  suffixes: z
    .record(z.string(), z.int())
    .describe("last name component -> count (what target_modules matches)"),
});
export type TargetModules = z.output<typeof TargetModules>;

/** A model's LoRA-targetable modules (Linear, Conv, Embedding), built on the meta device from its config. */
export function listTargetModules(
  query: { model?: string | undefined; task?: string | undefined },
  options: PythonOptions & CallOptions = {},
): Promise<TargetModules> {
  const args = {
    ...(query.model !== undefined && { model: query.model }),
    ...(query.task !== undefined && { task: query.task }),
  };
  return quickBridge(options).call("list_target_modules", args, TargetModules, {
    timeoutMs: 120_000,
    ...options,
  });
}
