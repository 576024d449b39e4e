/**
 * Text-to-image: LoRA / OP-LoRA fine-tuning of a Stable Diffusion 1.x/2.x or SDXL pipeline (detected from
 * the loaded pipeline, so one spec shape serves both), trained as diffusers' own LoRA scripts do, evaluated
 * with validation images and CMMD, exported as a PEFT adapter dir and a diffusers `pytorch_lora_weights`.
 */
import { z } from "zod";
import { adapterSchema, Device, Optimizer, PeakMemoryBytes, PeakTensorBytes, Seed } from "./common.js";
import { dataSource, datasetSplit } from "./data-source.js";
import { TrainingConfig } from "./training.js";

export const TextToImageModel = z.strictObject({
  pretrained: z.string().min(1).describe("diffusers pipeline: hub id or local folder (from_pretrained)"),
  revision: z.string().min(1).optional().describe("hub revision (branch, tag or commit)"),
  variant: z.string().min(1).optional().describe("weights variant, e.g. 'fp16'"),
  vae: z.string().min(1).optional().describe("a separate VAE (hub id or folder), e.g. the fp16-fix SDXL VAE"),
  prediction_type: z
    .enum(["epsilon", "v_prediction"])
    .optional()
    .describe("override the noise scheduler's prediction type (default: the pipeline's)"),
});

export const TextToImageAdapter = adapterSchema({
  target_modules: z
    .array(z.string().min(1))
    .min(1)
    .default(["to_k", "to_q", "to_v", "to_out.0"])
    .describe("UNet modules to adapt (PEFT target_modules)"),
  lora_dropout: z.number().min(0).lt(1).default(0),
  train_text_encoder: z.boolean().default(false).describe("also adapt the text encoder(s)"),
  text_encoder_target_modules: z
    .array(z.string().min(1))
    .min(1)
    .default(["q_proj", "k_proj", "v_proj", "out_proj"])
    .describe("text-encoder modules to adapt (with train_text_encoder)"),
});

const imageOptions = {
  resolution: z.int().positive().default(512).describe("training resolution (square), in pixels"),
  center_crop: z.boolean().default(false).describe("centre crop (default: random crop)"),
  random_flip: z.boolean().default(false).describe("flip horizontally with probability 0.5"),
  max_examples: z.int().positive().optional().describe("use only the first N examples"),
};

export const TextToImageFolderData = z.strictObject({
  folder: z.string().min(1).describe("imagefolder: images + metadata.jsonl lines {file_name, text}"),
  image_column: z.string().min(1).default("file_name").describe("metadata key naming each image file"),
  caption_column: z.string().min(1).default("text").describe("metadata key holding each caption"),
  ...imageOptions,
});

/** A Hugging Face `datasets` source, named as diffusers' train_text_to_image_lora.py names its options. */
export const TextToImageDatasetData = z.strictObject({
  ...datasetSplit,
  caption_column: z.string().min(1).default("text").describe("column holding the captions"),
  ...imageOptions,
});

export const TextToImageData = dataSource(
  ["folder", TextToImageFolderData],
  ["dataset_name", TextToImageDatasetData],
).describe("an imagefolder (`folder`) or a datasets split (`dataset_name`)");

export const TextToImageEval = z.strictObject({
  prompts: z.array(z.string()).default([]).describe("validation prompts: images saved as PNGs and a grid"),
  num_images_per_prompt: z.int().positive().default(1),
  num_inference_steps: z.int().positive().default(30),
  guidance_scale: z.number().min(0).default(7.5),
  reference_folder: z
    .string()
    .min(1)
    .optional()
    .describe("held-out images (+ metadata.jsonl captions) for CMMD; off when absent"),
  reference_split: z
    .string()
    .min(1)
    .optional()
    .describe("a held-out split of data.dataset_name (images + captions) for CMMD; off when absent"),
  cmmd_num_images: z
    .int()
    .positive()
    .default(16)
    .describe("images generated (from reference captions) for CMMD"),
  clip_model: z
    .string()
    .min(1)
    .default("openai/clip-vit-large-patch14-336")
    .describe("CLIP model for CMMD embeddings (hub id or folder)"),
});

export const TextToImageTraining = TrainingConfig.extend({
  snr_gamma: z
    .number()
    .positive()
    .optional()
    .describe("Min-SNR loss weighting gamma (Hang et al. 2023); off when absent"),
  noise_offset: z.number().min(0).default(0).describe("offset noise strength (0 = off)"),
});

export const TextToImageSpec = z.strictObject({
  task: z.literal("text_to_image"),
  seed: Seed,
  device: Device,
  model: TextToImageModel,
  adapter: TextToImageAdapter.prefault({ kind: "op-lora" }),
  data: TextToImageData,
  optimizer: Optimizer.extend({ lr: z.number().positive().default(1e-4) }).prefault({}),
  train: TextToImageTraining.prefault({}),
  eval: TextToImageEval.prefault({}),
});

/** What a `text_to_image` run returns in `result.metrics` (paths relative to the run directory). */
export const TextToImageMetrics = z.looseObject({
  model_kind: z.enum(["sd", "sdxl"]),
  steps: z.int(),
  resumed_from_step: z.int().nullable(),
  final_loss: z.number().nullable().describe("the last step's training loss (one batch)"),
  tail_loss: z
    .number()
    .nullable()
    .describe("mean training loss over the last min(10, steps) steps (a steadier objective than final_loss)"),
  loss_curve: z
    .array(z.looseObject({ step: z.int(), loss: z.number().nullable() }))
    .describe("training loss per step"),
  cmmd: z
    .number()
    .nullable()
    .optional()
    .describe(
      "final CMMD vs the reference set: 1000 x MMD^2 (biased) between L2-normalised CLIP ViT-L/14@336 image embeddings, Gaussian RBF kernel, sigma 10",
    ),
  cmmd_num_reference: z.int().optional(),
  cmmd_num_generated: z.int().optional(),
  cmmd_curve: z
    .array(z.looseObject({ step: z.int(), cmmd: z.number().nullable() }))
    .describe("CMMD at each eval"),
  samples: z.array(z.string()).optional().describe("final validation images"),
  grid: z.string().optional().describe("final validation image grid"),
  adapter_dir: z.string().describe("PEFT adapter dirs (adapter/unet, adapter/text_encoder*)"),
  adapter_dirs: z
    .record(z.string(), z.string())
    .describe("PEFT adapter dir per component (unet, text_encoder, ...)"),
  diffusers_lora: z
    .string()
    .describe("the diffusers LoRA file (pytorch_lora_weights.safetensors, with metadata)"),
  lora_parameters: z.int(),
  generator_parameters: z.int(),
  trainable_parameters: z.int(),
  peak_memory_bytes: PeakMemoryBytes,
  peak_tensor_bytes: PeakTensorBytes.optional(),
  train_s: z.number(),
  steps_per_s: z.number().nullable(),
  num_processes: z.int(),
  wall_s: z.number(),
});

// The types of the schemas above (what validateSpec returns / what result.json holds).
export type TextToImageSpec = z.output<typeof TextToImageSpec>;
export type TextToImageMetrics = z.output<typeof TextToImageMetrics>;
