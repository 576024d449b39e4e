/**
 * The comparisons users care about, LoRA arm vs OP-LoRA arm:
 *
 *   same setting   the arms differ only in `adapter.kind` (and whatever is zipped with it, e.g. each arm's
 *                  tuned lr); half rank: OP-LoRA at r vs LoRA at 2r, when `adapter.r` is an axis
 *   final metric   mean ± std over seeds per arm; difference OP − LoRA (paired by seed) with its spread.
 *                  The primary metric (MF: excess over the optimum) for same-setting pairs; half-rank pairs
 *                  compare `final_loss` when the task reports it, since ranks r and 2r have different optima
 *                  (an excess of 0 at r can still be a far higher loss than 2r's)
 *   speed-up       steps LoRA needs to reach its own final loss / steps OP-LoRA needs to reach it
 *                  (on the seed-mean loss curves; null when OP-LoRA never gets there)
 */
import { type Arm, bandOf, mean, metricBySeed, type ReportData, std } from "./data.js";

const KIND = "adapter.kind";
const RANK = "adapter.r";

export interface Stat {
  mean: number;
  std: number;
  n: number;
}

export interface Comparison {
  kind: "same setting" | "half rank";
  /** What the pair shares (axes other than the arm's own). */
  context: string;
  lora: string;
  opLora: string;
  metric: string;
  loraFinal: Stat | null;
  opFinal: Stat | null;
  /** OP − LoRA per seed (paired), mean ± std. */
  difference: Stat | null;
  /** opFinal.mean / loraFinal.mean. */
  ratio: number | null;
  /** Steps to reach LoRA's final loss: LoRA's, OP-LoRA's, and LoRA's / OP-LoRA's. */
  stepsLora: number | null;
  stepsOp: number | null;
  speedup: number | null;
}

export interface ArmSummary {
  label: string;
  n: number;
  succeeded: number;
  final: Stat | null;
}

function stat(xs: number[]): Stat | null {
  return xs.length ? { mean: mean(xs), std: std(xs), n: xs.length } : null;
}

/** Axes the arm's kind carries with it: zipped with `adapter.kind` in the plan, or searched per arm. */
function boundPaths(data: ReportData): Set<string> {
  const zip = data.manifest.plan.zip;
  const groups = zip === undefined ? [] : Array.isArray(zip) ? zip : [zip];
  // with a search, each arm sits at its own best of the searched params
  const bound = new Set<string>([KIND, ...Object.keys(data.search?.space ?? {})]);
  for (const g of groups) if (Object.hasOwn(g, KIND)) for (const p of Object.keys(g)) bound.add(p);
  return bound;
}

function contextOf(arm: Arm, drop: Set<string>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(arm.axes).filter(([p]) => !drop.has(p)));
}

function describe(ctx: Record<string, unknown>): string {
  const parts = Object.entries(ctx).map(([p, v]) => `${p}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return parts.length ? parts.join(" ") : "—";
}

function firstReach(step: number[], values: number[], level: number): number | null {
  for (let i = 0; i < values.length; i++) if ((values[i] as number) <= level) return step[i] as number;
  return null;
}

function compare(
  data: ReportData,
  kind: Comparison["kind"],
  context: string,
  lora: Arm,
  op: Arm,
  metric: string = data.primary ?? "final_loss",
): Comparison {
  const l = metricBySeed(lora, metric);
  const o = metricBySeed(op, metric);
  const diffs = [...o.entries()].flatMap(([seed, v]) => (l.has(seed) ? [v - (l.get(seed) as number)] : []));
  const loraFinal = stat([...l.values()]);
  const opFinal = stat([...o.values()]);
  const lb = bandOf(lora, "loss");
  const ob = bandOf(op, "loss");
  let stepsLora: number | null = null;
  let stepsOp: number | null = null;
  if (lb?.mean.length && ob?.mean.length) {
    const target = lb.mean[lb.mean.length - 1] as number;
    stepsLora = firstReach(lb.step, lb.mean, target);
    stepsOp = firstReach(ob.step, ob.mean, target);
  }
  return {
    kind,
    context,
    lora: lora.label,
    opLora: op.label,
    metric,
    loraFinal,
    opFinal,
    difference: stat(diffs),
    ratio: loraFinal && opFinal && loraFinal.mean !== 0 ? opFinal.mean / loraFinal.mean : null,
    stepsLora,
    stepsOp,
    speedup: stepsLora !== null && stepsOp !== null && stepsOp > 0 ? stepsLora / stepsOp : null,
  };
}

/** LoRA vs OP-LoRA pairs of arms (none when the sweep has no `adapter.kind` axis). */
export function comparisons(data: ReportData): Comparison[] {
  const out: Comparison[] = [];
  if (!data.arms.some((a) => Object.hasOwn(a.axes, KIND))) return out;
  const bound = boundPaths(data);
  const loras = data.arms.filter((a) => a.axes[KIND] === "lora");
  const ops = data.arms.filter((a) => a.axes[KIND] === "op-lora");
  for (const op of ops) {
    const ctx = JSON.stringify(contextOf(op, bound));
    const twin = loras.find((l) => JSON.stringify(contextOf(l, bound)) === ctx);
    if (twin) out.push(compare(data, "same setting", describe(contextOf(op, bound)), twin, op));
  }
  if (!bound.has(RANK) && data.arms.some((a) => typeof a.axes[RANK] === "number")) {
    const hasLoss = data.trials.some((t) => typeof t.row.metrics.final_loss === "number");
    const metric = hasLoss ? "final_loss" : (data.primary ?? "final_loss");
    const noRank = new Set([...bound, RANK]);
    for (const op of ops) {
      const r = op.axes[RANK];
      if (typeof r !== "number") continue;
      const ctx = JSON.stringify(contextOf(op, noRank));
      const twin = loras.find((l) => l.axes[RANK] === 2 * r && JSON.stringify(contextOf(l, noRank)) === ctx);
      if (twin)
        out.push(
          compare(
            data,
            "half rank",
            `${describe(contextOf(op, noRank))} (OP r=${r} vs LoRA r=${2 * r})`,
            twin,
            op,
            metric,
          ),
        );
    }
  }
  return out;
}

export function armSummaries(data: ReportData): ArmSummary[] {
  const metric = data.primary;
  return data.arms.map((a) => ({
    label: a.label,
    n: a.trials.length,
    succeeded: a.trials.filter((t) => t.row.status === "succeeded").length,
    final: metric ? stat([...metricBySeed(a, metric).values()]) : null,
  }));
}
