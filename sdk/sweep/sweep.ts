/**
 * `sweep(base, options)`: run every trial of a sweep into a run store, a few at a time.
 *
 *   const handle = sweep({ task: "matrix_factorization" }, {
 *     axes: { "adapter.kind": ["lora", "op-lora"] }, seeds: [0, 1, 2], concurrency: 2, outDir: "sweeps/mf",
 *   });
 *   for await (const ev of handle) if (ev.type === "trial_finished") console.log(ev.trial.label);
 *   const table = await handle;        // SweepResults: one row per trial
 *
 * Trials are validated before anything starts (SweepInvalidError, thrown at once). Trials that already
 * succeeded in `outDir` are skipped; failed or cancelled ones run again from an empty directory. A failed
 * trial does not stop the others unless `failFast`. Cancelling (`signal`, `handle.cancel()`, `break` out
 * of `for await`) stops every running trial and keeps the finished ones; the table says what ran.
 * With several GPUs (or `devices`), each slot pins one device through CUDA_VISIBLE_DEVICES.
 */
import { mkdir } from "node:fs/promises";
import { relative, resolve } from "node:path";
import { KILL_GRACE_MS } from "../bridge/process.js";
import { resolvePython } from "../bridge/python.js";
import type { RunEvent } from "../events.js";
import { holderToken, SWEEP_HOLDER_ENV } from "../lock.js";
import { type RunResult, scalarMetrics } from "../result.js";
import type { SpecInput } from "../spec/index.js";
import { EventStream } from "../stream.js";
import { SweepInvalidError } from "./errors.js";
import { expandSweep, type SweepPlan, type Trial, trialFor } from "./expand.js";
import { detectGpus } from "./gpus.js";
import { type Lane, type Mode, makeLane, WarmLane } from "./lanes.js";
import { type RayDriver, RayLane, SweepBackend, startRayDriver } from "./ray.js";
import {
  runStudy,
  SearchProcess,
  type SearchResults,
  type StudyContext,
  type StudyResult,
  saveSearchResults,
  summarizeConfirmations,
} from "./search.js";
import { planSearch, probeTrials, type SearchBlockInput, type SearchPlan } from "./search-block.js";
import {
  acquireLock,
  clearTrialDir,
  type ManifestTrial,
  ManifestWriter,
  reusableResult,
  type TrialStatus,
  trialDir,
} from "./store.js";

export interface SweepOptions extends SweepPlan {
  /** The sweep directory (run store): created if missing, resumed if it holds an earlier sweep. */
  outDir: string;
  /** Trials running at once (default: the number of pinned devices, else 1). */
  concurrency?: number | undefined;
  /**
   * CUDA devices to pin, one per slot, through CUDA_VISIBLE_DEVICES (e.g. ["0", "1"]). "auto" (default)
   * pins one GPU per slot when nvidia-smi lists two or more; "none" never pins.
   */
  devices?: "auto" | "none" | readonly string[] | undefined;
  /** Aborting it cancels the sweep. */
  signal?: AbortSignal | undefined;
  /** Stop the sweep at the first failed trial (running ones are cancelled). */
  failFast?: boolean | undefined;
  /** Python interpreter (default: env OPLORA_PYTHON, then the package's .venv). */
  python?: string | undefined;
  /** "warm" (default): a long-lived worker per slot; "cold": one process per trial. */
  mode?: Mode | undefined;
  /** Extra environment variables for the Python processes. */
  env?: Record<string, string | undefined> | undefined;
  /** ms between SIGTERM and SIGKILL when cancelling a trial (default 5000). */
  killGraceMs?: number | undefined;
  /** Python's stdout/stderr chatter, as it arrives. */
  onStderr?: ((chunk: string) => void) | undefined;
  /**
   * Where trials run: `{kind: "local"}` (default: processes on this machine) or `{kind: "ray", address,
   * runtimeEnv?, maxRetries?, sharedStore?, pendingTimeoutS?}` (one Ray task per trial; see sweep/ray.ts).
   */
  backend?: SweepBackend | undefined;
  /**
   * Tune per cell of the axes product instead of running a grid: one Optuna study per cell over
   * `search.space` (see sweep/search-block.ts), then each cell's best re-run with `search.confirmSeeds`.
   */
  search?: SearchBlockInput | undefined;
}

