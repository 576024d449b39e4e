#!/usr/bin/env node
// `npm run bench [-- --only NAME[,NAME]] [-- --quick]`: runs every benchmark in one go, each writing its
// results under bench/results/. Ratios are measured side by side inside each benchmark (these machines are
// shared and noisy); absolute times are for orientation only.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const python = process.env.OPLORA_PYTHON ?? join(root, ".venv", "bin", "python");
const tsx = join(root, "node_modules", ".bin", "tsx");
const args = process.argv.slice(2);
const onlyIndex = args.indexOf("--only");
const onlyArg =
  args.find((a) => a.startsWith("--only="))?.slice(7) ?? (onlyIndex >= 0 ? args[onlyIndex + 1] : undefined);
const only = onlyArg ? new Set(onlyArg.split(",")) : null;
const quick = args.includes("--quick") ? ["--quick"] : [];

const benches = [
  { name: "mf_study", cmd: python, file: "bench/mf_study.py" },
  { name: "generator", cmd: python, file: "bench/generator.py" },
  { name: "bridge", cmd: tsx, file: "bench/bridge.ts" },
  { name: "sweep", cmd: tsx, file: "bench/sweep.ts" },
  { name: "sweep_ray", cmd: tsx, file: "bench/sweep_ray.ts" },
  { name: "search", cmd: tsx, file: "bench/search.ts" },
  { name: "text_to_image", cmd: python, file: "bench/text_to_image.py" },
  { name: "t2i_search", cmd: tsx, file: "bench/t2i_search.ts" },
  { name: "llava", cmd: python, file: "bench/llava.py" },
  { name: "memory", cmd: python, file: "bench/memory.py" },
];

let failed = 0;
for (const b of benches) {
  if (only && !only.has(b.name)) continue;
  if (!existsSync(join(root, b.file))) {
    console.log(`\n=== ${b.name}: ${b.file} not present, skipped`);
    continue;
  }
  console.log(`\n=== ${b.name} (${b.file})`);
  const t0 = Date.now();
  // --quick runs are smoke runs: their numbers go to the ignored bench/out/quick/, never over bench/results/.
  const out = join("bench", quick.length ? join("out", "quick") : "results", `${b.name}.json`);
  const r = spawnSync(b.cmd, [b.file, "--out", out, ...quick], { stdio: "inherit", cwd: root });
  console.log(`=== ${b.name}: exit ${r.status} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
