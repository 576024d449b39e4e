/**
 * Finding past runs: `listRuns(dir)` walks a folder for run directories (plain runs and sweep trials,
 * SWEEP/runs/<id>/), `showRun(dir)` reads one back with its artifacts.
 *
 * A folder is a run directory when it holds spec.json, result.json, events.ndjson or run.lock; the walk
 * does not descend into one (its adapter/ and checkpoints are the run's), nor into hidden folders
 * (a sweep's .trash/) or node_modules. A bad run directory (no spec.json, a result.json that is not JSON
 * or not a RunResult) is listed with its problem: one bad file never stops a listing. A sweep's trials that
 * have not started (no folder, or no spec.json in it yet) are listed from its manifest, and `showRun` shows
 * one with the spec it will run.
 */
import { existsSync, readdirSync, statSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve } from "node:path";
import { InputError } from "./errors.js";
import { liveHolder } from "./lock.js";
import { keyMetricsFor } from "./metrics.js";
import { type ArtifactKind, type RunResult, scalarMetrics } from "./result.js";
import { RUN_LOCK, readJsonIfValid, readResult, runDirProblem } from "./run-dir.js";
import type { SpecInput } from "./spec/index.js";
import { SweepInvalidError } from "./sweep/errors.js";
import { trialFor } from "./sweep/expand.js";
import { LOCK, MANIFEST, type ManifestTrial, RUNS, type SweepManifest } from "./sweep/store.js";

/**
 * `succeeded` / `failed` / `cancelled`: what result.json says (`pruned`: a search trial its pruner
 * stopped); `running`: no result yet and a live process holds run.lock; `incomplete`: no result and no
 * live holder (killed, or the machine went down); `not_a_run`: run files but no spec.json; `corrupt`:
 * result.json or events.ndjson unreadable or invalid (the problem says which). A sweep trial that has not
 * started has its manifest's name (sweep/store.ts `TrialStatus`): `pending` while a live process holds the
 * sweep's lock, `not_run` when the sweep ended (finished, cancelled or killed) without running it.
 */
export const RUN_LIST_STATUSES = [
  "succeeded",
  "failed",
  "cancelled",
  "pruned",
  "running",
  "incomplete",
  "pending",
  "not_run",
  "not_a_run",
  "corrupt",
] as const;
export type RunListStatus = (typeof RUN_LIST_STATUSES)[number];

/** The adapter a run trained: `adapter.kind`, `r`, `lora_alpha`, `use_rslora`, `use_dora` from its spec.json. */
export interface RunArm {
  kind: string;
  r: number | null;
  lora_alpha: number | null;
  use_rslora: boolean;
  use_dora: boolean;
}

/** The sweep a trial belongs to, from SWEEP/sweep.json. */
export interface RunSweep {
  /** The sweep directory's name. */
  name: string;
  /** The sweep directory (absolute). */
  dir: string;
  /** The trial's axes label (`adapter.kind=lora seed=0`), null when the manifest does not list it. */
  label: string | null;
  axes: Record<string, unknown>;
}

export interface RunEntry {
  /** The run directory (absolute). */
  path: string;
  /** Its folder name (a sweep trial's id). */
  runId: string;
  task: string | null;
  /** Null when the spec has no adapter (the MF study) or there is no spec. */
  arm: RunArm | null;
  status: RunListStatus;
  /**
   * What is wrong (file named) for `not_a_run` and `corrupt`; for a sweep trial that has not started, why
   * sweep.json's base and axes no longer make a valid spec; null otherwise.
   */
  problem: string | null;
  /** Why the run failed (result.json's error: `TrainingDiverged`, `InputError`, ...), null otherwise. */
  error: RunError | null;
  /** The task's key metrics (`KEY_METRICS`), null where the result lacks one; empty without a result. */
  metrics: Record<string, number | null>;
  /** result.json's `timing.wall_s`; for a running run, seconds since spec.json was written. */
  wallS: number | null;
  /** The newest of result.json and spec.json (the folder itself when neither exists), ISO 8601. */
  modifiedAt: string;
  /** Seconds between `modifiedAt` and the listing. */
  ageS: number;
  /** Set for a sweep trial. */
  sweep: RunSweep | null;
}

/** A failed run's error, as result.json records it. */
export interface RunError {
  type: string;
  message: string;
}

