/**
 * The report of a real search sweep (MF 24x24, r = 2, 200 steps, two arms, 4 grid trials each over a narrow
 * small-lr range, median pruner, one confirmation seed): the search section, the pruned marks in the search
 * figures, the comparison at each arm's best, and the edge warning (at these lrs a larger lr is better at
 * every step, so each arm's best is the range's top: the edge).
 */
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { searchLines } from "../../../sdk/cli/sweep-progress.js";
import { loadReportData } from "../../../sdk/report/data.js";
import type { FigureSpec } from "../../../sdk/report/figures.js";
import { writeReport } from "../../../sdk/report/index.js";
import { comparisons } from "../../../sdk/report/summary.js";
import type { SpecInput } from "../../../sdk/spec/index.js";
import { sweep } from "../../../sdk/sweep/sweep.js";

const base: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 24, cols: 24 },
  adapter: { kind: "lora", r: 2 },
  optimizer: { name: "adam" },
  train: { steps: 200, log_every: 20 },
};

describe("report of a search sweep", () => {
  it("shows each arm's best, the search figures with pruned trials marked, and the edge warning", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-report-search-"));
    const results = await sweep(base, {
      axes: { "adapter.kind": ["lora", "op-lora"] },
      outDir: dir,
      concurrency: 1,
      search: {
        space: { "optimizer.lr": { low: 1e-4, high: 3e-4, log: true, points: 4 } },
        trials: 4,
        sampler: "grid",
        pruner: "median",
        // the default warm-up (50 steps): a prune reply is asynchronous, so the trials are long enough
        // (200 steps) that one sent at the first chance arrives while the trial still runs
        objective: "final_loss",
        startupTrials: 1,
        confirmSeeds: [1],
        seed: 0,
      },
    });
    const search = results.search;
    if (!search) throw new Error("no search results");
    const pruned = search.studies.flatMap((s) => s.trials.filter((t) => t.state === "pruned"));
    expect(pruned.length).toBeGreaterThan(0);
    for (const st of search.studies) expect(st.best?.params["optimizer.lr"]).toBeCloseTo(3e-4, 12);

    const data = await loadReportData(dir);
    // the arms are each study's best at its confirmation seed; the search trials stay in the trials
    expect(data.arms.map((a) => a.label)).toEqual(
      search.studies.map(
        (s) => `adapter.kind=${s.axes["adapter.kind"]} optimizer.lr=${s.best?.params["optimizer.lr"]}`,
      ),
    );
    for (const arm of data.arms) expect(arm.trials.map((t) => t.row.axes.seed)).toEqual([1]);
    expect(data.trials.length).toBe(8 + 2);
    const [comp] = comparisons(data);
    expect(comp?.kind).toBe("same setting");
    expect(comp?.metric).toBe("final_loss");
    const conf = (study: string) => search.confirmations.find((c) => c.study === study)?.rows[0]?.metrics;
    expect(comp?.loraFinal?.mean).toBe(conf("adapter.kind=lora")?.final_loss);
    expect(comp?.opFinal?.mean).toBe(conf("adapter.kind=op-lora")?.final_loss);

    const report = await writeReport(dir);
    const specs = (
      JSON.parse(readFileSync(join(dir, "report", "figures.json"), "utf8")) as { figures: FigureSpec[] }
    ).figures;
    const byFile = new Map(specs.map((f) => [f.file, f]));
    const vsLr = byFile.get("search-optimizer-lr.svg");
    const history = byFile.get("search-history.svg");
    expect(vsLr?.logx).toBe(true);
    expect(byFile.has("vs-optimizer-lr.png")).toBe(false); // each arm's single best lr is no lr curve
    for (const fig of [vsLr, history]) {
      const rugs = fig?.series.filter((s) => s.style === "rug") ?? [];
      expect(rugs.flatMap((s) => s.x).length).toBe(pruned.length);
      const points = fig?.series.filter((s) => s.style === "points") ?? [];
      expect(points.flatMap((s) => s.y).length).toBe(8 - pruned.length);
    }
    // best so far: non-increasing, one line per arm, ending at the study's best
    const lines = history?.series.filter((s) => s.style === "steps") ?? [];
    expect(lines).toHaveLength(2);
    for (const [i, l] of lines.entries()) {
      for (let k = 1; k < l.y.length; k++) expect(l.y[k]).toBeLessThanOrEqual(l.y[k - 1] as number);
      expect(l.y.at(-1)).toBe(search.studies[i]?.best?.objective);
    }
    for (const f of ["search-optimizer-lr.svg", "search-history.svg"])
      expect(readFileSync(join(dir, "report", f), "utf8")).toContain("<svg");

    const html = readFileSync(report.html, "utf8");
    expect(html).toContain("Search: each arm's best");
    expect(html).toContain("LoRA vs OP-LoRA (each arm at its best)");
    expect(html).toContain("data:image/svg+xml;base64,");
    expect(html.match(/class="bad edge-warning"/g)).toHaveLength(2);
    expect(html).toContain("best optimizer.lr = 0.0003");
    const summary = JSON.parse(readFileSync(report.summary, "utf8"));
    expect(summary.search.map((b: { confirmed: { n: number } }) => b.confirmed.n)).toEqual([1, 1]);

    const cli = searchLines(search);
    expect(cli[0]).toBe("search: each arm's best final_loss (minimize)");
    expect(cli.filter((l) => l.includes("warning:") && l.includes("edge of [0.0001, 0.0003]"))).toHaveLength(
      2,
    );
  }, 600_000);
});
