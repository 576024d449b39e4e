// What a spec costs before it runs: layers, parameters, memory, and whether it fits the device.
//   npm run build && npx tsx examples/plan.ts
import { closePython, doctor, plan } from "oplora";

const env = await doctor();
console.log(`python ${env.versions.python}, torch ${env.versions.torch}, cuda: ${env.cuda_available}`);

for (const r of [4, 64]) {
  const p = await plan({
    task: "matrix_factorization",
    matrix: { rows: 1024, cols: 1024 },
    adapter: { kind: "op-lora", r, generator: { hidden_dim: 32 } },
  });
  console.log(
    `r=${r}: ${p.lora_parameters} LoRA params, ${p.generator_parameters} generator params, ` +
      `${(p.memory_bytes.total / 2 ** 20).toFixed(1)} MiB -> ${p.fits ? "fits" : "does not fit"}`,
  );
}
closePython();
