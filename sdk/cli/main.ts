#!/usr/bin/env node
/**
 * `oplora <command> [args]`. Commands live in sdk/cli/commands/<name>.ts, each `{name, summary, run(argv)}`;
 * add one by importing it into COMMANDS below.
 * Exit codes: 0 ok, 1 run failed, 2 invalid spec or arguments, 130 cancelled.
 */
import { type Command, EXIT, reportError } from "./command.js";
import { demoCommand } from "./commands/demo.js";
import { doctorCommand } from "./commands/doctor.js";
import { planCommand } from "./commands/plan.js";
import { reportCommand } from "./commands/report.js";
import { runCommand } from "./commands/run.js";
import { runsCommand, showCommand } from "./commands/runs.js";
import { schemaCommand } from "./commands/schema.js";
import { setupCommand } from "./commands/setup.js";
import { studyCommand } from "./commands/study.js";
import { sweepCommand } from "./commands/sweep.js";
import { answerCommand, generateCommand } from "./commands/use.js";
import { validateCommand } from "./commands/validate.js";

export const COMMANDS: Command[] = [
  runCommand,
  validateCommand,
  planCommand,
  schemaCommand,
  doctorCommand,
  setupCommand,
  demoCommand,
  sweepCommand,
  reportCommand,
  runsCommand,
  showCommand,
  generateCommand,
  answerCommand,
  studyCommand,
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  const list = COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join("\n");
  return `usage: oplora <command> [options]   (oplora <command> --help for each)\n\ncommands:\n${list}\n\nexit codes: 0 ok, 1 run failed, 2 invalid spec or arguments, 130 cancelled\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage());
    return name ? EXIT.ok : EXIT.invalid;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (!command) {
    process.stderr.write(`oplora: unknown command '${name}'\n\n${usage()}`);
    return EXIT.invalid;
  }
  try {
    return await command.run(rest);
  } catch (e) {
    return reportError(e);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    process.stderr.write(`oplora: ${String(e)}\n`);
    process.exitCode = EXIT.failed;
  },
);
