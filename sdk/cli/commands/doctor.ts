import { closePython } from "../../bridge/quick.js";
import { doctor } from "../../environment.js";
import { RayBackendError, rayDoctor } from "../../sweep/ray.js";
import { type Command, EXIT, parseCommandArgs } from "../command.js";

async function rayReport(address: string, json: boolean): Promise<number> {
  let report: Awaited<ReturnType<typeof rayDoctor>>;
  try {
    report = await rayDoctor(address);
  } catch (e) {
    if (!(e instanceof RayBackendError)) throw e;
    process.stderr.write(`oplora: ${e.message}\n`);
    return EXIT.invalid;
  }
  if (json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    return report.ok ? EXIT.ok : EXIT.failed;
  }
  const lines = [`cluster ${report.address}: ${report.nodes.length} node(s)`];
  for (const n of report.nodes) {
    const mem = `${(n.memory / 2 ** 30).toFixed(1)} GiB`;
    const state = n.error
      ? `probe failed: ${n.error}`
      : Object.keys(n.mismatch ?? {}).length
        ? `MISMATCH ${Object.entries(n.mismatch ?? {})
            .map(([k, v]) => `${k} ${v.node ?? "missing"} (driver ${v.driver ?? "missing"})`)
            .join(", ")}`
        : "same versions as the driver";
    lines.push(
      `  ${n.node_ip} ${n.node_id.slice(0, 8)}  cpus ${n.cpus}  gpus ${n.gpus}  memory ${mem}  ${state}`,
    );
  }
  process.stdout.write(`${lines.join("\n")}\n`);
  return report.ok ? EXIT.ok : EXIT.failed;
}

const HELP = `usage: oplora doctor [--json] [--ray HOST:PORT]

Report the Python environment oplora runs on: interpreter, package versions, CUDA devices, what is missing.
Exit 1 when a required package is missing.
--ray HOST:PORT: instead, list a Ray cluster's nodes (CPUs, GPUs, memory) and whether each imports the same
oplora, torch, peft, diffusers and transformers versions as this machine (exit 1 on a mismatch, 2 when the
cluster cannot be reached or ray is not installed).`;

export const doctorCommand: Command = {
  name: "doctor",
  summary: "check the Python environment (versions, CUDA, missing packages)",
  async run(argv) {
    const args = parseCommandArgs(argv, { json: { type: "boolean" }, ray: { type: "string" } }, HELP);
    if (!args) return EXIT.ok;
    if (typeof args.values.ray === "string") return rayReport(args.values.ray, Boolean(args.values.json));
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
