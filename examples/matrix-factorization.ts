// Train OP-LoRA on a synthetic matrix factorisation, stream its events, print its metrics.
//   npm run build && npx tsx examples/matrix-factorization.ts [OUT_DIR] [STEPS] [lora|op-lora]
import { run, TrainingFailedError } from "oplora";

const outDir = process.argv[2] ?? `runs/example-mf-${Date.now()}`;
const steps = Number(process.argv[3] ?? 500);
const kind = (process.argv[4] ?? "op-lora") as "lora" | "op-lora";

const handle = run(
  {
    task: "matrix_factorization",
    device: "cpu",
    matrix: { rows: 64, cols: 64, spectrum: "geometric" },
    adapter: { kind, r: 4 },
    train: { steps, log_every: Math.max(1, Math.floor(steps / 10)) },
  },
  { outDir },
);

try {
  for await (const ev of handle) {
    if (ev.type === "step")
      console.log(`step ${ev.step}/${ev.total_steps}  loss ${ev.loss?.toExponential(3)}`);
    if (ev.type === "artifact") console.log(`wrote ${ev.kind}: ${ev.path}`);
  }
  const result = await handle;
  if (result.task === "matrix_factorization" && result.metrics) {
    const m = result.metrics;
    console.log(`final loss ${m.final_loss.toExponential(3)} (optimum ${m.optimal_loss.toExponential(3)})`);
    console.log(`relative excess ${m.relative_excess.toExponential(3)}; steps to excess:`, m.steps_to_excess);
  }
} catch (e) {
  if (e instanceof TrainingFailedError) console.error(e.traceback);
  throw e;
}
