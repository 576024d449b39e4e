import { writeReport } from "../../report/index.js";
import { type Command, EXIT, parseCommandArgs, UsageError } from "../command.js";

const HELP = `usage: oplora report DIR [--out OUTDIR]

Write the report of the sweep in DIR: OUTDIR/index.html (self-contained: figures embedded, opens offline),
the figures as PNG, and the results table as results.csv and results.json. Default OUTDIR: DIR/report.`;

export const reportCommand: Command = {
  name: "report",
  summary: "write a sweep's HTML report, figures and results table",
  async run(argv) {
    const args = parseCommandArgs(argv, { out: { type: "string", short: "o" } }, HELP);
    if (!args) return EXIT.ok;
    const [dir] = args.positionals;
    if (!dir) throw new UsageError(`missing DIR\n\n${HELP}`);
    let report: Awaited<ReturnType<typeof writeReport>>;
    try {
      report = await writeReport(dir, { outDir: args.values.out as string | undefined });
    } catch (e) {
      if ((e as Error).message.includes("no sweep.json")) throw new UsageError((e as Error).message);
      throw e;
    }
    process.stdout.write(`${report.html}\n${report.csv}\n${report.json}\n`);
    return EXIT.ok;
  },
};
