import { answer, generate } from "../../use.js";
import { type Command, EXIT, parseCommandArgs, UsageError } from "../command.js";

const GENERATE_HELP = `usage: oplora generate RUN --prompt TEXT --out IMG.png [--seed N] [--steps N] [--guidance G]
                       [--compare]

Images from a text_to_image run: its base pipeline with its LoRA loaded the stock diffusers way
(pipe.load_lora_weights(RUN/diffusers_lora)). --compare puts the base pipeline's image (same seed) on the
left. Steps and guidance default to the run's eval block. Exit 2 when RUN is not a finished text_to_image
run or --out is not a writable .png path.`;

const ANSWER_HELP = `usage: oplora answer RUN --image IMG --question TEXT [--max-new-tokens N]

A LLaVA run's answer: its base model with its adapter loaded the stock PEFT way
(PeftModel.from_pretrained(base, RUN/adapter)), greedy decoding. Exit 2 when RUN is not a finished llava
run or IMG does not exist.`;

function num(v: unknown, flag: string, integer: boolean): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || (integer && !Number.isInteger(n)))
    throw new UsageError(`${flag}: expected ${integer ? "an integer" : "a number"}, got ${String(v)}`);
  return n;
}

function required(values: Record<string, unknown>, flag: string, help: string): string {
  const v = values[flag];
  if (typeof v !== "string" || !v) throw new UsageError(`missing --${flag}\n\n${help}`);
  return v;
}

export const generateCommand: Command = {
  name: "generate",
  summary: "images from a text_to_image run's adapter (optionally beside the base model's)",
  async run(argv) {
    const flags = {
      prompt: { type: "string" },
      out: { type: "string", short: "o" },
      seed: { type: "string" },
      steps: { type: "string" },
      guidance: { type: "string" },
      compare: { type: "boolean" },
    } as const;
    const args = parseCommandArgs(argv, flags, GENERATE_HELP);
    if (!args) return EXIT.ok;
    const [run] = args.positionals;
    if (!run) throw new UsageError(`missing RUN\n\n${GENERATE_HELP}`);
    const r = await generate(run, {
      prompt: required(args.values, "prompt", GENERATE_HELP),
      out: required(args.values, "out", GENERATE_HELP),
      seed: num(args.values.seed, "--seed", true),
      steps: num(args.values.steps, "--steps", true),
      guidance: num(args.values.guidance, "--guidance", false),
      compare: Boolean(args.values.compare),
    });
    process.stdout.write(`${r.image}\n`);
    return EXIT.ok;
  },
};

export const answerCommand: Command = {
  name: "answer",
  summary: "a llava run's answer to a question about an image",
  async run(argv) {
    const flags = {
      image: { type: "string" },
      question: { type: "string" },
      "max-new-tokens": { type: "string" },
    } as const;
    const args = parseCommandArgs(argv, flags, ANSWER_HELP);
    if (!args) return EXIT.ok;
    const [run] = args.positionals;
    if (!run) throw new UsageError(`missing RUN\n\n${ANSWER_HELP}`);
    const r = await answer(run, {
      image: required(args.values, "image", ANSWER_HELP),
      question: required(args.values, "question", ANSWER_HELP),
      maxNewTokens: num(args.values["max-new-tokens"], "--max-new-tokens", true),
    });
    process.stdout.write(`${r.answer}\n`);
    return EXIT.ok;
  },
};
