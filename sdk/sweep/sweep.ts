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
import { execFileSync } from "node:child_process";
import { mkdir } from "node:fs/promises";
import { relative, resolve } from "node:path";
import type { RunEvent } from "../events.js";
import type { RunResult } from "../result.js";
import type { SpecInput } from "../spec/index.js";
import { SweepInvalidError } from "./errors.js";
import { expandSweep, type SweepPlan, type Trial } from "./expand.js";
import { type Lane, type Mode, makeLane, type TrialOutcome, WarmLane } from "./lanes.js";
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

export const KILL_GRACE_MS = 5_000;
/** The Ray driver cancels its tasks and waits for Ray to confirm before it exits: give it longer. */
const RAY_CLOSE_GRACE_MS = 20_000;

function info(t: Trial): TrialInfo {
  return { id: t.id, index: t.index, label: t.label, axes: t.axes };
}

/** Scalar metrics, one level of nested objects flattened into dotted keys. */
export function scalarMetrics(metrics: unknown): Record<string, number | string | boolean | null> {
  const out: Record<string, number | string | boolean | null> = {};
  if (!metrics || typeof metrics !== "object") return out;
  for (const [k, v] of Object.entries(metrics)) {
    if (v === null || ["number", "string", "boolean"].includes(typeof v))
      out[k] = v as number | string | boolean | null;
    else if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) {
        if (v2 === null || ["number", "string", "boolean"].includes(typeof v2))
          out[`${k}.${k2}`] = v2 as number | null;
      }
    }
  }
  return out;
}

