import { specJsonSchemaText } from "../../spec/schema.js";
import { type Command, EXIT, parseCommandArgs } from "../command.js";

const HELP = `usage: oplora schema

Print the spec's JSON Schema (draft 2020-12), generated from the SDK's zod schemas.`;

export const schemaCommand: Command = {
  name: "schema",
  summary: "print the spec's JSON Schema",
  async run(argv) {
    if (!parseCommandArgs(argv, {}, HELP)) return EXIT.ok;
    process.stdout.write(specJsonSchemaText());
    return EXIT.ok;
  },
};
