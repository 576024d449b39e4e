import { type Command, EXIT, parseCommandArgs, readJsonFile, UsageError } from "../command.js";
import { runWithProgress } from "../run-with-progress.js";

const HELP = `usage: oplora run SPEC.json --out DIR [--resume]

Run a spec (validated first) into the run directory DIR: progress on stderr, a summary on stdout.
DIR holds spec.json, events.ndjson, result.json and the run's artifacts.

  --out DIR    run directory (new or empty, unless --resume)
  --resume     continue the run in DIR from its last checkpoint (same spec)

exit codes: 0 succeeded, 1 failed, 2 invalid spec or arguments, 130 cancelled (Ctrl-C)`;

export const runCommand: Command = {
  name: "run",
  summary: "run a spec into a run directory",
  async run(argv) {
    const args = parseCommandArgs(
      argv,
      { out: { type: "string", short: "o" }, resume: { type: "boolean" } },
      HELP,
    );
    if (!args) return EXIT.ok;
    const out = args.values.out;
    if (typeof out !== "string") throw new UsageError(`--out DIR is required\n\n${HELP}`);
    if (args.positionals.length !== 1) throw new UsageError(`expected one SPEC.json\n\n${HELP}`);
    const spec = readJsonFile(args.positionals[0]);
    const { code } = await runWithProgress(spec as never, out, { resume: args.values.resume === true });
    return code;
  },
};