/** A trial as events and rows name it. */
export interface TrialInfo {
  id: string;
  index: number;
  label: string;
  axes: Record<string, unknown>;
}

/** One row of the results table. */
export interface TrialRow extends TrialInfo {
  status: Exclude<TrialStatus, "pending" | "running">;
  /** True when an earlier sweep's result was reused (the trial did not run now). */
  reused: boolean;
  /** Scalar metrics of the run (nested objects flattened: `steps_to_excess.1e-3`, null: never reached). */
  metrics: Record<string, number | string | boolean | null>;
  error: { type: string; message: string } | null;
  /** Absolute path of the trial's run directory. */
  runDir: string;
  /** The run's own wall time (from result.json), null if it never ran. */
  wallS: number | null;
}

export interface SweepResults {
  dir: string;
  rows: TrialRow[];
  counts: Record<TrialRow["status"], number>;
  /** True when the sweep was cancelled (or stopped by failFast). */
  stopped: boolean;
  /** The sweep's wall time, seconds. */
  wallS: number;
  /** With a `search` block: the study per cell, its best, and the confirmation rows. */
  search?: SearchResults;
}

export type SweepEvent =
  | { type: "sweep_started"; dir: string; trials: number; toRun: number; slots: number }
  | { type: "trial_skipped"; trial: TrialInfo; row: TrialRow }
  | { type: "trial_started"; trial: TrialInfo; slot: number; device: string | null }
  | { type: "trial_progress"; trial: TrialInfo; event: RunEvent }
  | { type: "trial_finished"; trial: TrialInfo; row: TrialRow }
  | { type: "trial_failed"; trial: TrialInfo; row: TrialRow }
  | { type: "trial_cancelled"; trial: TrialInfo; row: TrialRow }
  | { type: "sweep_finished"; results: SweepResults };

/** The Ray driver cancels its tasks and waits for Ray to confirm before it exits: give it longer. */
const RAY_CLOSE_GRACE_MS = 20_000;

function info(t: Trial): TrialInfo {
  return { id: t.id, index: t.index, label: t.label, axes: t.axes };
}

/** Start a sweep. Throws SweepInvalidError at once (nothing started) when an axis or a trial is invalid. */
export function sweep(base: SpecInput, options: SweepOptions): SweepHandle {
  const search = options.search === undefined ? undefined : planSearch(base, options, options.search);
  const trials = search ? [] : expandSweep(base, options);
  const backend = SweepBackend.safeParse(options.backend ?? { kind: "local" });
  if (!backend.success)
    throw new SweepInvalidError(
      backend.error.issues.map((i) => `backend${i.path.map((p) => `.${String(p)}`).join("")}: ${i.message}`),
    );
  return new SweepHandle(base, trials, { ...options, backend: backend.data }, search);
}

/** The devices to pin, one per slot: the given list, or every GPU when "auto" finds two or more. */
function pinnedDevices(devices: SweepOptions["devices"], toRun: number): readonly string[] {
  if (Array.isArray(devices)) return devices;
  if ((devices ?? "auto") !== "auto" || toRun === 0) return [];
  const gpus = detectGpus();
  return gpus.length >= 2 ? gpus : [];
}

/** The manifest and the results table of one sweep, kept in step. */
class Ledger {
  readonly rows = new Map<string, TrialRow>();
  readonly entries: ManifestTrial[];
  readonly manifest: ManifestWriter;

  constructor(
    private readonly dir: string,
    private readonly trials: Trial[],
    base: SpecInput,
    options: SweepOptions,
    mode: Mode,
    search?: SearchPlan["block"],
  ) {
    const now = new Date().toISOString();
    const plan: SweepPlan = {
      ...(options.axes && { axes: options.axes }),
      ...(options.zip && { zip: options.zip }),
      ...(options.seeds && { seeds: options.seeds }),
      ...(search && { search }),
    };
    this.entries = trials.map((t) => this.entryOf(t));
    this.manifest = new ManifestWriter(dir, {
      version: 1,
      created_at: now,
      updated_at: now,
      base,
      plan,
      mode,
      trials: this.entries,
    });
  }

