/**
 * How a trial runs: `warm` (a long-lived worker per slot, `python -m oplora worker`) or `cold` (one
 * `python -m oplora run` process per trial, through `run()`). Both end every trial with a consistent
 * result.json in its run directory and never throw: the outcome says what happened.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { resolvePython } from "../bridge/python.js";
import { CancelledError, TrainingFailedError } from "../errors.js";
import type { RunEvent } from "../events.js";
import type { RunResult } from "../result.js";
import { run } from "../run.js";
import { readResult, writeCrashResult } from "../run-dir.js";
import type { Trial } from "./expand.js";
import { Worker } from "./worker.js";

export type Mode = "warm" | "cold";

export interface TrialOutcome {
  status: "succeeded" | "failed" | "cancelled";
  result: RunResult | null;
  error: { type: string; message: string } | null;
}

export interface LaneOptions {
  python?: string | undefined;
  env?: Record<string, string | undefined> | undefined;
  killGraceMs: number;
  onStderr?: ((chunk: string) => void) | undefined;
}

/** One slot of the scheduler: runs one trial at a time. */
export interface Lane {
  run(trial: Trial, dir: string, onEvent: (e: RunEvent) => void, signal: AbortSignal): Promise<TrialOutcome>;
  close(): Promise<void>;
  /** Every process id this lane has started. */
  readonly pids: number[];
}

function outcomeOf(
  result: RunResult | null,
  fallback: TrialOutcome["status"],
  error?: unknown,
): TrialOutcome {
  if (result) {
    const e = result.error;
    return { status: result.status, result, error: e ? { type: e.type, message: e.message } : null };
  }
  if (error instanceof Error)
    return { status: fallback, result: null, error: { type: error.name, message: error.message } };
  return {
    status: fallback,
    result: null,
    error: fallback === "failed" ? { type: "Unknown", message: String(error) } : null,
  };
}

export class WarmLane implements Lane {
  readonly pids: number[] = [];
  private worker: Worker | undefined;
  private readonly python: string;

  constructor(private readonly options: LaneOptions) {
    this.python = resolvePython(options);
  }

  /** Start the worker now (its imports overlap with other work). */
  warm(): void {
    this.ensure();
  }

  private ensure(): Worker {
    if (!this.worker?.alive) {
      this.worker = new Worker({
        python: this.python,
        env: this.options.env,
        onStderr: this.options.onStderr,
      });
      this.pids.push(this.worker.pid);
    }
    return this.worker;
  }

  async run(
    trial: Trial,
    dir: string,
    onEvent: (e: RunEvent) => void,
    signal: AbortSignal,
  ): Promise<TrialOutcome> {
    const t0 = new Date();
    if (signal.aborted) return { status: "cancelled", result: null, error: null };
    const worker = this.ensure();
    let terminating: Promise<void> | undefined;
    const onAbort = () => {
      terminating = worker.terminate(this.options.killGraceMs);
    };
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const reply = await worker.run(trial.spec, dir, onEvent);
      const result = reply.result ?? readResult(dir);
      if (!result && reply.code === 2) {
        return {
          status: "failed",
          result: null,
          error: { type: "InputError", message: `spec or run dir refused (see ${dir})` },
        };
      }
      return outcomeOf(result, signal.aborted ? "cancelled" : "failed");
    } catch (e) {
      // the worker died mid-trial: record the crash (or the cancel that killed it) in the trial's result.json
      const status = signal.aborted ? "cancelled" : "failed";
      const error = status === "failed" ? { type: (e as Error).name, message: (e as Error).message } : null;
      const result = writeCrashResult({ status, task: trial.spec.task, runDir: dir, error, startedAt: t0 });
      return outcomeOf(result, status, e);
    } finally {
      signal.removeEventListener("abort", onAbort);
      // a cancelled trial's worker is gone before the lane takes the next trial (a search prunes one
      // trial and goes on: the next must not land on the dying worker)
      await terminating;
    }
  }

  async close(): Promise<void> {
    await this.worker?.close(this.options.killGraceMs);
  }
}

export class ColdLane implements Lane {
  readonly pids: number[] = [];
  constructor(private readonly options: LaneOptions) {}

  async run(
    trial: Trial,
    dir: string,
    onEvent: (e: RunEvent) => void,
    signal: AbortSignal,
  ): Promise<TrialOutcome> {
    if (signal.aborted) return { status: "cancelled", result: null, error: null };
    let handle: ReturnType<typeof run>;
    try {
      handle = run(trial.spec, {
        outDir: dir,
        signal,
        python: this.options.python,
        env: this.options.env,
        killGraceMs: this.options.killGraceMs,
        onStderr: this.options.onStderr,
      });
    } catch (e) {
      return outcomeOf(null, "failed", e);
    }
    if (handle.pid !== undefined) this.pids.push(handle.pid);
    try {
      for await (const ev of handle) onEvent(ev);
      return outcomeOf((await handle.result()) as RunResult, "succeeded");
    } catch (e) {
      const result =
        e instanceof CancelledError || e instanceof TrainingFailedError
          ? e.result
          : existsSync(join(dir, "result.json"))
            ? readResult(dir)
            : null;
      return outcomeOf(result, e instanceof CancelledError ? "cancelled" : "failed", e);
    }
  }

  async close(): Promise<void> {}
}

export function makeLane(mode: Mode, options: LaneOptions): Lane {
  return mode === "warm" ? new WarmLane(options) : new ColdLane(options);
}
