/**
 * Figure specs for a report, drawn to PNG by Python (`python -m oplora.report_figures SPEC.json OUTDIR`,
 * matplotlib with the Agg backend): the SDK aggregates, Python only draws.
 *
 *   curve-<name>.png     every curve (loss, effective rank, eval:cmmd, ...) per arm: seed mean, min..max band
 *   vs-<axis>.png        the primary final metric vs each numeric axis (lr, rank, ...), one line per arm
 *                        family, mean ± std over seeds
 *   search-*.svg         with a search: objective vs each searched param and by trial (report/search.ts)
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { runModule } from "../bridge/python.js";
import { bandOf, mean, metricBySeed, type ReportData, std } from "./data.js";
import { searchFigures } from "./search.js";

export interface FigureSeries {
  label: string;
  x: number[];
  y: number[];
  lo?: number[];
  hi?: number[];
  /**
   * How Python draws it: a line (default; with `markers`, points joined and error bars), `points` (a
   * scatter), `steps` (a step line, e.g. best so far), `rug` (crosses along the x axis: x only, y unused).
   */
  style?: "points" | "steps" | "rug";
  /** Colour index (default: the series' position), so one arm's series share a colour. */
  color?: number;
}

export interface FigureSpec {
  file: string;
  title: string;
  xlabel: string;
  ylabel: string;
  logx: boolean;
  logy: boolean;
  markers: boolean;
  series: FigureSeries[];
}

export const LOG_HINT = /loss|excess|cmmd/i;

export function slug(s: string): string {
  return s.replace(/[^a-zA-Z0-9]+/g, "-").replace(/^-|-$/g, "");
}

/** Every figure the data supports. */
export function figureSpecs(data: ReportData): FigureSpec[] {
  const figures: FigureSpec[] = [];
  const curveNames = [...new Set(data.trials.flatMap((t) => Object.keys(t.curves)))].sort();
  for (const name of curveNames) {
    const series: FigureSeries[] = [];
    for (const arm of data.arms) {
      const band = bandOf(arm, name);
      if (band?.step.length) {
        series.push({
          label: `${arm.label} (n=${band.n})`,
          x: band.step,
          y: band.mean,
          lo: band.lo,
          hi: band.hi,
        });
      }
    }
    if (!series.length) continue;
    const positive = series.some((s) => s.y.some((v) => v > 0)); // Python floors the rest for log scale
    const pretty = name.replace(/^eval:/, "").replace(/_/g, " ");
    figures.push({
      file: `curve-${slug(name)}.png`,
      title: `${pretty} over steps (seed mean, band: min..max)`,
      xlabel: "step",
      ylabel: pretty,
      logx: false,
      logy: positive && LOG_HINT.test(name),
      markers: false,
      series,
    });
  }
  const metric = data.primary;
  if (metric) {
    const searched = new Set(Object.keys(data.search?.space ?? {})); // each arm's best: search figures show it
    const numericAxes = [...new Set(data.arms.flatMap((a) => Object.keys(a.axes)))].filter((p) => {
      if (searched.has(p)) return false;
      const values = new Set(data.arms.map((a) => a.axes[p]));
      return values.size >= 2 && [...values].every((v) => typeof v === "number");
    });
    for (const axis of numericAxes) {
      const families = new Map<string, { label: string; points: [number, number, number][] }>();
      for (const arm of data.arms) {
        const x = arm.axes[axis];
        const vs = [...metricBySeed(arm, metric).values()];
        if (typeof x !== "number" || !vs.length) continue;
        const rest = Object.entries(arm.axes).filter(([p]) => p !== axis);
        const key = JSON.stringify(rest);
        const label =
          rest.map(([p, v]) => `${p}=${typeof v === "string" ? v : JSON.stringify(v)}`).join(" ") || "all";
        const fam = families.get(key) ?? { label, points: [] };
        fam.points.push([x, mean(vs), std(vs)]);
        families.set(key, fam);
      }
      const series = [...families.values()].map((f) => {
        const pts = f.points.sort((a, b) => a[0] - b[0]);
        return {
          label: f.label,
          x: pts.map((p) => p[0]),
          y: pts.map((p) => p[1]),
          lo: pts.map((p) => p[1] - p[2]),
          hi: pts.map((p) => p[1] + p[2]),
        };
      });
      if (!series.length) continue;
      const xs = series.flatMap((s) => s.x);
      const positive = series.some((s) => s.y.some((v) => v > 0));
      figures.push({
        file: `vs-${slug(axis)}.png`,
        title: `final ${metric.replace(/_/g, " ")} vs ${axis} (mean ± std over seeds)`,
        xlabel: axis,
        ylabel: metric,
        logx: xs.every((v) => v > 0) && Math.max(...xs) / Math.min(...xs) >= 10,
        logy: positive && LOG_HINT.test(metric),
        markers: true,
        series,
      });
    }
  }
  if (data.search) figures.push(...searchFigures(data.search));
  return figures;
}

/** Draw `figures` as PNGs into `outDir` through Python; returns the files written. */
export async function drawFigures(
  figures: FigureSpec[],
  outDir: string,
  options: { python?: string | undefined } = {},
): Promise<string[]> {
  if (!figures.length) return [];
  const specPath = join(outDir, "figures.json");
  writeFileSync(specPath, `${JSON.stringify({ figures }, null, 1)}\n`);
  await runModule("oplora.figures.report_figures", [specPath, outDir], {
    ...options,
    env: { MPLBACKEND: "Agg" },
  });
  return figures.map((f) => join(outDir, f.file));
}