  private entryOf(t: Trial): ManifestTrial {
    return {
      ...info(t),
      hash: t.hash,
      dir: relative(this.dir, trialDir(this.dir, t.id)),
      status: "pending",
      reused: false,
      error: null,
    };
  }

  /** A trial found while the sweep runs (a search trial): the same trial (by id) is added once. */
  add(t: Trial): Trial {
    const known = this.trials.find((k) => k.id === t.id);
    if (known) return known;
    const added = { ...t, index: this.trials.length };
    this.trials.push(added);
    this.entries.push(this.entryOf(added));
    return added;
  }

  get all(): readonly Trial[] {
    return this.trials;
  }

  entry(t: Trial): ManifestTrial {
    return this.entries[this.trials.indexOf(t)] as ManifestTrial;
  }

  /** Record a trial's row (and its manifest entry); returns the row. */
  record(
    t: Trial,
    status: TrialRow["status"],
    result: RunResult | null,
    reused: boolean,
    error: TrialRow["error"],
  ): TrialRow {
    const row: TrialRow = {
      ...info(t),
      status,
      reused,
      metrics: scalarMetrics(result?.metrics),
      error,
      runDir: trialDir(this.dir, t.id),
      wallS: result?.timing?.wall_s ?? null,
    };
    this.rows.set(t.id, row);
    Object.assign(this.entry(t), { status, reused, error });
    return row;
  }

  save(): Promise<void> {
    return this.manifest.save();
  }
}

export class SweepHandle extends EventStream<SweepEvent, SweepResults> {
  readonly dir: string;
  readonly trials: readonly Trial[];
  private readonly stop = new AbortController();
  private readonly lanes: Lane[] = [];
  private ray: RayDriver | undefined;
  private searchPid: number | undefined;

  /** @internal use `sweep()` */
  constructor(
    base: SpecInput,
    trials: Trial[],
    private readonly options: SweepOptions,
    private readonly plan?: SearchPlan,
  ) {
    super();
    this.dir = resolve(options.outDir);
    this.trials = trials;
    const onAbort = () => this.stop.abort();
    if (options.signal?.aborted) this.stop.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    this.settleWith(this.execute(base).finally(() => options.signal?.removeEventListener("abort", onAbort)));
  }

  /** Every process id started so far (workers or per-trial processes). */
  get pids(): number[] {
    const search = this.searchPid === undefined ? [] : [this.searchPid];
    return [...search, ...this.lanes.flatMap((l) => l.pids)];
  }

  /** Cancel every running trial, start no more, and wait until every process is gone. */
  async cancel(): Promise<SweepResults> {
    this.stop.abort();
    return this.result();
  }

  private async execute(base: SpecInput): Promise<SweepResults> {
    const t0 = performance.now();
    await mkdir(this.dir, { recursive: true });
    const release = await acquireLock(this.dir);
    try {
      const mode: Mode = this.options.mode ?? "warm";
      const ledger = new Ledger(this.dir, this.trials as Trial[], base, this.options, mode, this.plan?.block);
      const search = this.plan ? await this.executeSearch(base, this.plan, mode, ledger) : undefined;
      if (search) saveSearchResults(this.dir, search);
      if (!this.plan) await this.executeGrid(mode, ledger);
      for (const t of this.trials) if (!ledger.rows.has(t.id)) ledger.record(t, "not_run", null, false, null);
      await ledger.save();
      const rows = this.trials.map((t) => ledger.rows.get(t.id) as TrialRow);
      const counts = { succeeded: 0, failed: 0, cancelled: 0, pruned: 0, not_run: 0 };
      for (const r of rows) counts[r.status]++;
      const results: SweepResults = {
        dir: this.dir,
        rows,
        counts,
        stopped: this.stop.signal.aborted,
        wallS: (performance.now() - t0) / 1000,
        ...(search && { search }),
      };
      this.push({ type: "sweep_finished", results });
      return results;
    } finally {
      await this.ray?.close(Math.max(this.options.killGraceMs ?? KILL_GRACE_MS, RAY_CLOSE_GRACE_MS));
      await release();
    }
  }

