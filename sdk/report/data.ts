/**
 * Report data: a sweep directory read back and summarised per arm.
 *
 *   sweep.json + runs/<id>/{spec,result}.json ──► trials ──group by axes without seed──► arms
 *   arms ──► curves (mean and spread over seeds) ──► figures (figures.ts) and the summary (summary.ts)
 *
 * An arm is every trial sharing the same axis values except `seed`. Curves are read generically from the
 * result's metrics (every `<name>_curve` list of `{step, <value>}`) and from `eval` events (CMMD, VQA, ...),
 * so a task's own metrics show up without report code for it.
 *
 * With a search (DIR/search.json), an arm is a study's best instead: its confirmation runs (the best params
 * at each confirmation seed), or the best trial itself when none ran; the search trials stay in `trials`.
 *
 * A trial's status is the store's word (sweep/store.ts `TrialStatus`): `pending` and `running` while a live
 * process holds sweep.lock (a report of a sweep still going), `not_run` once none does (a sweep killed
 * before it recorded them), as `listRuns` says; a corrupt run directory is `failed`.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { liveHolder } from "../lock.js";
import { scalarMetrics } from "../result.js";
import { readJsonIfValid, runDirProblem } from "../run-dir.js";
import { readSearchResults, type SearchResults } from "../sweep/search.js";
import { LOCK, readManifest, type SweepManifest, type TrialStatus } from "../sweep/store.js";
import type { TrialRow } from "../sweep/sweep.js";

export interface Series {
  step: number[];
  value: number[];
}

/** A results-table row: a sweep's `TrialRow`, its status any of the store's words. */
export interface ReportRow extends Omit<TrialRow, "status"> {
  status: TrialStatus;
}

export interface ReportTrial {
  row: ReportRow;
  spec: Record<string, unknown> | null;
  /** curve name -> points, from `<name>_curve` metrics and eval events (`eval:<name>`). */
  curves: Record<string, Series>;
  /** Image grids and images the run produced (absolute paths). */
  images: { path: string; label: string; step: number | null }[];
}

export interface Arm {
  key: string;
  label: string;
  /** Axis values except seed. */
  axes: Record<string, unknown>;
  trials: ReportTrial[];
}

export interface ReportData {
  dir: string;
  manifest: SweepManifest;
  task: string;
  trials: ReportTrial[];
  arms: Arm[];
  /** The metric the summary and the sweep plots compare (`excess_loss`, else `final_loss`, when present). */
  primary: string | null;
  /** The search's studies and confirmations, when the sweep held a search. */
  search: SearchResults | null;
}

