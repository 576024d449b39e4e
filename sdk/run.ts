/**
 * `run(spec, options)`: validate, start `python -m oplora run`, and hand back a `RunHandle` that is both
 * an async iterator of typed events and a promise of the typed `RunResult`.
 *
 *   const handle = run({ task: "matrix_factorization" }, { outDir: "runs/mf" });
 *   for await (const ev of handle) if (ev.type === "step") console.log(ev.step, ev.loss);
 *   const result = await handle;          // RunResult, or a typed error
 *
 * `break` out of the loop, `handle.cancel()` or an aborted `signal` cancels the run (SIGTERM, then
 * SIGKILL after a grace period). Outcomes: succeeded -> RunResult; Python raised -> TrainingFailedError;
 * bad spec/input -> SpecInvalidError / InputError; cancelled -> CancelledError; the process died without a
 * result -> ProcessCrashedError. Whenever the run dir was created, it ends with a consistent result.json.
 */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { type JobExit, startJob } from "./bridge/job.js";
import { notImportable } from "./bridge/python.js";
import {
  CancelledError,
  InputError,
  OploraError,
  ProcessCrashedError,
  ProtocolError,
  PythonEnvironmentError,
  RunLockedError,
  SpecInvalidError,
  TrainingFailedError,
} from "./errors.js";
import type { EventOf, RunEvent } from "./events.js";
import { liveHolder } from "./lock.js";
import type { RunResult, SucceededResultOf } from "./result.js";
import { checkOutDir, RUN_LOCK, readResult, writeCrashResult } from "./run-dir.js";
import type { SpecInput, TaskName } from "./spec/index.js";
import { validateSpec } from "./spec/validate.js";
import { EventStream } from "./stream.js";

export interface RunOptions {
  /** The run directory (created by Python; must be new or empty unless `resume`). */
  outDir: string;
  /** Aborting it cancels the run. */
  signal?: AbortSignal | undefined;
  /** Python interpreter (default: env OPLORA_PYTHON, then the package's .venv). */
  python?: string | undefined;
  /** Continue the run in `outDir` from its last checkpoint (same spec required). */
  resume?: boolean | undefined;
  /** Extra environment variables for the Python process. */
  env?: Record<string, string | undefined> | undefined;
  /** Python's stderr / stdout, as it arrives (library chatter; events never appear here). */
  onStderr?: ((chunk: string) => void) | undefined;
  onStdout?: ((chunk: string) => void) | undefined;
  /** ms between SIGTERM and SIGKILL when cancelling (default 5000). */
  killGraceMs?: number | undefined;
}

/** The task of a spec type: its `task` literal, or every task when the spec does not fix one. */
export type TaskOf<S> = S extends { task: infer T extends TaskName } ? T : TaskName;

/** Start a run. Throws SpecInvalidError or InputError (bad outDir; nothing spawned, no run dir) or PythonEnvironmentError at once. */
export function run<S extends SpecInput>(spec: S, options: RunOptions): RunHandle<TaskOf<S>> {
  const valid = validateSpec(spec);
  checkOutDir(options.outDir);
  // Python takes run.lock for the run's lifetime; checking here too gives the clear error before it starts
  const holder = liveHolder(resolve(options.outDir), RUN_LOCK);
  if (holder) throw new RunLockedError(options.outDir, holder);
  return new RunHandle<TaskOf<S>>(valid.task, options.signal, (push, cancelSignal) =>
    startJob(
      valid,
      {
        outDir: options.outDir,
        python: options.python,
        resume: options.resume,
        env: options.env,
        onStderr: options.onStderr,
        onStdout: options.onStdout,
        killGraceMs: options.killGraceMs,
        cancelSignal,
      },
      push,
    ),
  );
}

type StartJob = (push: (event: RunEvent) => void, cancelSignal: AbortSignal) => ReturnType<typeof startJob>;

/** A running (or finished) run: `for await` its events, `await` its result, `cancel()` it. */
export class RunHandle<T extends TaskName = TaskName> extends EventStream<RunEvent, SucceededResultOf<T>> {
  /** Absolute path of the run directory. */
  readonly runDir: string;
  /** The Python process id (undefined if it never started). */
  readonly pid: number | undefined;
  /** The Python interpreter running it. */
  readonly python: string;
  private readonly controller = new AbortController();
  private readonly startedAt = Date.now();
  private cancelRequested = false;