  /** Ray backend: one driver for the sweep; it refuses unfit trials before anything runs. */
  private async startRay(trials: readonly Trial[]): Promise<RayDriver | undefined> {
    const o = this.options;
    if (o.backend?.kind !== "ray" || trials.length === 0) return undefined;
    const killGraceMs = o.killGraceMs ?? KILL_GRACE_MS;
    this.ray = await startRayDriver(o.backend, trials, {
      python: o.python,
      env: o.env,
      onStderr: o.onStderr,
      killGraceMs,
    });
    return this.ray;
  }

  private async executeGrid(mode: Mode, ledger: Ledger): Promise<void> {
    // resume: reuse what already succeeded for the same spec
    const queue: Trial[] = [];
    for (const t of this.trials) {
      const done = await reusableResult(trialDir(this.dir, t.id), t.spec);
      if (done)
        this.push({
          type: "trial_skipped",
          trial: info(t),
          row: ledger.record(t, "succeeded", done, true, null),
        });
      else queue.push(t);
    }
    await ledger.save();
    const o = this.options;
    const devices = pinnedDevices(o.devices, queue.length);
    const ray = await this.startRay(queue);
    const wanted = o.concurrency ?? (ray ? queue.length : devices.length || 1);
    const slots = Math.max(1, Math.min(wanted, Math.max(1, queue.length)));
    this.push({
      type: "sweep_started",
      dir: this.dir,
      trials: this.trials.length,
      toRun: queue.length,
      slots,
    });
    await this.runSlots(slots, devices, mode, queue, ledger, ray);
  }

  /**
   * The search: each cell's study run to `trials` done trials on the sweep's lanes (sweep/search.ts), then
   * each cell's best re-run with the confirmation seeds through the ordinary scheduler.
   */
  private async executeSearch(
    base: SpecInput,
    plan: SearchPlan,
    mode: Mode,
    ledger: Ledger,
  ): Promise<SearchResults> {
    const o = this.options;
    const ray = await this.startRay(probeTrials(base, plan));
    const devices = pinnedDevices(o.devices, 1);
    const slots = Math.max(1, o.concurrency ?? (devices.length || 1));
    const lanes = Array.from({ length: slots }, (_, slot) =>
      this.makeSlotLane(devices.length ? (devices[slot % devices.length] as string) : null, mode, ray),
    );
    this.lanes.push(...lanes);
    const total = plan.cells.length * plan.block.trials;
    this.push({ type: "sweep_started", dir: this.dir, trials: total, toRun: total, slots });
    const searcher = new SearchProcess(resolvePython(o), o.env);
    this.searchPid = searcher.pid;
    const studies = [];
    try {
      const ctx: StudyContext = {
        base,
        block: plan.block,
        dir: this.dir,
        lanes,
        signal: this.stop.signal,
        search: searcher,
        onStart: (t) => {
          const known = ledger.add(t);
          ledger.record(known, "failed", null, false, null);
          ledger.entry(known).status = "running";
          this.push({ type: "trial_started", trial: info(known), slot: 0, device: null });
          return known;
        },
        onEvent: (t, event) => this.push({ type: "trial_progress", trial: info(t), event }),
        onDone: async (t, status, outcome, reused) => {
          const row = ledger.record(
            t,
            status,
            outcome.result,
            reused,
            status === "failed" ? outcome.error : null,
          );
          await ledger.save();
          const type =
            status === "succeeded"
              ? "trial_finished"
              : status === "failed"
                ? "trial_failed"
                : "trial_cancelled";
          this.push({ type, trial: info(t), row });
        },
      };
      for (const cell of plan.cells) {
        if (this.stop.signal.aborted) break;
        studies.push(await runStudy(ctx, cell));
      }
    } finally {
      await searcher.close();
      for (const lane of lanes) if (lane instanceof WarmLane) await lane.close();
    }
    const confirmOf = (st: StudyResult): Trial[] =>
      st.best === null
        ? []
        : plan.block.confirmSeeds.map((seed) =>
            ledger.add(trialFor(base, { ...st.axes, ...st.best?.params, seed })),
          );
    const confirm = studies.flatMap(confirmOf);
    if (!this.stop.signal.aborted) await this.executeQueue(confirm, slots, devices, mode, ledger, ray);
    return summarizeConfirmations(studies, plan.block, (st) =>
      confirmOf(st).flatMap((t) => {
        const row = ledger.rows.get(t.id);
        return row ? [row] : [];
      }),
    );
  }

