/**
 * The search part of a report (a sweep with a `search` block; DIR/search.json, written by the sweep):
 *
 *   searchBests     per arm (study): its best params, the study's best objective, the objective over the
 *                   confirmation seeds (mean ± std), its trials by state, and its edge-of-range warnings
 *   searchFigures   search-<param>.svg: the objective vs each searched param, one colour per arm, pruned
 *                   trials as crosses along the x axis (they have no objective), log x for a log range;
 *                   search-history.svg: the objective by trial number with each arm's best-so-far line
 */
import type { SearchResults, SearchTrial } from "../sweep/search.js";
import { mean, std } from "./data.js";
import { type FigureSeries, type FigureSpec, LOG_HINT, slug } from "./figures.js";
import type { Stat } from "./summary.js";

export interface ArmBest {
  study: string;
  axes: Record<string, unknown>;
  params: Record<string, unknown>;
  /** The study's best trial's objective (one seed), null when no trial completed. */
  searchBest: number | null;
  /** The objective at the best params over the confirmation seeds, null when none succeeded. */
  confirmed: Stat | null;
  trials: { complete: number; pruned: number; failed: number };
  /** Searched params whose best value lies within 5% of its range (in the param's own scale). */
  edgeWarnings: string[];
}

export function searchBests(s: SearchResults): ArmBest[] {
  return s.studies.map((st) => {
    const conf = s.confirmations.find((c) => c.study === st.name);
    const values = (conf?.rows ?? [])
      .filter((r) => r.status === "succeeded")
      .map((r) => r.metrics[s.objective])
      .filter((v): v is number => typeof v === "number" && Number.isFinite(v));
    const count = (state: SearchTrial["state"]) => st.trials.filter((t) => t.state === state).length;
    return {
      study: st.name,
      axes: st.axes,
      params: st.best?.params ?? {},
      searchBest: st.best?.objective ?? null,
      confirmed: values.length ? { mean: mean(values), std: std(values), n: values.length } : null,
      trials: { complete: count("complete"), pruned: count("pruned"), failed: count("fail") },
      edgeWarnings: st.edgeWarnings,
    };
  });
}

/** One arm's trials as a scatter of `x(t)` vs the objective, plus its pruned trials as a rug. */
function armSeries(
  name: string,
  color: number,
  trials: SearchTrial[],
  x: (t: SearchTrial) => unknown,
): FigureSeries[] {
  const done = trials.filter((t) => t.objective !== null && typeof x(t) === "number");
  const pruned = trials.filter((t) => t.state === "pruned" && typeof x(t) === "number");
  const out: FigureSeries[] = [];
  if (done.length)
    out.push({
      label: `${name} (${done.length} complete)`,
      x: done.map((t) => x(t) as number),
      y: done.map((t) => t.objective as number),
      style: "points",
      color,
    });
  if (pruned.length)
    out.push({
      label: `${name} pruned (${pruned.length}, ×: stopped early, no objective)`,
      x: pruned.map((t) => x(t) as number),
      y: pruned.map(() => 0),
      style: "rug",
      color,
    });
  return out;
}

/** Each arm's best objective so far, by trial number (complete trials only). */
function bestSoFar(trials: SearchTrial[], sign: number): { x: number[]; y: number[] } {
  const x: number[] = [];
  const y: number[] = [];
  for (const t of [...trials].sort((a, b) => a.number - b.number)) {
    if (t.objective === null) continue;
    const prev = y[y.length - 1];
    x.push(t.number);
    y.push(prev === undefined || sign * t.objective < sign * prev ? t.objective : prev);
  }
  return { x, y };
}

export function searchFigures(s: SearchResults): FigureSpec[] {
  const objectives = s.studies.flatMap((st) => st.trials.flatMap((t) => t.objective ?? []));
  const logy = LOG_HINT.test(s.objective) && objectives.length > 0 && objectives.every((v) => v > 0);
  const pretty = s.objective.replace(/_/g, " ");
  const figures: FigureSpec[] = [];
  for (const [path, p] of Object.entries(s.space)) {
    const series = s.studies.flatMap((st, i) => armSeries(st.name, i, st.trials, (t) => t.params[path]));
    if (!series.length) continue;
    figures.push({
      file: `search-${slug(path)}.svg`,
      title: `${pretty} vs ${path} per arm (search trials; × = pruned)`,
      xlabel: path,
      ylabel: s.objective,
      logx: "low" in p && p.log,
      logy,
      markers: true,
      series,
    });
  }
  const sign = s.direction === "minimize" ? 1 : -1;
  const history = s.studies.flatMap((st, i) => {
    const best = bestSoFar(st.trials, sign);
    const line: FigureSeries[] = best.x.length
      ? [{ label: `${st.name} best so far`, ...best, style: "steps", color: i }]
      : [];
    return [...armSeries(st.name, i, st.trials, (t) => t.number), ...line];
  });
  if (history.length)
    figures.push({
      file: "search-history.svg",
      title: `optimisation history: ${pretty} by trial (line: best so far; × = pruned)`,
      xlabel: "trial",
      ylabel: s.objective,
      logx: false,
      logy,
      markers: true,
      series: history,
    });
  return figures;
}
