// LoRA vs OP-LoRA across learning rates and seeds on matrix factorisation, then an HTML report.
//   npm run build && npx tsx examples/sweep.ts [OUT_DIR] [STEPS]
import { sweep, writeReport } from "oplora";

const outDir = process.argv[2] ?? `runs/example-sweep-${Date.now()}`;
const steps = Number(process.argv[3] ?? 200);

const handle = sweep(
  {
    task: "matrix_factorization",
    device: "cpu",
    matrix: { rows: 32, cols: 32, spectrum: "geometric" },
    adapter: { kind: "op-lora", r: 4 },
    optimizer: { name: "adam" },
    train: { steps, log_every: 10 },
  },
  {
    axes: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [3e-3, 3e-2] },
    seeds: [0, 1],
    concurrency: 2,
    outDir,
  },
);

for await (const ev of handle) {
  if (ev.type === "trial_finished" || ev.type === "trial_failed")
    console.log(`${ev.type}: ${ev.trial.label}`);
}
const results = await handle;
for (const row of results.rows) {
  console.log(`${row.label.padEnd(40)} ${row.status.padEnd(10)} excess ${row.metrics.excess_loss}`);
}
const report = await writeReport(outDir);
console.log(`report: ${report.html}`);