export interface ListRunsOptions {
  /** Only runs of this task. */
  task?: string | undefined;
  /** Only runs with this status. */
  status?: RunListStatus | undefined;
}

const RUN_FILES = ["spec.json", "result.json", "events.ndjson", RUN_LOCK];

/**
 * Every run directory under `dir` (itself included), newest first. Throws InputError when `dir` is not
 * a directory.
 */
export function listRuns(dir: string, options: ListRunsOptions = {}): RunEntry[] {
  const root = resolve(dir);
  if (!existsSync(root) || !statSync(root).isDirectory())
    throw new InputError(`${dir}: no such directory`, root);
  const now = Date.now();
  const entries: RunEntry[] = [];
  const sweeps: SweepContext[] = [];
  const enclosing = enclosingSweep(root);
  if (enclosing) sweeps.push(enclosing);
  walk(root, enclosing, {
    run: (runDir, sweep) => entries.push(runEntry(runDir, sweep, now)),
    sweep: (s) => sweeps.push(s),
  });
  entries.push(...unstartedTrials(root, sweeps, new Set(entries.map((e) => e.path)), now));
  return entries
    .filter((e) => (options.task === undefined || e.task === options.task) && matches(e, options.status))
    .sort((a, b) => b.modifiedAt.localeCompare(a.modifiedAt) || a.path.localeCompare(b.path));
}

function matches(entry: RunEntry, status: RunListStatus | undefined): boolean {
  return status === undefined || entry.status === status;
}

interface SweepContext {
  dir: string;
  trials: Map<string, ManifestTrial>;
  /** The manifest's base spec: with a trial's axes, the spec of a trial that has not started. */
  base: unknown;
  /** A live process holds SWEEP/sweep.lock: its trials that have not started yet still may. */
  live: boolean;
}

interface Visitor {
  run: (runDir: string, sweep: SweepContext | null) => void;
  sweep: (sweep: SweepContext) => void;
}

function walk(dir: string, sweep: SweepContext | null, visit: Visitor) {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return; // unreadable folder (permissions): nothing to list in it
  }
  if (RUN_FILES.some((f) => names.includes(f))) {
    visit.run(dir, sweep);
    return;
  }
  const inner = (names.includes(MANIFEST) ? sweepContext(dir) : null) ?? sweep;
  if (inner !== sweep && inner) visit.sweep(inner);
  for (const name of names.sort()) {
    if (name.startsWith(".") || name === "node_modules") continue;
    const path = join(dir, name);
    if (isDir(path)) walk(path, inner, visit);
  }
}

/**
 * The sweep whose manifest is in `dir` (its trials by absolute run directory); null when `dir/sweep.json` is
 * no manifest (no `trials`: e.g. the sweep file a user wrote, `oplora sweep sweep.json`, beside `runs/`).
 */
function sweepContext(dir: string): SweepContext | null {
  const manifest = readJsonIfValid<SweepManifest>(join(dir, MANIFEST));
  if (!Array.isArray(manifest?.trials)) return null;
  const trials = new Map<string, ManifestTrial>();
  for (const t of manifest.trials) trials.set(resolve(dir, t.dir), t);
  return { dir, trials, base: manifest?.base, live: liveHolder(dir, LOCK) !== undefined };
}

/** The manifest statuses of a trial that has not run (yet): its folder may be missing or hold no spec. */
const NOT_STARTED = new Set(["pending", "running", "not_run"]);

function notStarted(trial: ManifestTrial | undefined): trial is ManifestTrial {
  return trial !== undefined && NOT_STARTED.has(trial.status);
}

/** The sweeps' trials under `root` that have not started and have no entry yet (no run files). */
function unstartedTrials(root: string, sweeps: SweepContext[], listed: Set<string>, now: number): RunEntry[] {
  const out: RunEntry[] = [];
  for (const sweep of sweeps)
    for (const [runDir, trial] of sweep.trials) {
      const rel = relative(root, runDir);
      const under = !rel.startsWith("..") && !isAbsolute(rel);
      if (under && !listed.has(runDir) && notStarted(trial))
        out.push(unstartedEntry(runDir, sweep, trial, now));
    }
  return out;
}

interface PlannedSpec {
  /** Null when `problem` says why there is none. */
  spec: Record<string, unknown> | null;
  problem: string | null;
}

