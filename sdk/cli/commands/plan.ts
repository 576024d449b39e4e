import { closePython } from "../../bridge/quick.js";
import { plan } from "../../plan.js";
import { type Command, EXIT, parseCommandArgs, readJsonFile, UsageError } from "../command.js";

const HELP = `usage: oplora plan SPEC.json [--json]

What the spec will cost before it runs: adapted layers, shape groups, LoRA and generator parameters,
estimated training memory (the tensors of a training step at its peak, activations included; each term
with its formula) and
whether it fits the device. Exit 1 when it does not fit.`;

function bytes(n: number): string {
  const sign = n < 0 ? "-" : ""; // gradients_after_peak is a deduction
  for (const [unit, scale] of [
    ["GiB", 2 ** 30],
    ["MiB", 2 ** 20],
    ["KiB", 2 ** 10],
  ] as const) {
    if (Math.abs(n) >= scale) return `${sign}${(Math.abs(n) / scale).toPrecision(3)} ${unit}`;
  }
  return `${n} B`;
}

function termRank(key: string): number {
  return key === "total" ? 2 : key === "gradients_after_peak" ? 1 : 0;
}

export const planCommand: Command = {
  name: "plan",
  summary: "parameter counts and memory estimate for a spec",
  async run(argv) {
    const args = parseCommandArgs(argv, { json: { type: "boolean" } }, HELP);
    if (!args) return EXIT.ok;
    if (args.positionals.length !== 1) throw new UsageError(`expected one SPEC.json\n\n${HELP}`);
    const spec = readJsonFile(args.positionals[0]);
    try {
      const p = await plan(spec as never);
      if (args.values.json) {
        process.stdout.write(`${JSON.stringify(p, null, 2)}\n`);
      } else {
        const n = (x: number) => x.toLocaleString("en-US");
        const lines = [
          `${p.task} (${p.adapter_kind}): ${p.layers} adapted layer(s) in ${p.groups.length} shape group(s)`,
          ...p.groups.map(
            (g) =>
              `  ${g.layers} x  A ${g.lora_A_shape.join("x")}  B ${g.lora_B_shape.join("x")}  (${n(g.lora_parameters_per_layer)} LoRA, ${n(g.generator_parameters_per_layer)} generator params each)`,
          ),
          `LoRA parameters       ${n(p.lora_parameters)}`,
          `generator parameters  ${n(p.generator_parameters)}`,
          `trainable parameters  ${n(p.trainable_parameters)}`,
          `base parameters       ${n(p.base_parameters)}`,
          "memory (at the step's peak):",
          // zod puts the known keys first: list a task's own terms, then the deduction, then the total
          ...Object.entries(p.memory_bytes)
            .sort(([a], [b]) => termRank(a) - termRank(b))
            .map(([k, v]) =>
              `  ${k.padEnd(24)} ${bytes(Number(v)).padEnd(10)} ${p.memory_formula[k] ?? ""}`.trimEnd(),
            ),
          `${p.fits ? "fits" : "DOES NOT FIT"}: ${p.message}`,
        ];
        process.stdout.write(`${lines.join("\n")}\n`);
      }
      return p.fits ? EXIT.ok : EXIT.failed;
    } finally {
      closePython();
    }
  },
};
