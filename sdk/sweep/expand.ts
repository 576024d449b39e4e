/**
 * Sweep expansion: a base spec and axes over dotted spec paths become a list of validated trials.
 *
 *     trials = grid(axes) x zip(group_1) x ... x zip(group_n) x seeds        (seeds vary fastest)
 *
 * Every trial spec is checked against the zod spec union before anything runs: an axis over a path the
 * spec does not have, or a value the schema rejects, fails naming the trial and the path. A trial's id is
 * the short hash of its validated spec (defaults filled in), which also names its run directory.
 */
import { Spec, type SpecInput } from "../spec/index.js";
import { formatIssues } from "../spec/validate.js";
import { ID_LENGTH, specHash } from "./canonical.js";
import { SweepInvalidError } from "./errors.js";
import { deletePath, getPath, setPath } from "./paths.js";

/** Dotted paths into `T` (distributes over unions), e.g. `"adapter.r" | "optimizer.lr" | "seed"`. */
export type DottedPath<T, D extends number = 5> = [D] extends [never]
  ? never
  : T extends string | number | boolean | null | undefined | readonly unknown[]
    ? never
    : T extends object
      ? {
          [K in keyof T & string]-?: K | `${K}.${DottedPath<NonNullable<T[K]>, [never, 0, 1, 2, 3, 4][D]>}`;
        }[keyof T & string]
      : never;
/** The type at a dotted path of `T` (over every union branch that has it). */
export type PathValue<T, P extends string> = T extends unknown
  ? P extends `${infer K}.${infer R}`
    ? K extends keyof T
      ? PathValue<NonNullable<T[K]>, R>
      : never
    : P extends keyof T
      ? NonNullable<T[P]>
      : never
  : never;

export type SpecPath = DottedPath<SpecInput>;
/** Axis values per path; typed where the path is a known spec path, any path accepted at run time. */
export type Axes = { [P in SpecPath]?: readonly PathValue<SpecInput, P>[] } & Record<
  string,
  readonly unknown[]
>;

/** What to vary: a grid over `axes`, zipped groups, and seeds (an axis over `seed`). */
export interface SweepPlan {
  /** Grid: every combination of these axes' values. */
  axes?: Axes;
  /** Zipped lists: the lists of one group advance together (equal lengths); groups combine as a grid. */
  zip?: Axes | Axes[];
  /** Shorthand for an axis over `seed`, varied fastest. */
  seeds?: readonly number[];
}

export interface Trial {
  /** Position in the sweep (0-based). */
  index: number;
  /** Short hash of the validated spec: the trial's id and its run directory's name. */
  id: string;
  /** Full sha256 of the validated spec's canonical JSON. */
  hash: string;
  /** `path=value` pairs of this trial's axes, e.g. `adapter.kind=lora seed=1`. */
  label: string;
  /** This trial's value of every axis (paths in the order the plan lists them). */
  axes: Record<string, unknown>;
  /** The validated spec (defaults filled in): exactly what the run receives. */
  spec: Spec;
}

/** The axis paths of a plan, in order: grid axes, zipped groups, then `seed`. */
export function axisPaths(plan: SweepPlan): string[] {
  const zips = plan.zip === undefined ? [] : Array.isArray(plan.zip) ? plan.zip : [plan.zip];
  const paths = [...Object.keys(plan.axes ?? {}), ...zips.flatMap((g) => Object.keys(g))];
  if (plan.seeds !== undefined) paths.push("seed");
  return paths;
}

/** The axis-value combinations of a plan, before validation. */
export function combinations(plan: SweepPlan): Record<string, unknown>[] {
  const problems: string[] = [];
  const factors: Record<string, unknown>[][] = [];
  const seen = new Set<string>();
  const claim = (path: string) => {
    if (seen.has(path)) problems.push(`axis '${path}' is given more than once`);
    seen.add(path);
  };
  for (const [path, values] of Object.entries(plan.axes ?? {})) {
    claim(path);
    if (!Array.isArray(values) || values.length === 0)
      problems.push(`axes.${path}: expected a non-empty list`);
    else factors.push(values.map((v) => ({ [path]: v })));
  }
  const zips = plan.zip === undefined ? [] : Array.isArray(plan.zip) ? plan.zip : [plan.zip];
  zips.forEach((group, g) => {
    const entries = Object.entries(group);
    const lengths = entries.map(([, v]) => (Array.isArray(v) ? v.length : -1));
    for (const [path, values] of entries) {
      claim(path);
      if (!Array.isArray(values) || values.length === 0)
        problems.push(`zip[${g}].${path}: expected a non-empty list`);
    }
    if (new Set(lengths).size > 1) {
      problems.push(
        `zip[${g}]: zipped lists must have equal lengths, got ${entries.map(([p], i) => `${p}: ${lengths[i]}`).join(", ")}`,
      );
    } else if (entries.length > 0 && (lengths[0] ?? 0) > 0) {
      factors.push(
        Array.from({ length: lengths[0] ?? 0 }, (_, i) =>
          Object.fromEntries(entries.map(([p, v]) => [p, (v as readonly unknown[])[i]])),
        ),
      );
    }
  });
  if (plan.seeds !== undefined) {
    claim("seed");
    if (!Array.isArray(plan.seeds) || plan.seeds.length === 0)
      problems.push("seeds: expected a non-empty list");
    else factors.push(plan.seeds.map((s) => ({ seed: s })));
  }
  if (problems.length) throw new SweepInvalidError(problems);
  let combos: Record<string, unknown>[] = [{}];
  for (const factor of factors) combos = combos.flatMap((c) => factor.map((f) => ({ ...c, ...f })));
  return combos;
}