/**
 * The spec a sweep trial that has not started will run: the manifest's base with the trial's axes, through
 * the sweep's own per-trial expansion (sweep/expand.ts `trialFor`: defaults filled in, validated).
 */
function plannedSpec(sweep: SweepContext, trial: ManifestTrial): PlannedSpec {
  try {
    const spec = trialFor(sweep.base as SpecInput, trial.axes ?? {}).spec as Record<string, unknown>;
    return { spec, problem: null };
  } catch (e) {
    if (!(e instanceof SweepInvalidError)) throw e;
    const where = `${join(sweep.dir, MANIFEST)}: trial ${trial.index} (${trial.label})`;
    return { spec: null, problem: `${where}: base and axes are not a valid spec: ${e.problems.join("; ")}` };
  }
}

/**
 * A sweep trial that has not started, from the manifest: task and arm from the spec it will run, its age
 * from the manifest's last write (or its folder's).
 */
function unstartedEntry(
  runDir: string,
  sweep: SweepContext,
  trial: ManifestTrial,
  now: number,
  planned: PlannedSpec = plannedSpec(sweep, trial),
): RunEntry {
  const modified = mtime(runDir) ?? mtime(join(sweep.dir, MANIFEST)) ?? now;
  const task = planned.spec?.task ?? (sweep.base as { task?: unknown } | undefined)?.task;
  return {
    path: runDir,
    runId: basename(runDir),
    task: typeof task === "string" ? task : null,
    arm: armOf(planned.spec?.adapter),
    status: trial.status !== "not_run" && sweep.live ? "pending" : "not_run",
    problem: planned.problem,
    error: null,
    metrics: {},
    wallS: null,
    modifiedAt: new Date(modified).toISOString(),
    ageS: Math.max(0, (now - modified) / 1000),
    sweep: sweepOf(sweep, trial),
  };
}

function sweepOf(sweep: SweepContext, trial: ManifestTrial | undefined): RunSweep {
  return { name: basename(sweep.dir), dir: sweep.dir, label: trial?.label ?? null, axes: trial?.axes ?? {} };
}

/** The sweep above `path` when it is SWEEP/runs or SWEEP/runs/<id> (a listing started inside a sweep). */
function enclosingSweep(path: string): SweepContext | null {
  for (const runs of [path, dirname(path)]) {
    const sweep = dirname(runs);
    const context = basename(runs) === RUNS && existsSync(join(sweep, MANIFEST)) ? sweepContext(sweep) : null;
    if (context) return context;
  }
  return null;
}

function isDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function mtime(path: string): number | null {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return null;
  }
}

function runEntry(runDir: string, sweep: SweepContext | null, now: number): RunEntry {
  const specPath = join(runDir, "spec.json");
  const trial = sweep?.trials.get(runDir);
  // its run is starting (run.lock taken, spec.json not written yet) or was stopped before it
  if (sweep && notStarted(trial) && !existsSync(specPath)) return unstartedEntry(runDir, sweep, trial, now);
  const spec = readJsonIfValid<Record<string, unknown>>(specPath);
  const { status, problem, result } = statusOf(runDir, spec !== undefined);
  const specTime = mtime(specPath);
  const times = [mtime(join(runDir, "result.json")), specTime].filter((t): t is number => t !== null);
  const modified = times.length ? Math.max(...times) : (mtime(runDir) ?? now);
  const task = typeof spec?.task === "string" ? spec.task : (result?.task ?? null);
  return {
    path: runDir,
    runId: basename(runDir),
    task,
    arm: armOf(spec?.adapter),
    status: status === "cancelled" && trial?.status === "pruned" ? "pruned" : status,
    problem,
    error: result?.error ? { type: result.error.type, message: result.error.message } : null,
    metrics: result && task ? keyMetrics(task, result.metrics) : {},
    wallS:
      result?.timing?.wall_s ?? (status === "running" && specTime !== null ? (now - specTime) / 1000 : null),
    modifiedAt: new Date(modified).toISOString(),
    ageS: Math.max(0, (now - modified) / 1000),
    sweep: sweep && sweepOf(sweep, trial),
  };
}

interface Status {
  status: RunListStatus;
  problem: string | null;
  result: RunResult | null;
}

