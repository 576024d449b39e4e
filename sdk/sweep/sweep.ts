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
import type { RunEvent } from "../events.js";
import { holderToken, SWEEP_HOLDER_ENV } from "../lock.js";
import { type RunResult, scalarMetrics } from "../result.js";
import type { SpecInput } from "../spec/index.js";
import { EventStream } from "../stream.js";
import { SweepInvalidError } from "./errors.js";
import { expandSweep, type SweepPlan, type Trial } from "./expand.js";
import { detectGpus } from "./gpus.js";
import { type Lane, type Mode, makeLane, WarmLane } from "./lanes.js";
import { type RayDriver, RayLane, SweepBackend, startRayDriver } from "./ray.js";
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
  const trials = expandSweep(base, options);
  const backend = SweepBackend.safeParse(options.backend ?? { kind: "local" });
  if (!backend.success)
    throw new SweepInvalidError(
      backend.error.issues.map((i) => `backend${i.path.map((p) => `.${String(p)}`).join("")}: ${i.message}`),
    );
  return new SweepHandle(base, trials, { ...options, backend: backend.data });
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
    private readonly trials: readonly Trial[],
    base: SpecInput,
    options: SweepOptions,
    mode: Mode,
  ) {
    const now = new Date().toISOString();
    const plan: SweepPlan = {
      ...(options.axes && { axes: options.axes }),
      ...(options.zip && { zip: options.zip }),
      ...(options.seeds && { seeds: options.seeds }),
    };
    this.entries = trials.map((t) => ({
      ...info(t),
      hash: t.hash,
      dir: relative(dir, trialDir(dir, t.id)),
      status: "pending",
      reused: false,
      error: null,
    }));
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

  /** @internal use `sweep()` */
  constructor(
    base: SpecInput,
    trials: Trial[],
    private readonly options: SweepOptions,
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
    return this.lanes.flatMap((l) => l.pids);
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
    let ray: RayDriver | undefined;
    try {
      const mode: Mode = this.options.mode ?? "warm";
      const ledger = new Ledger(this.dir, this.trials, base, this.options, mode);
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
      // Ray backend: one driver for the sweep; it refuses unfit trials before anything runs
      if (o.backend?.kind === "ray" && queue.length > 0) {
        const killGraceMs = o.killGraceMs ?? KILL_GRACE_MS;
        ray = await startRayDriver(o.backend, queue, {
          python: o.python,
          env: o.env,
          onStderr: o.onStderr,
          killGraceMs,
        });
      }
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

      for (const t of this.trials) if (!ledger.rows.has(t.id)) ledger.record(t, "not_run", null, false, null);
      await ledger.save();
      const rows = this.trials.map((t) => ledger.rows.get(t.id) as TrialRow);
      const counts = { succeeded: 0, failed: 0, cancelled: 0, not_run: 0 };
      for (const r of rows) counts[r.status]++;
      const results: SweepResults = {
        dir: this.dir,
        rows,
        counts,
        stopped: this.stop.signal.aborted,
        wallS: (performance.now() - t0) / 1000,
      };
      this.push({ type: "sweep_finished", results });
      return results;
    } finally {
      await ray?.close(Math.max(this.options.killGraceMs ?? KILL_GRACE_MS, RAY_CLOSE_GRACE_MS));
      await release();
    }
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

  /** One slot: a lane that takes trials off the queue until it is empty or the sweep stops. */
  private async runSlot(
    slot: number,
    device: string | null,
    mode: Mode,
    queue: Trial[],
    ledger: Ledger,
    ray: RayDriver | undefined,
  ): Promise<void> {
    const o = this.options;
    const env = {
      ...o.env,
      [SWEEP_HOLDER_ENV]: holderToken(), // this sweep holds the store: its trials may write there
      ...(device !== null && { CUDA_VISIBLE_DEVICES: device }),
    };
    const killGraceMs = o.killGraceMs ?? KILL_GRACE_MS;
    const lane = ray
      ? new RayLane(ray)
      : makeLane(mode, { python: o.python, env, killGraceMs, onStderr: o.onStderr });
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
