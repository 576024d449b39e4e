/**
 * The `search` block of a sweep: what to tune per cell of the `axes` product, checked before anything runs.
 *
 *   search: {
 *     space: { "optimizer.lr": { low: 1e-4, high: 1, log: true }, "adapter.r": { choices: [4, 8] } },
 *     trials: 16, sampler: "tpe", pruner: "median", objective: "final_loss", direction: "minimize",
 *     confirmSeeds: [0, 1, 2], warmupSteps: 10,
 *   }
 *
 * Each space path is probed like an axis (its bounds or choices set on every cell's spec, validated by the
 * spec schema); the objective must be a scalar metric of the task's metrics schema (sdk/metrics.ts).
 */
import { z } from "zod";
import { metricsSchemaFor } from "../metrics.js";
import type { SpecInput } from "../spec/index.js";
import { SweepInvalidError } from "./errors.js";
import { combinations, labelOf, type SweepPlan, type Trial, trialFor } from "./expand.js";

const Range = z.strictObject({
  low: z.number(),
  high: z.number(),
  log: z.boolean().default(false),
  int: z.boolean().default(false).describe("suggest integers"),
  points: z.int().min(2).default(5).describe("grid sampler only: values spread over [low, high]"),
});
const Choices = z.strictObject({ choices: z.array(z.union([z.string(), z.number(), z.boolean()])).min(1) });
export const SearchParam = z.union([Range, Choices]);

export const SearchBlock = z.strictObject({
  space: z.record(z.string(), SearchParam).refine((s) => Object.keys(s).length > 0, "expected a parameter"),
  trials: z.int().positive(),
  sampler: z.enum(["tpe", "random", "grid"]).default("tpe"),
  pruner: z.enum(["median", "hyperband", "none"]).default("median"),
  objective: z.string(),
  direction: z.enum(["minimize", "maximize"]).default("minimize"),
  confirmSeeds: z.array(z.int()).min(1).default([0, 1, 2]),
  /** Random trials before TPE models the space, and finished trials before the median pruner prunes. */
  startupTrials: z.int().nonnegative().default(5),
  /** The sampler's seed (reproducible suggestions). */
  seed: z.int().optional(),
  /**
   * Steps a trial runs before the pruner may stop it: the median pruner's `n_warmup_steps` (the earliest
   * prune is at this step), Hyperband's `min_resource` (its first rung; at least 1). Must be below the
   * trial's steps. Default, per cell: a quarter of the trial's steps, floor(steps / 4). A fraction rather
   * than a fixed count because the budget varies (4-step smoke runs to thousands of steps); a quarter
   * because the first steps rank arms by how fast they start (an OP-LoRA arm starts at B = 0 like LoRA but
   * with another effective lr) rather than by where they go, while three quarters of a doomed trial's
   * steps are still saved; at the bench's 40 steps it is 10, the `tail_loss` window the reported value is
   * the mean over (search.ts `tailLoss`).
   */
  warmupSteps: z
    .int()
    .nonnegative()
    .optional()
    .describe("steps before the pruner may stop a trial; below train.steps (default floor(steps / 4))"),
});
export type SearchBlockInput = z.input<typeof SearchBlock>;
export type SearchBlock = z.output<typeof SearchBlock>;
export type SearchParam = z.output<typeof SearchParam>;

/** One study: a cell of the axes product, its base spec and the trial spec for a set of params. */
export interface SearchCell {
  /** The study's name in the database (the cell's label). */
  name: string;
  axes: Record<string, unknown>;
  /** The training budget of a trial (the spec's steps), for the pruners. */
  maxSteps: number;
  /** `search.warmupSteps`, or its default for this cell's budget (floor(maxSteps / 4)). */
  warmupSteps: number;
}

function probes(p: SearchParam): unknown[] {
  return "choices" in p ? p.choices : [p.low, p.high];
}

function rangeProblems(path: string, p: SearchParam): string[] {
  if ("choices" in p) return [];
  const out: string[] = [];
  if (!(p.low < p.high)) out.push(`search.space.${path}: low (${p.low}) must be below high (${p.high})`);
  if (p.log && p.low <= 0)
    out.push(`search.space.${path}: log scale needs positive bounds, got low ${p.low}`);
  if (p.int && !(Number.isInteger(p.low) && Number.isInteger(p.high)))
    out.push(`search.space.${path}: int needs integer bounds`);
  return out;
}