  /** @internal use `run()` */
  constructor(
    readonly task: T | TaskName,
    signal: AbortSignal | undefined,
    start: StartJob,
  ) {
    super();
    if (signal?.aborted) {
      this.runDir = "";
      this.pid = undefined;
      this.python = "";
      this.cancelRequested = true;
      this.settleWith(Promise.reject(new CancelledError("(not started)")));
      return;
    }
    const started = start((ev) => this.push(ev), this.controller.signal);
    this.runDir = started.runDir;
    this.pid = started.pid;
    this.python = started.python;
    const onAbort = () => this.requestCancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.settleWith(
      started.exit
        .then((exit) => this.conclude(exit))
        .finally(() => signal?.removeEventListener("abort", onAbort)),
    );
  }

  /** The last `step` event so far. */
  get lastStep(): EventOf<"step"> | undefined {
    return this.events.findLast((e): e is EventOf<"step"> => e.type === "step");
  }

  /** Settles (never rejects) once the process is gone and result.json is final. */
  async done(): Promise<void> {
    await this.result().then(
      () => undefined,
      () => undefined,
    );
  }

  /** Cancel the run and wait until the process is gone. */
  async cancel(): Promise<void> {
    this.requestCancel();
    await this.done();
  }

  private requestCancel(): void {
    if (this.settled || this.cancelRequested) return;
    this.cancelRequested = true;
    this.controller.abort();
  }

  /** Turn how the process ended into the result or the error, writing result.json if Python did not. */
  private conclude(exit: JobExit): SucceededResultOf<T> {
    if (exit.spawnError)
      throw new PythonEnvironmentError(
        `cannot start Python: ${exit.spawnError}`,
        this.python,
        "check the `python` option or env OPLORA_PYTHON",
      );
    const started = this.events.some((e) => e.type === "started");
    // A result.json from an earlier run in this folder (a refused or resumed run) is not this run's.
    let result = started && this.isFresh(join(this.runDir, "result.json")) ? readResult(this.runDir) : null;
    const runCreated = existsSync(join(this.runDir, "spec.json")) && started;
    if (
      !started &&
      !result &&
      exit.exitCode === 1 &&
      /ModuleNotFoundError|No module named/.test(exit.stderrTail)
    )
      throw notImportable(this.python, exit.stderrTail);
    if (exit.protocolError) {
      if (runCreated && !result) this.writeFallback("failed", exit, exit.protocolError.message);
      throw exit.protocolError;
    }
    // result.json, when Python wrote one, is the authority (a crash after writing it changes nothing).
    if (result?.status === "succeeded") {
      if (result.metrics === null)
        throw new ProtocolError(`${join(this.runDir, "result.json")}: status succeeded without metrics`);
      return result as SucceededResultOf<T>;
    }
    if (result?.status === "cancelled") throw new CancelledError(this.runDir, result);
    if (result?.status === "failed" && result.error && !this.cancelRequested) {
      if (exit.exitCode === 2) throw new InputError(result.error.message, this.runDir, result);
      throw new TrainingFailedError(result.error, this.runDir, result);
    }
    if (this.cancelRequested || exit.exitCode === 130) {
      if (runCreated && !result) result = this.writeFallback("cancelled", exit);
      throw new CancelledError(this.runDir, result);
    }
    if (exit.exitCode === 2) throw this.refused(exit, result);
    const errorEvent = this.events.findLast((e): e is EventOf<"error"> => e.type === "error");
    if (runCreated && !result) this.writeFallback("failed", exit);
    else if (!runCreated && errorEvent)
      throw new OploraError(`${errorEvent.error.type}: ${errorEvent.error.message}`);
    throw new ProcessCrashedError(exit.exitCode, exit.signal, exit.stderrTail, this.runDir);
  }

  /** Exit code 2 without a failed result.json: Python refused the spec or the input. */
  private refused(exit: JobExit, result: RunResult | null): OploraError {
    const error = this.events.findLast((e): e is EventOf<"error"> => e.type === "error")?.error;
    const message = error?.message ?? (exit.stderrTail.trim() || "invalid input");
    if (error?.type !== "SpecError") return new InputError(message, this.runDir, result);
    const problems = message
      .split("\n")
      .filter((l) => l.startsWith("  - "))
      .map((l) => l.slice(4));
    return new SpecInvalidError(problems.length ? problems : [message], "python");
  }

  private isFresh(path: string): boolean {
    try {
      return statSync(path).mtimeMs >= this.startedAt - 1_000;
    } catch {
      return false;
    }
  }

  /** result.json when Python died before writing one (status failed or cancelled). */
  private writeFallback(status: "failed" | "cancelled", exit: JobExit, why?: string): RunResult {
    const how = exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.exitCode}`;
    return writeCrashResult({
      status,
      task: this.task,
      runDir: this.runDir,
      events: this.events,
      startedAt: new Date(),
      error:
        status === "failed"
          ? {
              type: "ProcessCrashed",
              message: why ?? `the Python process ${how} before writing result.json`,
              traceback: exit.stderrTail.slice(-4000),
            }
          : null,
    });
  }
}
