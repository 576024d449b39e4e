/**
 * The MF vs OP-MF table of a real matrix-factorisation grid sweep (24x24, r = 2, 40 Adam steps, two arms x two
 * lrs x two seeds): computed by the study task's own aggregation (Python), so its best lr per arm must be the
 * lr with the lowest mean final relative excess over the seeds, recomputed here from the trials' results.
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { writeReport } from "../../../sdk/report/index.js";
import type { SpecInput } from "../../../sdk/spec/index.js";
import { sweep } from "../../../sdk/sweep/sweep.js";

const base: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 24, cols: 24 },
  adapter: { kind: "lora", r: 2 },
  optimizer: { name: "adam" },
  train: { steps: 40, log_every: 5 },
  thresholds: [1e-1, 1e-2],
};
const LRS = [1e-2, 3e-2];
const FLOOR = 1e-8; // the study's RELATIVE_FLOOR

describe("MF table in the report", () => {
  it("a grid sweep's report carries the study table, each arm at the lr its seeds did best at", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-report-mf-"));
    const results = await sweep(base, {
      axes: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": LRS },
      seeds: [0, 1],
      outDir: dir,
      concurrency: 2,
    });
    expect(results.rows.every((t) => t.status === "succeeded")).toBe(true);
    const report = await writeReport(dir);
    expect(report.mf?.skipped).toBeNull();
    const md = report.mf?.markdown ?? "";
    expect(md).toContain("## Each arm at its best learning rate");
    expect(md).toContain("seeds [0, 1], 8 trials");

    const table = JSON.parse(readFileSync(join(dir, "report", "mf-study", "table.json"), "utf8"));
    const [row] = table.table;
    for (const [kind, arm] of [
      ["lora", "MF"],
      ["op-lora", "OP-MF"],
    ] as const) {
      const meanAt = (lr: number) => {
        const xs = results.rows
          .filter((t) => t.axes["adapter.kind"] === kind && t.axes["optimizer.lr"] === lr)
          .map((t) => t.metrics.relative_excess as number);
        return Math.max(xs.reduce((a, b) => a + b, 0) / xs.length, FLOOR);
      };
      const best = Math.min(...LRS.map(meanAt));
      expect(meanAt(row.best_lr[arm]), arm).toBe(best);
    }
    expect(row.per_lr.map((c: { lr: number }) => c.lr)).toEqual(LRS);
    const html = readFileSync(report.html, "utf8");
    expect(html).toContain("<h3>Each arm at its best learning rate</h3>");
    expect(html).toContain("<td>gaussian</td>".replace("gaussian", row.spectrum));
  });
});