/** Whether `objective` is a scalar number of the task's metrics schema. */
function objectiveProblem(task: string, objective: string): string | undefined {
  const schema = metricsSchemaFor(task) as z.ZodType & { shape?: Record<string, z.ZodType> };
  const field = schema.shape?.[objective];
  const numeric = field?.safeParse(0.5).success ?? false;
  if (numeric) return undefined;
  const names = Object.entries(schema.shape ?? {})
    .filter(([, f]) => f.safeParse(0.5).success)
    .map(([n]) => n);
  return `search.objective: '${objective}' is not a scalar metric of ${task} (expected one of ${names.join(", ") || "(none typed)"})`;
}

/** Whether an explicit `warmupSteps` leaves the cell's trials any step the pruner may stop them at. */
function warmupProblem(warmup: number | undefined, cell: { name: string; maxSteps: number }): string[] {
  if (warmup === undefined || warmup < cell.maxSteps) return [];
  return [
    `search.warmupSteps: ${warmup} must be below the trial's steps (train.steps = ${cell.maxSteps} in ${cell.name})`,
  ];
}

/**
 * Validate `search` against `base` and the plan; returns the parsed block and its studies (one per cell).
 * Throws SweepInvalidError naming the field (`search.space.optimizer.lr: ...`) before anything runs.
 */
export function planSearch(
  base: SpecInput,
  plan: SweepPlan,
  search: unknown,
): { block: SearchBlock; cells: SearchCell[] } {
  const parsed = SearchBlock.safeParse(search);
  if (!parsed.success)
    throw new SweepInvalidError(
      parsed.error.issues.map((i) => `search${i.path.map((k) => `.${String(k)}`).join("")}: ${i.message}`),
    );
  const block = parsed.data;
  const problems: string[] = [];
  if (plan.seeds !== undefined)
    problems.push("seeds: a search sweep takes its seeds from search.confirmSeeds");
  const cells = combinations({ ...(plan.axes && { axes: plan.axes }), ...(plan.zip && { zip: plan.zip }) });
  for (const [path, p] of Object.entries(block.space)) {
    problems.push(...rangeProblems(path, p));
    if (cells.some((c) => Object.hasOwn(c, path))) problems.push(`search.space.${path}: also an axis`);
    for (const cell of cells)
      for (const value of probes(p)) {
        try {
          trialFor(base, { ...cell, [path]: value });
        } catch (e) {
          const why = e instanceof SweepInvalidError ? e.problems.join("; ") : String(e);
          problems.push(`search.space.${path}: ${JSON.stringify(value)} refused (${why})`);
        }
      }
  }
  if (problems.length) throw new SweepInvalidError([...new Set(problems)]);
  const out = cells.map((axes) => {
    const spec = trialFor(base, axes).spec as { task: string; train?: { steps?: number } };
    const maxSteps = spec.train?.steps ?? 1;
    const warmupSteps = block.warmupSteps ?? Math.floor(maxSteps / 4);
    return { name: labelOf(axes), axes, maxSteps, warmupSteps, task: spec.task };
  });
  const task = out[0]?.task ?? "";
  const bad = objectiveProblem(task, block.objective);
  const late = [...(bad ? [bad] : []), ...out.flatMap((c) => warmupProblem(block.warmupSteps, c))];
  if (late.length) throw new SweepInvalidError(late);
  return { block, cells: out.map(({ task: _t, ...c }) => c) };
}

export type SearchPlan = ReturnType<typeof planSearch>;

/** One trial spec per cell at each param's first probe (low bound or first choice): what a backend checks. */
export function probeTrials(base: SpecInput, plan: SearchPlan): Trial[] {
  const first = Object.fromEntries(Object.entries(plan.block.space).map(([p, d]) => [p, probes(d)[0]]));
  return plan.cells.map((c, index) => ({ ...trialFor(base, { ...c.axes, ...first }), index }));
}

/** True when `value` lies within 5% of the range's width (log or linear) of either bound. */
export function atEdge(p: SearchParam, value: unknown): boolean {
  if ("choices" in p || typeof value !== "number") return false;
  const f = (x: number) => (p.log ? Math.log(x) : x);
  const span = f(p.high) - f(p.low);
  return f(value) - f(p.low) <= 0.05 * span || f(p.high) - f(value) <= 0.05 * span;
}
