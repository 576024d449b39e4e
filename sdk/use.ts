/**
 * Using what a run trained, the stock way (python/oplora/use/):
 *
 *   await generate("runs/sd", { prompt: "a red circle", out: "img.png", compare: true })
 *       text_to_image: the run's base pipeline + `pipe.load_lora_weights(run/diffusers_lora)`
 *   await answer("runs/llava", { image: "photo.jpg", question: "What color is it?" })
 *       llava: the run's base model + `PeftModel.from_pretrained(base, run/adapter)`, greedy decoding
 *
 * A run of the wrong task, one without spec.json, or one whose adapter files are missing is refused with
 * an InputError naming the file, before any model loads. Each call is one Python process.
 */
import { resolve } from "node:path";
import { z } from "zod";
import { PythonProcess } from "./bridge/process.js";
import { type PythonOptions, resolvePython } from "./bridge/python.js";
import { InputError, ProcessCrashedError, ProtocolError } from "./errors.js";

export interface GenerateOptions extends PythonOptions {
  prompt: string;
  /** The PNG to write (base | adapter side by side with `compare`). */
  out: string;
  /** Seed of the CPU noise generator (default 0): the same seed gives the same image. */
  seed?: number | undefined;
  /** Inference steps and guidance scale (default: the run's `eval` block). */
  steps?: number | undefined;
  guidance?: number | undefined;
  /** Also the base pipeline's image at the same seed, on the left. */
  compare?: boolean | undefined;
}

export const GenerateResult = z.object({
  image: z.string(),
  compare: z.boolean(),
  prompt: z.string(),
  seed: z.number().int(),
});
export type GenerateResult = z.infer<typeof GenerateResult>;

export interface AnswerOptions extends PythonOptions {
  /** An image file (PNG, JPEG, ...). */
  image: string;
  question: string;
  /** Default 32. */
  maxNewTokens?: number | undefined;
}

export const AnswerResult = z.object({ answer: z.string(), question: z.string() });
export type AnswerResult = z.infer<typeof AnswerResult>;

async function callPython<T>(
  runDir: string,
  args: string[],
  schema: z.ZodType<T>,
  options: PythonOptions,
): Promise<T> {
  const proc = new PythonProcess({
    python: resolvePython(options),
    args: ["-m", "oplora", ...args],
    onMessage: () => undefined,
  });
  const exit = await proc.exit;
  const stderr = proc.stderr.toString();
  if (exit.exitCode === 2) {
    const said = stderr
      .split("\n")
      .filter((l) => l.startsWith("oplora: "))
      .map((l) => l.slice(8));
    throw new InputError(said.join("\n") || stderr.trim(), runDir);
  }
  if (exit.exitCode !== 0) throw new ProcessCrashedError(exit.exitCode, exit.signal, stderr, runDir);
  const last = proc.stdout.toString().trim().split("\n").at(-1) ?? "";
  const parsed = schema.safeParse(
    (() => {
      try {
        return JSON.parse(last);
      } catch {
        return undefined;
      }
    })(),
  );
  if (!parsed.success)
    throw new ProtocolError(`python -m oplora ${args[0]}: unexpected output ${last.slice(0, 200)}`);
  return parsed.data;
}

/** Images from a text_to_image run (see the module comment). */
export function generate(runDir: string, options: GenerateOptions): Promise<GenerateResult> {
  const dir = resolve(runDir);
  const args = ["generate", dir, "--prompt", options.prompt, "--out", resolve(options.out)];
  if (options.seed !== undefined) args.push("--seed", String(options.seed));
  if (options.steps !== undefined) args.push("--steps", String(options.steps));
  if (options.guidance !== undefined) args.push("--guidance", String(options.guidance));
  if (options.compare) args.push("--compare");
  return callPython(dir, args, GenerateResult, options);
}

/** A LLaVA run's answer to a question about an image (see the module comment). */
export function answer(runDir: string, options: AnswerOptions): Promise<AnswerResult> {
  const dir = resolve(runDir);
  const args = ["answer", dir, "--image", resolve(options.image), "--question", options.question];
  if (options.maxNewTokens !== undefined) args.push("--max-new-tokens", String(options.maxNewTokens));
  return callPython(dir, args, AnswerResult, options);
}
