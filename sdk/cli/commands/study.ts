import { join } from "node:path";
import { STUDIES } from "../../sweep/studies.js";
import { type Command, EXIT, parseCommandArgs, UsageError } from "../command.js";
import { parseSweepFlags, runSweepCli, SWEEP_FLAGS } from "./sweep.js";

const names = Object.keys(STUDIES);
const HELP = `usage: oplora study ${names.join("|")} [--out DIR] [--concurrency N] [--mode warm|cold]

Built-in sweeps reproducing the paper's matrix-factorisation claims at demo size, each ending in a report:
${Object.values(STUDIES)
  .map((s) => `  ${s.name.padEnd(18)} ${s.summary}`)
  .join("\n")}
Default DIR: runs/study-<name>; running it again resumes (finished trials are kept).`;

export const studyCommand: Command = {
  name: "study",
  summary: `run a built-in study (${names.join(", ")}) and write its report`,
  async run(argv) {
    const args = parseCommandArgs(argv, SWEEP_FLAGS, HELP);
    if (!args) return EXIT.ok;
    const [name] = args.positionals;
    const study = name ? STUDIES[name] : undefined;
    if (!study)
      throw new UsageError(
        `${name ? `unknown study '${name}'` : "missing study name"}; expected one of ${names.join(", ")}\n\n${HELP}`,
      );
    const flags = parseSweepFlags(args.values);
    return runSweepCli(
      study.base,
      {
        ...study.plan,
        outDir: (args.values.out as string | undefined) ?? join("runs", `study-${study.name}`),
        concurrency: flags.concurrency ?? 2,
        mode: flags.mode,
        devices: flags.devices,
        failFast: Boolean(args.values["fail-fast"]),
        backend: flags.backend,
        search: study.search,
      },
      !args.values["no-report"],
    );
  },
};