/** GPUs nvidia-smi lists (indices as strings); none when it is missing. */
export function detectGpus(): string[] {
  try {
    const out = execFileSync("nvidia-smi", ["--query-gpu=index", "--format=csv,noheader"], {
      timeout: 5000,
      stdio: ["ignore", "pipe", "ignore"],
    });
    return out
      .toString()
      .split("\n")
      .map((s) => s.trim())
      .filter(Boolean);
  } catch {
    return [];
  }
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

export class SweepHandle implements AsyncIterable<SweepEvent>, PromiseLike<SweepResults> {
  readonly dir: string;
  readonly trials: readonly Trial[];
  private readonly seen: SweepEvent[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly stop = new AbortController();
  private readonly lanes: Lane[] = [];
  private readonly outcome: Promise<SweepResults>;
  private settled = false;

  /** @internal use `sweep()` */
  constructor(
    base: SpecInput,
    trials: Trial[],
    private readonly options: SweepOptions,
  ) {
    this.dir = resolve(options.outDir);
    this.trials = trials;
    const onAbort = () => this.stop.abort();
    if (options.signal?.aborted) this.stop.abort();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    this.outcome = this.execute(base).finally(() => {
      options.signal?.removeEventListener("abort", onAbort);
      this.settled = true;
      this.wake();
    });
    this.outcome.catch(() => undefined);
  }

  /** Every process id started so far (workers or per-trial processes). */
  get pids(): number[] {
    return this.lanes.flatMap((l) => l.pids);
  }

  get events(): readonly SweepEvent[] {
    return this.seen;
  }

  result(): Promise<SweepResults> {
    return this.outcome;
  }

  // biome-ignore lint/suspicious/noThenProperty: a SweepHandle is deliberately awaitable, like a RunHandle
  then<A = SweepResults, B = never>(
    onfulfilled?: ((value: SweepResults) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.outcome.then(onfulfilled, onrejected);
  }

  /** Cancel every running trial, start no more, and wait until every process is gone. */
  async cancel(): Promise<SweepResults> {
    this.stop.abort();
    return this.outcome;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<SweepEvent> {
    let i = 0;
    let finished = false;
    try {
      for (;;) {
        while (i < this.seen.length) yield this.seen[i++] as SweepEvent;
        if (this.settled) break;
        await new Promise<void>((r) => this.waiters.add(r));
      }
      finished = true;
      await this.outcome;
    } finally {
      if (!finished) await this.cancel().catch(() => undefined);
    }
  }

  private emit(event: SweepEvent): void {
    this.seen.push(event);
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  private async execute(base: SpecInput): Promise<SweepResults> {
    const t0 = performance.now();
    const o = this.options;
    await mkdir(this.dir, { recursive: true });
    const release = await acquireLock(this.dir);
    let ray: RayDriver | undefined;
    try {
      const mode: Mode = o.mode ?? "warm";
      const now = new Date().toISOString();
      const plan: SweepPlan = {
        ...(o.axes && { axes: o.axes }),
        ...(o.zip && { zip: o.zip }),
        ...(o.seeds && { seeds: o.seeds }),
      };
      const entries: ManifestTrial[] = this.trials.map((t) => ({
        ...info(t),
        hash: t.hash,
        dir: relative(this.dir, trialDir(this.dir, t.id)),
        status: "pending",
        reused: false,
        error: null,
      }));
      const manifest = new ManifestWriter(this.dir, {
        version: 1,
        created_at: now,
        updated_at: now,
        base,
        plan,
        mode,
        trials: entries,
      });
      const rows = new Map<string, TrialRow>();
      const rowOf = (
        t: Trial,
        status: TrialRow["status"],
        result: RunResult | null,
        reused: boolean,
        error: TrialRow["error"],
      ) => {
        const row: TrialRow = {
          ...info(t),
          status,
          reused,
          metrics: scalarMetrics(result?.metrics),
          error,
          runDir: trialDir(this.dir, t.id),
          wallS: result?.timing?.wall_s ?? null,
        };
        rows.set(t.id, row);
        const entry = entries[this.trials.indexOf(t)] as ManifestTrial;
        entry.status = status;
        entry.reused = reused;
        entry.error = error;
        return row;
      };

      // resume: reuse what already succeeded for the same spec
      const queue: Trial[] = [];
      for (const t of this.trials) {
        const done = await reusableResult(trialDir(this.dir, t.id), t.spec);
        if (done)
          this.emit({ type: "trial_skipped", trial: info(t), row: rowOf(t, "succeeded", done, true, null) });
        else queue.push(t);
      }
      await manifest.save();

      let devices: readonly string[] = [];
      if (Array.isArray(o.devices)) devices = o.devices;
      else if ((o.devices ?? "auto") === "auto" && queue.length > 0) {
        const gpus = detectGpus();
        if (gpus.length >= 2) devices = gpus;
      }
      const killGraceMs = o.killGraceMs ?? KILL_GRACE_MS;
      // --- Ray backend: one driver for the sweep; it refuses unfit trials before anything runs
      if (o.backend?.kind === "ray" && queue.length > 0) {
        const opts = { python: o.python, env: o.env, onStderr: o.onStderr, killGraceMs };
        ray = await startRayDriver(o.backend, queue, opts);
      }
      const wanted = o.concurrency ?? (ray ? queue.length : devices.length || 1);
      const slots = Math.max(1, Math.min(wanted, Math.max(1, queue.length)));
      this.emit({
        type: "sweep_started",
        dir: this.dir,
        trials: this.trials.length,
        toRun: queue.length,
        slots,
      });

      const runSlot = async (slot: number) => {
        const device = devices.length ? (devices[slot % devices.length] as string) : null;
        const env = { ...o.env, ...(device !== null && { CUDA_VISIBLE_DEVICES: device }) };
        const lane = ray
          ? new RayLane(ray)
          : makeLane(mode, { python: o.python, env, killGraceMs, onStderr: o.onStderr });
        this.lanes.push(lane);
        if (lane instanceof WarmLane && queue.length > 0) lane.warm();
        try {
          for (;;) {
            if (this.stop.signal.aborted) return;
            const t = queue.shift();
            if (!t) return;
            const dir = trialDir(this.dir, t.id);
            await clearTrialDir(this.dir, dir, t.id);
            rowOf(t, "failed", null, false, null);
            (entries[this.trials.indexOf(t)] as ManifestTrial).status = "running";
            await manifest.save();
            this.emit({ type: "trial_started", trial: info(t), slot, device });
            const out: TrialOutcome = await lane.run(
              t,
              dir,
              (event) => this.emit({ type: "trial_progress", trial: info(t), event }),
              this.stop.signal,
            );
            const row = rowOf(t, out.status, out.result, false, out.error);
            await manifest.save();
            if (out.status === "succeeded") this.emit({ type: "trial_finished", trial: info(t), row });
            else if (out.status === "cancelled") this.emit({ type: "trial_cancelled", trial: info(t), row });
            else {
              this.emit({ type: "trial_failed", trial: info(t), row });
              if (o.failFast) this.stop.abort();
            }
          }
        } finally {
          await lane.close();
        }
      };
      const settled = await Promise.allSettled(
        Array.from({ length: slots }, (_, i) =>
          runSlot(i).catch((e: unknown) => {
            this.stop.abort(); // one slot broke (e.g. the disk): stop the others before reporting it
            throw e;
          }),
        ),
      );
      const broken = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
      if (broken) throw broken.reason;

      for (const t of this.trials) if (!rows.has(t.id)) rowOf(t, "not_run", null, false, null);
      await manifest.save();
      const ordered = this.trials.map((t) => rows.get(t.id) as TrialRow);
      const counts = { succeeded: 0, failed: 0, cancelled: 0, not_run: 0 };
      for (const r of ordered) counts[r.status]++;
      const results: SweepResults = {
        dir: this.dir,
        rows: ordered,
        counts,
        stopped: this.stop.signal.aborted,
        wallS: (performance.now() - t0) / 1000,
      };
      this.emit({ type: "sweep_finished", results });
      return results;
    } finally {
      await ray?.close(Math.max(o.killGraceMs ?? KILL_GRACE_MS, RAY_CLOSE_GRACE_MS));
      await release();
    }
  }
}
