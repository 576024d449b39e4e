/**
 * The training block shared by the model tasks (text_to_image, llava): steps, batching, schedule,
 * precision, checkpoints and processes. Keys are snake_case, as in diffusers' and accelerate's own options.
 * The optimizer block is `Optimizer` from common.ts.
 */
import { z } from "zod";

export const LrScheduler = z.enum(["constant", "linear", "cosine"]);
export const MixedPrecision = z.enum(["no", "fp16", "bf16"]);
/** accelerate's tracker names (diffusers' scripts' `--report_to`); tested: tensorboard, wandb (offline). */
export const ReportTo = z
  .array(
    z.enum(["tensorboard", "wandb", "trackio", "mlflow", "comet_ml", "aim", "clearml", "dvclive", "swanlab"]),
  )
  .default([])
  .describe(
    "experiment trackers fed the run's loss, lr, eval metrics and sample images (accelerate's trackers; " +
      "one tracker run per run or sweep trial, named after it, with the trial's axes as config). " +
      "TensorBoard logs go to <run>/tracking/tensorboard/; set WANDB_MODE=offline to keep wandb local",
  );

export const TrainingConfig = z
  .strictObject({
    steps: z.int().positive().default(1000).describe("optimizer steps in total"),
    batch_size: z.int().positive().default(1).describe("examples per micro-batch, per process"),
    gradient_accumulation_steps: z.int().positive().default(1).describe("micro-batches per optimizer step"),
    lr_scheduler: LrScheduler.default("constant").describe("learning-rate schedule after warm-up"),
    lr_warmup_steps: z.int().nonnegative().default(0).describe("linear warm-up from 0, in optimizer steps"),
    max_grad_norm: z.number().positive().default(1).describe("clip the gradient norm to this value"),
    mixed_precision: MixedPrecision.default("no").describe("autocast dtype ('no' = fp32)"),
    gradient_checkpointing: z
      .boolean()
      .default(false)
      .describe("non-reentrant activation checkpointing (saves memory, costs time)"),
    checkpoint_every: z
      .int()
      .nonnegative()
      .default(0)
      .describe("save a resumable checkpoint every N steps (0 = off)"),
    eval_every: z.int().nonnegative().default(0).describe("evaluate every N steps (0 = only at the end)"),
    log_every: z.int().positive().default(1).describe("emit a step event every N steps"),
    num_processes: z
      .int()
      .positive()
      .default(1)
      .describe("data-parallel processes; > 1 re-runs the spec under `accelerate launch`"),
    dataloader_num_workers: z.int().nonnegative().default(0).describe("worker processes per data loader"),
    report_to: ReportTo,
  })
  .describe("training loop settings");

export type TrainingConfig = z.output<typeof TrainingConfig>;