/** The run's status from its files; result.json through the validated reader (sdk/run-dir.ts). */
function statusOf(runDir: string, hasSpec: boolean): Status {
  const specPath = join(runDir, "spec.json");
  if (!hasSpec) {
    const why = existsSync(specPath) ? "not valid JSON" : "missing: not a run directory";
    return { status: "not_a_run", problem: `${specPath}: ${why}`, result: null };
  }
  if (!existsSync(join(runDir, "result.json"))) {
    const running = liveHolder(runDir, RUN_LOCK) !== undefined;
    return { status: running ? "running" : "incomplete", problem: null, result: null };
  }
  const problem = runDirProblem(runDir);
  if (problem) return { status: "corrupt", problem, result: null };
  const result = readResult(runDir) as RunResult;
  return { status: result.status, problem: null, result };
}

function armOf(adapter: unknown): RunArm | null {
  if (!adapter || typeof adapter !== "object") return null;
  const a = adapter as Record<string, unknown>;
  if (typeof a.kind !== "string") return null;
  return {
    kind: a.kind,
    r: typeof a.r === "number" ? a.r : null,
    lora_alpha: typeof a.lora_alpha === "number" ? a.lora_alpha : null,
    use_rslora: a.use_rslora === true,
    use_dora: a.use_dora === true,
  };
}

function keyMetrics(task: string, metrics: unknown): Record<string, number | null> {
  const scalars = scalarMetrics(metrics);
  const out: Record<string, number | null> = {};
  for (const key of keyMetricsFor(task)) {
    const v = scalars[key];
    out[key] = typeof v === "number" ? v : null;
  }
  return out;
}

/** One file a run produced, as `showRun` reports it. */
export interface RunArtifact {
  kind: ArtifactKind;
  /** Relative to the run directory, as result.json records it. */
  path: string;
  label: string | null;
  step: number | null;
  exists: boolean;
  /** Bytes (a folder's files summed), null when it does not exist. */
  bytes: number | null;
}

export interface RunDetails {
  entry: RunEntry;
  /** spec.json as recorded (defaults filled in); for a trial that has not started, the spec it will run. */
  spec: Record<string, unknown>;
  /** Every scalar metric (one level of nesting flattened: `steps_to_excess.1e-3`); empty without a result. */
  metrics: Record<string, number | string | boolean | null>;
  /** Why the run failed (from result.json), null otherwise: `entry.error`. */
  error: RunError | null;
  artifacts: RunArtifact[];
}

/**
 * One run directory read back: its listing entry, spec, scalar metrics, error and artifacts. A sweep trial
 * that has not started (SWEEP/runs/<id> listed in sweep.json, no spec.json yet, its folder there or not) is
 * its manifest entry (pending or not_run, as `listRuns` says) and the spec it will run. Throws InputError
 * when `dir` does not exist or holds no spec.json otherwise; a corrupt result.json is `entry.problem`.
 */
export function showRun(dir: string): RunDetails {
  const runDir = resolve(dir);
  const sweep = enclosingSweep(runDir);
  const trial = sweep?.trials.get(runDir);
  if (sweep && notStarted(trial) && !existsSync(join(runDir, "spec.json"))) {
    const planned = plannedSpec(sweep, trial);
    const entry = unstartedEntry(runDir, sweep, trial, Date.now(), planned);
    return { entry, spec: planned.spec ?? {}, metrics: {}, error: null, artifacts: [] };
  }
  if (!isDir(runDir)) throw new InputError(`${dir}: no such run directory`, runDir);
  const spec = readJsonIfValid<Record<string, unknown>>(join(runDir, "spec.json"));
  if (!spec || typeof spec !== "object")
    throw new InputError(
      `${dir} is not a run directory: ${join(runDir, "spec.json")} missing or not JSON`,
      runDir,
    );
  const entry = runEntry(runDir, sweep, Date.now());
  const result = entry.status === "corrupt" ? null : readResult(runDir);
  return {
    entry,
    spec,
    metrics: scalarMetrics(result?.metrics),
    error: entry.error,
    artifacts: (result?.artifacts ?? []).map((a) => {
      const bytes = sizeOf(join(runDir, a.path));
      return {
        kind: a.kind,
        path: a.path,
        label: a.label ?? null,
        step: a.step ?? null,
        exists: bytes !== null,
        bytes,
      };
    }),
  };
}

function sizeOf(path: string): number | null {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch {
    return null;
  }
  if (!st.isDirectory()) return st.size;
  let total = 0;
  for (const name of readdirSync(path)) total += sizeOf(join(path, name)) ?? 0;
  return total;
}