  /** Run `trials` (skipping those already succeeded) on `slots` fresh lanes. */
  private async executeQueue(
    trials: Trial[],
    slots: number,
    devices: readonly string[],
    mode: Mode,
    ledger: Ledger,
    ray: RayDriver | undefined,
  ): Promise<void> {
    const queue: Trial[] = [];
    for (const t of trials) {
      const done = await reusableResult(trialDir(this.dir, t.id), t.spec);
      if (done)
        this.push({
          type: "trial_skipped",
          trial: info(t),
          row: ledger.record(t, "succeeded", done, true, null),
        });
      else queue.push(t);
    }
    await ledger.save();
    if (queue.length) await this.runSlots(Math.min(slots, queue.length), devices, mode, queue, ledger, ray);
  }

  /** Run the queue on `slots` lanes; one broken slot (e.g. the disk) stops the others, then throws. */
  private async runSlots(
    slots: number,
    devices: readonly string[],
    mode: Mode,
    queue: Trial[],
    ledger: Ledger,
    ray: RayDriver | undefined,
  ): Promise<void> {
    const settled = await Promise.allSettled(
      Array.from({ length: slots }, (_, slot) => {
        const device = devices.length ? (devices[slot % devices.length] as string) : null;
        return this.runSlot(slot, device, mode, queue, ledger, ray).catch((e: unknown) => {
          this.stop.abort();
          throw e;
        });
      }),
    );
    const broken = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
    if (broken) throw broken.reason;
  }

  /** The lane one slot runs its trials on (grid and search alike), pinned to DEVICE when given. */
  private makeSlotLane(device: string | null, mode: Mode, ray: RayDriver | undefined): Lane {
    if (ray) return new RayLane(ray);
    const o = this.options;
    const env = {
      ...o.env,
      [SWEEP_HOLDER_ENV]: holderToken(), // this sweep holds the store: its trials may write there
      ...(device !== null && { CUDA_VISIBLE_DEVICES: device }),
    };
    const killGraceMs = o.killGraceMs ?? KILL_GRACE_MS;
    return makeLane(mode, { python: o.python, env, killGraceMs, onStderr: o.onStderr });
  }

  /** One slot: a lane that takes trials off the queue until it is empty or the sweep stops. */
  private async runSlot(
    slot: number,
    device: string | null,
    mode: Mode,
    queue: Trial[],
    ledger: Ledger,
    ray: RayDriver | undefined,
  ): Promise<void> {
    const lane = this.makeSlotLane(device, mode, ray);
    this.lanes.push(lane);
    if (lane instanceof WarmLane && queue.length > 0) lane.warm();
    try {
      while (!this.stop.signal.aborted) {
        const t = queue.shift();
        if (!t) return;
        await this.runTrial(t, slot, device, lane, ledger);
      }
    } finally {
      await lane.close();
    }
  }

  private async runTrial(
    t: Trial,
    slot: number,
    device: string | null,
    lane: Lane,
    ledger: Ledger,
  ): Promise<void> {
    const dir = trialDir(this.dir, t.id);
    await clearTrialDir(this.dir, dir, t.id);
    ledger.record(t, "failed", null, false, null);
    ledger.entry(t).status = "running";
    await ledger.save();
    this.push({ type: "trial_started", trial: info(t), slot, device });
    const onEvent = (event: RunEvent) => this.push({ type: "trial_progress", trial: info(t), event });
    const out = await lane.run(t, dir, onEvent, this.stop.signal);
    const row = ledger.record(t, out.status, out.result, false, out.error);
    await ledger.save();
    if (out.status === "succeeded") this.push({ type: "trial_finished", trial: info(t), row });
    else if (out.status === "cancelled") this.push({ type: "trial_cancelled", trial: info(t), row });
    else {
      this.push({ type: "trial_failed", trial: info(t), row });
      if (this.options.failFast) this.stop.abort();
    }
  }
}
