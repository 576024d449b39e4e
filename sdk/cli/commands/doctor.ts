import { closePython } from "../../bridge/quick.js";
import { doctor } from "../../environment.js";
import { type Command, EXIT, parseCommandArgs } from "../command.js";

const HELP = `usage: oplora doctor [--json]

Report the Python environment oplora runs on: interpreter, package versions, CUDA devices, what is missing.
Exit 1 when a required package is missing.`;

export const doctorCommand: Command = {
  name: "doctor",
  summary: "check the Python environment (versions, CUDA, missing packages)",
  async run(argv) {
    const args = parseCommandArgs(argv, { json: { type: "boolean" } }, HELP);
    if (!args) return EXIT.ok;
    try {
      const report = await doctor();
      if (args.values.json) {
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      } else {
        const lines = [`python     ${report.python_executable}`, `oplora     ${report.oplora_path}`];
        for (const [k, v] of Object.entries(report.versions)) lines.push(`${k.padEnd(10)} ${v ?? "MISSING"}`);
        const cuda = report.cuda_devices.map(
          (d) => `${d.index}: ${d.name} (${(d.total_memory_bytes / 2 ** 30).toFixed(1)} GiB)`,
        );
        lines.push(`cuda       ${report.cuda_available ? cuda.join(", ") : "not available"}`);
        if (report.missing.length) lines.push(`missing: ${report.missing.join(", ")}`);
        process.stdout.write(`${lines.join("\n")}\n`);
      }
      return report.ok ? EXIT.ok : EXIT.failed;
    } finally {
      closePython();
    }
  },
};
