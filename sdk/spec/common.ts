/**
 * Spec pieces every task shares. Keys are snake_case and match PEFT's `adapter_config.json`
 * (`r`, `lora_alpha`, `target_modules`), so the JSON that crosses the bridge needs no mapping layer.
 */
import { z } from "zod";

export const Device = z
  .string()
  .regex(/^(auto|cpu|cuda(:\d+)?)$/, { error: "expected 'auto', 'cpu', 'cuda' or 'cuda:N'" })
  .default("auto")
  .describe("torch device: 'auto' picks CUDA when available");

export const Seed = z.int().nonnegative().default(0).describe("random seed for everything in the run");

/** The OP-LoRA generator: per layer, embedding z -> Linear(e->h) -> ReLU -> A head, B head. */
export const GeneratorConfig = z
  .strictObject({
    embedding_dim: z.int().positive().default(128).describe("e: size of each layer's learned embedding z"),
    hidden_dim: z.int().positive().default(32).describe("h: hidden width of each layer's MLP"),
    init_std: z.number().positive().default(0.01).describe("z ~ N(0, init_std^2) at initialisation"),
    formulation: z
      .enum(["auto", "batched", "loop"])
      .default("auto")
      .describe("how the factors are computed: batched per shape group, or a per-layer loop"),
    magnitude: z
      .enum(["generated", "direct"])
      .default("direct")
      .describe(
        "with adapter.use_dora: 'direct' (default; lower or equal loss at each mode's best lr on our benches, fewer parameters) trains PEFT's magnitude vector as a plain parameter; 'generated' makes it a third head of each layer's MLP (zero weights, bias = PEFT's initial magnitude, so step 0 is the base model)",
      ),
  })
  .describe("OP-LoRA generator (only with adapter.kind = 'op-lora')");

const loraFields = {
  r: z.int().positive().default(8).describe("LoRA rank"),
  lora_alpha: z.number().positive().optional().describe("LoRA alpha; scaling = lora_alpha / r (default: r)"),
  use_rslora: z
    .boolean()
    .default(false)
    .describe("rsLoRA (Kalajdzievski 2023): scaling = lora_alpha / sqrt(r) instead of lora_alpha / r"),
  use_dora: z
    .boolean()
    .default(false)
    .describe(
      "DoRA (Liu et al. 2024, PEFT's use_dora): W' = m * (W + dW) / ||W + dW||_c with a trained magnitude vector m per output; with op-lora see generator.magnitude",
    ),
};

export const LoraAdapter = z.strictObject({ kind: z.literal("lora"), ...loraFields });
export const OPLoraAdapter = z.strictObject({
  kind: z.literal("op-lora"),
  ...loraFields,
  generator: GeneratorConfig.prefault({}),
});

/**
 * The adapter union for a task: `lora` (A, B learned directly) or `op-lora` (A, B generated).
 * `extra` adds task-specific PEFT fields (target_modules with the task's default, dropout, ...).
 */
export function adapterSchema<T extends z.ZodRawShape>(extra: T) {
  return z.discriminatedUnion("kind", [LoraAdapter.extend(extra), OPLoraAdapter.extend(extra)]);
}

export const OptimizerName = z.enum(["sgd", "momentum", "adam", "adamw"]);

export const Optimizer = z.strictObject({
  name: OptimizerName.default("adamw"),
  lr: z.number().positive().default(1e-3).describe("learning rate"),
  momentum: z.number().min(0).max(1).default(0.9).describe("momentum (optimizer 'momentum' only)"),
  weight_decay: z.number().min(0).default(0),
});

/** Every task's `peak_tensor_bytes` metric, present with OPLORA_PEAK_TENSOR_BYTES=1 on the CPU
 * (python/oplora/training/loop.py `peak_tensor_bytes`). */
export const PeakTensorBytes = z
  .int()
  .nonnegative()
  .describe(
    "CPU runs with OPLORA_PEAK_TENSOR_BYTES=1 only: the peak bytes held by tensors allocated after the RSS baseline of peak_memory_bytes (torch.profiler's memory events: every CPU allocation and free with its size), i.e. what the run's tensors occupied, without library code or allocator arenas",
  );

/** Every task's `peak_memory_bytes` metric (python/oplora/training/loop.py `peak_memory_bytes`). */
export const PeakMemoryBytes = z
  .int()
  .nonnegative()
  .describe(
    "peak memory of the run: on CUDA the allocator's peak (torch.cuda.max_memory_allocated: weights, optimizer state, activations; not the CUDA context or cached blocks); on the CPU the peak resident set size minus the RSS just before the model was built (after torch and the task's libraries were imported), i.e. what this run added",
  );