function curvesOf(metrics: unknown, runDir: string): Record<string, Series> {
  const curves: Record<string, Series> = {};
  if (metrics && typeof metrics === "object") {
    for (const [key, value] of Object.entries(metrics)) {
      if (!key.endsWith("_curve") || !Array.isArray(value)) continue;
      const name = key.slice(0, -"_curve".length);
      const s: Series = { step: [], value: [] };
      for (const p of value) {
        if (!p || typeof p !== "object") continue;
        const rec = p as Record<string, unknown>;
        const v =
          rec[name] ?? Object.entries(rec).find(([k, x]) => k !== "step" && typeof x === "number")?.[1];
        if (typeof rec.step === "number" && typeof v === "number") {
          s.step.push(rec.step);
          s.value.push(v);
        }
      }
      if (s.step.length) curves[name] = s;
    }
  }
  // eval events: numeric metrics over steps; step events' loss when the metrics have no loss curve
  const events = join(runDir, "events.ndjson");
  if (existsSync(events)) {
    const loss: Series = { step: [], value: [] };
    for (const line of readFileSync(events, "utf8").split("\n")) {
      if (!line.trim()) continue;
      let ev: Record<string, unknown>;
      try {
        ev = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if (ev.type === "eval" && typeof ev.step === "number" && ev.metrics && typeof ev.metrics === "object") {
        for (const [k, v] of Object.entries(ev.metrics)) {
          if (typeof v !== "number") continue;
          const s = curves[`eval:${k}`] ?? { step: [], value: [] };
          curves[`eval:${k}`] = s;
          s.step.push(ev.step);
          s.value.push(v);
        }
      } else if (ev.type === "step" && typeof ev.step === "number" && typeof ev.loss === "number") {
        loss.step.push(ev.step);
        loss.value.push(ev.loss);
      }
    }
    if (!curves.loss && loss.step.length) curves.loss = loss;
  }
  return curves;
}

function imagesOf(result: unknown, runDir: string): ReportTrial["images"] {
  const artifacts = (result as { artifacts?: unknown })?.artifacts;
  if (!Array.isArray(artifacts)) return [];
  return artifacts.flatMap((a) => {
    const art = a as { kind?: string; path?: string; label?: string; step?: number };
    if ((art.kind !== "grid" && art.kind !== "image") || typeof art.path !== "string") return [];
    const path = join(runDir, art.path);
    return existsSync(path) && /\.(png|jpe?g|webp)$/i.test(path)
      ? [{ path, label: art.label ?? art.path, step: art.step ?? null }]
      : [];
  });
}

function labelOf(axes: Record<string, unknown>): string {
  const parts = Object.entries(axes).map(([p, v]) => `${p}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return parts.length ? parts.join(" ") : "all trials";
}

/** Read a sweep directory (sweep.json and every trial's run directory). */
export async function loadReportData(dir: string): Promise<ReportData> {
  const manifest = await readManifest(dir);
  if (!manifest) throw new Error(`${dir}: no sweep.json here; run a sweep into this folder first`);
  const live = liveHolder(dir, LOCK) !== undefined;
  const trials: ReportTrial[] = manifest.trials.map((t) => {
    const runDir = join(dir, t.dir);
    const result = readJsonIfValid(join(runDir, "result.json")) as Record<string, unknown> | undefined;
    const timing = result?.timing as { wall_s?: number } | undefined;
    const ran = t.status === "succeeded" || t.status === "failed" || t.status === "cancelled";
    const problem = ran ? runDirProblem(runDir) : null;
    const corrupt = problem ? { type: "CorruptRunDir", message: problem } : null;
    const error =
      corrupt ?? (result?.error as { type: string; message: string } | null | undefined) ?? t.error;
    const unfinished = t.status === "pending" || t.status === "running";
    const row: ReportRow = {
      id: t.id,
      index: t.index,
      label: t.label,
      axes: t.axes,
      status: corrupt ? "failed" : unfinished && !live ? "not_run" : t.status,
      reused: t.reused,
      metrics: scalarMetrics(result?.metrics),
      error: error ? { type: error.type, message: error.message } : null,
      runDir,
      wallS: timing?.wall_s ?? null,
    };
    return {
      row,
      spec: (readJsonIfValid(join(runDir, "spec.json")) as Record<string, unknown> | undefined) ?? null,
      curves: !corrupt && result?.status === "succeeded" ? curvesOf(result.metrics, runDir) : {},
      images: imagesOf(result, runDir),
    };
  });
  const search = await readSearchResults(dir);
  const arms = search ? searchArms(search, trials) : groupArms(trials);
  const numeric = trials.flatMap((t) =>
    Object.entries(t.row.metrics).filter(([, v]) => typeof v === "number"),
  );
  // MF: excess over the Eckart-Young optimum separates the arms; the final loss is dominated by the optimum
  const preferred = ["excess_loss", "final_loss"].find((m) => numeric.some(([k]) => k === m));
  const primary = search?.objective ?? preferred ?? numeric[0]?.[0] ?? null;
  const task = String((manifest.base as { task?: unknown })?.task ?? trials[0]?.spec?.task ?? "unknown");
  return { dir, manifest, task, trials, arms, primary, search };
}

/** Every trial sharing the same axis values except `seed` is one arm. */
function groupArms(trials: ReportTrial[]): Arm[] {
  const arms = new Map<string, Arm>();
  for (const t of trials) {
    const axes = Object.fromEntries(Object.entries(t.row.axes).filter(([p]) => p !== "seed"));
    const key = JSON.stringify(axes);
    let arm = arms.get(key);
    if (!arm) {
      arm = { key, label: labelOf(axes), axes, trials: [] };
      arms.set(key, arm);
    }
    arm.trials.push(t);
  }
  return [...arms.values()];
}

/** One arm per study: its confirmation runs, else its best trial's run. */
function searchArms(search: SearchResults, trials: ReportTrial[]): Arm[] {
  const byId = new Map(trials.map((t) => [t.row.id, t]));
  return search.studies.flatMap((st): Arm[] => {
    if (!st.best) return [];
    const conf = search.confirmations.find((c) => c.study === st.name)?.rows.map((r) => r.id) ?? [];
    const best = st.trials.find((t) => t.number === st.best?.number)?.runId;
    const ids = conf.length ? conf : best ? [best] : [];
    const own = ids.flatMap((id) => byId.get(id) ?? []);
    const axes = { ...st.axes, ...st.best.params };
    return own.length ? [{ key: JSON.stringify(axes), label: labelOf(axes), axes, trials: own }] : [];
  });
}

// --- statistics -------------------------------------------------------------------------------------------

export function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Sample standard deviation (0 for a single value). */
export function std(xs: number[]): number {
  if (xs.length < 2) return 0;
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / (xs.length - 1));
}

export interface Band {
  step: number[];
  mean: number[];
  lo: number[];
  hi: number[];
  n: number;
}

/** An arm's curve over its seeds: the mean and min..max at each step every seed has. */
export function bandOf(arm: Arm, curve: string): Band | null {
  const series = arm.trials.map((t) => t.curves[curve]).filter((s): s is Series => s !== undefined);
  if (!series.length) return null;
  const maps = series.map((s) => new Map(s.step.map((st, i) => [st, s.value[i] as number])));
  const steps = (series[0] as Series).step.filter((st) => maps.every((m) => m.has(st)));
  const band: Band = { step: [], mean: [], lo: [], hi: [], n: series.length };
  for (const st of steps) {
    const vs = maps.map((m) => m.get(st) as number).filter(Number.isFinite);
    if (!vs.length) continue;
    band.step.push(st);
    band.mean.push(mean(vs));
    band.lo.push(Math.min(...vs));
    band.hi.push(Math.max(...vs));
  }
  return band;
}

/** Values of a scalar metric over an arm's succeeded trials, keyed by seed. */
export function metricBySeed(arm: Arm, metric: string): Map<unknown, number> {
  const out = new Map<unknown, number>();
  for (const t of arm.trials) {
    const v = t.row.metrics[metric];
    if (t.row.status === "succeeded" && typeof v === "number" && Number.isFinite(v))
      out.set(t.row.axes.seed ?? t.row.index, v);
  }
  return out;
}
