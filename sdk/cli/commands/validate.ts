import { validateSpec } from "../../spec/validate.js";
import { type Command, EXIT, parseCommandArgs, readJsonFile, UsageError } from "../command.js";

const HELP = `usage: oplora validate SPEC.json

Check a spec against the schema; print it with every default filled in (exit 0), or list every problem
as "path: message" (exit 2).`;

export const validateCommand: Command = {
  name: "validate",
  summary: "check a spec and print it with defaults filled in",
  async run(argv) {
    const args = parseCommandArgs(argv, {}, HELP);
    if (!args) return EXIT.ok;
    if (args.positionals.length !== 1) throw new UsageError(`expected one SPEC.json\n\n${HELP}`);
    const spec = validateSpec(readJsonFile(args.positionals[0]));
    process.stdout.write(`${JSON.stringify(spec, null, 2)}\n`);
    return EXIT.ok;
  },
};