export function labelOf(axes: Record<string, unknown>): string {
  const parts = Object.entries(axes).map(([p, v]) => `${p}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return parts.length ? parts.join(" ") : "(base)";
}

/**
 * Expand `plan` over `base` into validated trials. Throws `SweepInvalidError` listing every problem,
 * each naming its trial (`trial 3 (adapter.r=-1)`) and path, before anything runs.
 */
export function expandSweep(base: SpecInput, plan: SweepPlan = {}): Trial[] {
  const baseParsed = Spec.safeParse(base, { reportInput: true });
  if (!baseParsed.success) {
    throw new SweepInvalidError(formatIssues(baseParsed.error.issues, Spec, base).map((p) => `base: ${p}`));
  }
  // A missing object on an axis path starts from its default's discriminator (`adapter` -> {kind}), so an
  // axis over `adapter.r` works on a base that leaves the adapter to its default.
  const seed = (prefix: string) => {
    const def = getPath(baseParsed.data, prefix);
    const kind = def && typeof def === "object" ? (def as Record<string, unknown>).kind : undefined;
    return kind === undefined ? {} : { kind };
  };
  const problems: string[] = [];
  const trials: Trial[] = [];
  const byHash = new Map<string, number>();
  combinations(plan).forEach((axes, index) => {
    const label = labelOf(axes);
    const name = `trial ${index} (${label})`;
    let input: unknown = structuredClone(base);
    for (const [path, value] of Object.entries(axes)) input = setPath(input, path, value, seed);
    let parsed = Spec.safeParse(input, { reportInput: true });
    if (!parsed.success) {
      // An axis that picks a union branch (`adapter.kind=lora`) drops the base's keys that branch lacks
      // (the op-lora `generator` block), instead of failing on them.
      const drop = parsed.error.issues.flatMap((i) =>
        i.code === "unrecognized_keys" && Object.hasOwn(axes, [...i.path, "kind"].join("."))
          ? i.keys.map((k) => [...i.path, k].join(".")).filter((p) => !Object.hasOwn(axes, p))
          : [],
      );
      if (drop.length) {
        for (const p of drop) input = deletePath(input, p);
        parsed = Spec.safeParse(input, { reportInput: true });
      }
    }
    if (!parsed.success) {
      for (const p of formatIssues(parsed.error.issues, Spec, input)) {
        const axis = Object.keys(axes).find((a) => p.startsWith(`${a}: unknown key`));
        const task = String((input as { task?: unknown }).task);
        problems.push(`${name}: ${axis ? `axis '${axis}' is not a path of the ${task} spec (${p})` : p}`);
      }
      return;
    }
    const hash = specHash(parsed.data);
    const twin = byHash.get(hash);
    if (twin !== undefined) {
      problems.push(`${name}: same spec as trial ${twin} (an axis has no effect, or a value is repeated)`);
      return;
    }
    byHash.set(hash, index);
    trials.push({ index, id: hash.slice(0, ID_LENGTH), hash, label, axes, spec: parsed.data });
  });
  if (problems.length) throw new SweepInvalidError(problems);
  return trials;
}

/**
 * The one trial `axes` (one value per path, in plan order) picks over `base`: the spec, id and label
 * `expandSweep` gives that trial (index 0). Throws `SweepInvalidError` like expandSweep.
 */
export function trialFor(base: SpecInput, axes: Record<string, unknown>): Trial {
  const single = Object.fromEntries(Object.entries(axes).map(([p, v]) => [p, [v]]));
  return expandSweep(base, { axes: single })[0] as Trial;
}
