/**
 * `writeReport(dir)`: a sweep directory's report, written to `dir/report/`:
 *
 *   index.html      self-contained (figures embedded), opens offline
 *   *.png           the figures (matplotlib, through `python -m oplora.report_figures`)
 *   figures.json    what the figures show, as data
 *   results.csv / results.json    one row per trial: id, axes, status, scalar metrics, run dir
 *   summary.json    per-arm finals and the LoRA vs OP-LoRA comparisons (with a search: each arm's best)
 *   mf-study/       matrix factorisation: the MF vs OP-MF table at each arm's best lr (mf-table.ts)
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadReportData, type ReportRow } from "./data.js";
import { drawFigures, figureSpecs } from "./figures.js";
import { renderHtml } from "./html.js";
import { type MfTable, mfTable } from "./mf-table.js";
import { searchBests } from "./search.js";
import { armSummaries, comparisons } from "./summary.js";

export type { ReportData, ReportRow } from "./data.js";
export type { FigureSpec } from "./figures.js";
export type { MfTable } from "./mf-table.js";
export type { ArmBest } from "./search.js";
export type { ArmSummary, Comparison } from "./summary.js";

export interface ReportOptions {
  /** Output folder (default `<dir>/report`). */
  outDir?: string | undefined;
  python?: string | undefined;
}

export interface Report {
  html: string;
  figures: string[];
  csv: string;
  json: string;
  summary: string;
  /** Matrix-factorisation sweeps: the MF vs OP-MF study table (`mf-study/table.md`), or why there is none. */
  mf: MfTable | null;
}

function csvCell(v: unknown): string {
  const s = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/**
 * The results table as CSV: id, axes..., status, reused, metrics.<name>..., wall_s, error, run_dir.
 * Metric columns carry a `metrics.` prefix: a task's metrics may repeat an axis (`seed`) or `wall_s`.
 */
export function resultsCsv(rows: ReportRow[]): string {
  const axes = [...new Set(rows.flatMap((r) => Object.keys(r.axes)))];
  const metrics = [...new Set(rows.flatMap((r) => Object.keys(r.metrics)))];
  const head = [
    "id",
    ...axes,
    "status",
    "reused",
    ...metrics.map((m) => `metrics.${m}`),
    "wall_s",
    "error",
    "run_dir",
  ];
  const lines = rows.map((r) =>
    [
      r.id,
      ...axes.map((a) => r.axes[a]),
      r.status,
      r.reused,
      ...metrics.map((m) => r.metrics[m]),
      r.wallS,
      r.error ? `${r.error.type}: ${r.error.message}` : "",
      r.runDir,
    ]
      .map(csvCell)
      .join(","),
  );
  return `${[head.map(csvCell).join(","), ...lines].join("\n")}\n`;
}

/** Write the report of the sweep in `dir`; returns the files written. */
export async function writeReport(dir: string, options: ReportOptions = {}): Promise<Report> {
  const root = resolve(dir);
  const out = resolve(options.outDir ?? join(root, "report"));
  mkdirSync(out, { recursive: true });
  const data = await loadReportData(root);
  const specs = figureSpecs(data);
  const files = await drawFigures(specs, out, { python: options.python });
  const mf = await mfTable(data, out, { python: options.python });
  const comps = comparisons(data);
  const arms = armSummaries(data);
  const bests = data.search ? searchBests(data.search) : [];
  const rows = data.trials.map((t) => t.row);
  const report: Report = {
    html: join(out, "index.html"),
    figures: files,
    csv: join(out, "results.csv"),
    json: join(out, "results.json"),
    summary: join(out, "summary.json"),
    mf,
  };
  writeFileSync(report.csv, resultsCsv(rows));
  writeFileSync(report.json, `${JSON.stringify(rows, null, 2)}\n`);
  writeFileSync(
    report.summary,
    `${JSON.stringify({ primary: data.primary, arms, comparisons: comps, ...(data.search && { search: bests }) }, null, 2)}\n`,
  );
  const figures = specs.map((spec, i) => ({ spec, path: files[i] as string }));
  const html = renderHtml({
    data,
    figures,
    comparisons: comps,
    arms,
    bests,
    mf,
    generatedAt: new Date().toISOString(),
  });
  writeFileSync(report.html, html);
  return report;
}
