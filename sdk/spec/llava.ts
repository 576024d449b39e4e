/**
 * Vision-language: LoRA / OP-LoRA fine-tuning of a LLaVA model (transformers' `LlavaForConditionalGeneration`)
 * on LLaVA conversation data, evaluated by eval loss and VQA accuracy (VQAv2 rule), exported as a PEFT
 * adapter dir (optionally merged full weights too).
 */
import { z } from "zod";
import { adapterSchema, Device, Optimizer, PeakMemoryBytes, PeakTensorBytes, Seed } from "./common.js";
import { dataSource, datasetSplit } from "./data-source.js";
import { TrainingConfig } from "./training.js";

export const LlavaModel = z.strictObject({
  pretrained: z.string().min(1).describe("LLaVA model + processor: hub id or local folder (from_pretrained)"),
  revision: z.string().min(1).optional().describe("hub revision (branch, tag or commit)"),
  dtype: z
    .enum(["float32", "bfloat16", "float16"])
    .default("float32")
    .describe("dtype of the frozen base weights (adapter weights stay float32)"),
});

export const LlavaAdapter = adapterSchema({
  target_modules: z
    .union([z.string().min(1), z.array(z.string().min(1)).min(1)])
    .optional()
    .describe(
      "PEFT target_modules: a regex (full match) or module-name suffixes; default: every linear layer of the " +
        "language model (not the vision tower, projector or lm_head)",
    ),
  lora_dropout: z.number().min(0).lt(1).default(0),
  train_projector: z
    .boolean()
    .default(false)
    .describe("also train the multi-modal projector in full (saved as PEFT modules_to_save)"),
});

const textOptions = {
  max_length: z.int().positive().default(2048).describe("truncate token sequences to this length"),
  pad_to_square: z
    .boolean()
    .default(true)
    .describe("pad images to a square with the mean colour, as LLaVA does"),
  max_eval_examples: z.int().positive().optional().describe("evaluate on the first N eval records only"),
};

export const LlavaJsonData = z.strictObject({
  train_json: z
    .string()
    .min(1)
    .describe("LLaVA conversation JSON: [{id, image, conversations: [{from, value}]}]"),
  image_folder: z.string().min(1).optional().describe("folder the records' `image` paths are relative to"),
  eval_json: z.string().min(1).optional().describe("held-out records (same format; `answers` optional)"),
  eval_image_folder: z.string().min(1).optional().describe("default: image_folder"),
  ...textOptions,
});

/** A Hugging Face `datasets` source of single-turn VQA rows: `<image>` + question -> answer. */
export const LlavaDatasetData = z.strictObject({
  ...datasetSplit,
  eval_split: z.string().min(1).optional().describe("a held-out split for eval loss and VQA accuracy"),
  question_column: z.string().min(1).default("question").describe("column holding the question (user turn)"),
  answer_column: z
    .string()
    .min(1)
    .default("answer")
    .describe(
      "column holding the answer (assistant turn and VQA reference), or a list of reference answers " +
        "(the most common one is trained on)",
    ),
  ...textOptions,
});

export const LlavaData = dataSource(
  ["train_json", LlavaJsonData],
  ["dataset_name", LlavaDatasetData],
).describe("LLaVA conversation JSON (`train_json`) or a datasets split (`dataset_name`)");

export const LlavaEval = z.strictObject({
  batch_size: z.int().positive().default(4),
  vqa: z.boolean().default(true).describe("generate answers and score them (VQAv2 accuracy)"),
  max_new_tokens: z.int().positive().default(16),
});

export const LlavaExport = z.strictObject({
  merged: z
    .boolean()
    .default(false)
    .describe("also write merged full weights (merge_and_unload + save_pretrained)"),
  reference_logits: z
    .boolean()
    .default(false)
    .describe("save the trained model's logits on the first eval batch (to check a reloaded adapter)"),
});

export const LlavaSpec = z.strictObject({
  task: z.literal("llava"),
  seed: Seed,
  device: Device,
  model: LlavaModel,
  adapter: LlavaAdapter.prefault({ kind: "op-lora" }),
  data: LlavaData,
  optimizer: Optimizer.extend({
    lr: z.number().positive().default(2e-4),
    projector_lr: z.number().positive().optional().describe("learning rate of the projector (default: lr)"),
  }).prefault({}),
  train: TrainingConfig.prefault({}),
  eval: LlavaEval.prefault({}),
  export: LlavaExport.prefault({}),
  check_memory: z
    .boolean()
    .default(true)
    .describe("refuse before loading weights when the estimated training memory exceeds the device's"),
});

/** What a llava run returns (result.json `metrics`); loose, so Python may add fields. */
export const LlavaMetrics = z.looseObject({
  loss_curve: z.array(z.looseObject({ step: z.int(), loss: z.number() })).describe("training loss per step"),
  final_loss: z.number().nullable(),
  eval_loss: z.number().optional().describe("token-weighted loss on the eval records' assistant tokens"),
  vqa_accuracy: z.number().optional().describe("VQAv2 accuracy of greedy answers (0..1)"),
  evals: z.array(
    z.looseObject({ step: z.int(), eval_loss: z.number(), vqa_accuracy: z.number().optional() }),
  ),
  predictions_path: z
    .string()
    .optional()
    .describe("final per-question predictions (JSON lines), run-dir relative"),
  adapter_path: z.string().describe("PEFT adapter dir, run-dir relative"),
  merged_path: z.string().optional().describe("merged full weights, when export.merged"),
  target_modules: z.union([z.string(), z.array(z.string())]),
  lora_parameters: z.int(),
  generator_parameters: z.int(),
  trainable_parameters: z.int(),
  plan: z.looseObject({}).describe("the memory plan the run checked before loading weights"),
  peak_memory_bytes: PeakMemoryBytes,
  peak_tensor_bytes: PeakTensorBytes.optional(),
  tokens: z.int(),
  tokens_per_second: z.number().nullable(),
  train_s: z.number(),
  wall_s: z.number(),
});

// The types of the schemas above (what validateSpec returns / what result.json holds).
export type LlavaSpec = z.output<typeof LlavaSpec>;
export type LlavaMetrics = z.output<typeof LlavaMetrics>;
