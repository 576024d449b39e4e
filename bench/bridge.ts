// Bridge latency: quick-lane round trip (median/p99 over N calls) and job spawn-to-first-event (over M runs).
//   npx tsx bench/bridge.ts [--out FILE] [--quick]   -> a table, and FILE (default bench/results/bridge.json)
//   (200 quick calls and 5 job runs; --quick: 50 and 2)
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { QuickBridge } from "../sdk/bridge/quick.js";
import { run } from "../sdk/run.js";

const argv = process.argv.slice(2);
const quickRun = argv.includes("--quick");
const outArg = argv.includes("--out") ? argv[argv.indexOf("--out") + 1] : undefined;
const calls = quickRun ? 50 : 200;
const runs = quickRun ? 2 : 5;

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
}

const bridge = new QuickBridge();
let t = performance.now();
await bridge.call("pid", {}, z.int());
const coldStartMs = performance.now() - t;
const quick: number[] = [];
for (let i = 0; i < calls; i++) {
  t = performance.now();
  await bridge.call("echo", { i }, z.object({ i: z.int() }));
  quick.push(performance.now() - t);
}
bridge.close();

const firstEvent: number[] = [];
const total: number[] = [];
for (let i = 0; i < runs; i++) {
  const outDir = join(mkdtempSync(join(tmpdir(), "oplora-bench-")), "run");
  t = performance.now();
  const handle = run(
    {
      task: "matrix_factorization",
      device: "cpu",
      matrix: { rows: 16, cols: 16 },
      adapter: { kind: "lora", r: 2 },
      train: { steps: 5, log_every: 5 },
    },
    { outDir },
  );
  let first: number | undefined;
  for await (const _ of handle) first ??= performance.now() - t;
  await handle;
  firstEvent.push(first ?? Number.NaN);
  total.push(performance.now() - t);
}

const results = {
  machine: { node: process.version, platform: process.platform },
  quick_call: {
    calls,
    cold_start_ms: coldStartMs,
    median_ms: quantile(quick, 0.5),
    p99_ms: quantile(quick, 0.99),
  },
  job: {
    runs,
    spawn_to_first_event_median_ms: quantile(firstEvent, 0.5),
    spawn_to_first_event_max_ms: Math.max(...firstEvent),
    spawn_to_result_median_ms: quantile(total, 0.5),
  },
  measured_at: new Date().toISOString(),
};
const fmt = (x: number) => x.toFixed(2).padStart(10);
console.log("bridge latency");
console.log(`  quick call   cold start ${fmt(coldStartMs)} ms`);
console.log(
  `  quick call   median     ${fmt(results.quick_call.median_ms)} ms   p99 ${fmt(results.quick_call.p99_ms)} ms   (${calls} calls)`,
);
console.log(
  `  job          first event median ${fmt(results.job.spawn_to_first_event_median_ms)} ms   max ${fmt(results.job.spawn_to_first_event_max_ms)} ms   (${runs} runs)`,
);
console.log(`  job          result median      ${fmt(results.job.spawn_to_result_median_ms)} ms`);
const out = outArg ?? join(dirname(fileURLToPath(import.meta.url)), "results", "bridge.json");
mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, `${JSON.stringify(results, null, 2)}\n`);
console.log(`wrote ${out}`);
