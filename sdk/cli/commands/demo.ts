import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type Command, EXIT, parseCommandArgs } from "../command.js";
import { runWithProgress } from "../run-with-progress.js";

const HELP = `usage: oplora demo [--out DIR]

Run the matrix-factorisation study (MF vs OP-MF across spectra, optimizers and learning rates; all
defaults) and print its table. Default DIR: runs/demo-<timestamp>.`;

/** The embedded demo spec: the whole MF study with its defaults. */
export const DEMO_SPEC = { task: "matrix_factorization_study" } as const;

export const demoCommand: Command = {
  name: "demo",
  summary: "run the default matrix-factorisation study and print its table",
  async run(argv) {
    const args = parseCommandArgs(argv, { out: { type: "string", short: "o" } }, HELP);
    if (!args) return EXIT.ok;
    const stamp = new Date().toISOString().replace(/[:.]/g, "-").replace(/Z$/, "");
    const out = typeof args.values.out === "string" ? args.values.out : join("runs", `demo-${stamp}`);
    const { code, result } = await runWithProgress(DEMO_SPEC, out);
    if (result) {
      const table = result.artifacts.find((a) => a.kind === "table")?.path ?? "table.md";
      const path = join(result.run_dir, table);
      if (existsSync(path)) process.stdout.write(`\n${readFileSync(path, "utf8")}`);
      const plot = result.artifacts.find((a) => a.kind === "plot");
      if (plot) process.stdout.write(`\nplot: ${join(result.run_dir, plot.path)}\n`);
    }
    return code;
  },
};
