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
import { join } from "node:path";
import { type JobExit, startJob } from "./bridge/job.js";
import { notImportable } from "./bridge/python.js";
import {
  CancelledError,
  InputError,
  OploraError,
  ProcessCrashedError,
  PythonEnvironmentError,
  SpecInvalidError,
  TrainingFailedError,
} from "./errors.js";
import type { EventOf, RunEvent } from "./events.js";
import type { RunResult, RunResultOf } from "./result.js";
import { readResult, writeResultAtomic } from "./run-dir.js";
import type { SpecInput, TaskName } from "./spec/index.js";
import { validateSpec } from "./spec/validate.js";

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

type TaskOf<S> = S extends { task: infer T extends TaskName } ? T : TaskName;

/** Start a run. Throws SpecInvalidError (nothing spawned, no run dir) or PythonEnvironmentError at once. */
export function run<S extends SpecInput>(spec: S, options: RunOptions): RunHandle<TaskOf<S>> {
  const valid = validateSpec(spec);
  return new RunHandle<TaskOf<S>>(valid.task, (handle) => {
    const controller = new AbortController();
    const job = () =>
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
          cancelSignal: controller.signal,
        },
        (ev) => handle._push(ev),
      );
    return { controller, job, signal: options.signal };
  });
}

interface Starter {
  controller: AbortController;
  job: () => ReturnType<typeof startJob>;
  signal: AbortSignal | undefined;
}

/** A running (or finished) run: `for await` its events, `await` its result, `cancel()` it. */
export class RunHandle<T extends TaskName = TaskName>
  implements AsyncIterable<RunEvent>, PromiseLike<RunResultOf<T>>
{
  /** Absolute path of the run directory. */
  readonly runDir: string;
  /** The Python process id (undefined if it never started). */
  readonly pid: number | undefined;
  /** The Python interpreter running it. */
  readonly python: string;
  private readonly seen: RunEvent[] = [];
  private readonly waiters = new Set<() => void>();
  private readonly controller: AbortController;
  private readonly outcome: Promise<RunResultOf<T>>;
  private settled = false;
  private readonly startedAt = Date.now();
  private cancelRequested = false;

  /** @internal use `run()` */
  constructor(
    readonly task: T | TaskName,
    start: (handle: RunHandle<T>) => Starter,
  ) {
    const { controller, job, signal } = start(this);
    this.controller = controller;
    if (signal?.aborted) {
      this.runDir = "";
      this.pid = undefined;
      this.python = "";
      this.cancelRequested = true;
      this.outcome = Promise.reject(new CancelledError("(not started)"));
    } else {
      const started = job();
      this.runDir = started.runDir;
      this.pid = started.pid;
      this.python = started.python;
      const onAbort = () => this.requestCancel();
      signal?.addEventListener("abort", onAbort, { once: true });
      this.outcome = started.exit
        .then((exit) => this.conclude(exit))
        .finally(() => signal?.removeEventListener("abort", onAbort));
    }
    this.outcome.then(
      () => this.finish(),
      () => this.finish(),
    );
  }

  /** Events so far (all of them once the run has ended). */
  get events(): readonly RunEvent[] {
    return this.seen;
  }

  /** The last `step` event so far. */
  get lastStep(): EventOf<"step"> | undefined {
    for (let i = this.seen.length - 1; i >= 0; i--) {
      const ev = this.seen[i];
      if (ev?.type === "step") return ev;
    }
    return undefined;
  }

  /** The final RunResult (rejects with a typed OploraError). */
  result(): Promise<RunResultOf<T>> {
    return this.outcome;
  }

  // biome-ignore lint/suspicious/noThenProperty: a RunHandle is deliberately awaitable (like a MessageStream)
  then<A = RunResultOf<T>, B = never>(
    onfulfilled?: ((value: RunResultOf<T>) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.outcome.then(onfulfilled, onrejected);
  }

  /** Settles (never rejects) once the process is gone and result.json is final. */
  async done(): Promise<void> {
    await this.outcome.then(
      () => undefined,
      () => undefined,
    );
  }

  /** Cancel the run and wait until the process is gone. */
  async cancel(): Promise<void> {
    this.requestCancel();
    await this.done();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<RunEvent> {
    let i = 0;
    let finished = false;
    try {
      for (;;) {
        while (i < this.seen.length) yield this.seen[i++] as RunEvent;
        if (this.settled) break;
        await new Promise<void>((r) => this.waiters.add(r));
      }
      finished = true;
      await this.outcome; // a failed run ends the loop with its error
    } finally {
      if (!finished) await this.cancel(); // `break` / `return` / a throw in the loop body
    }
  }

  /** @internal */
  _push(event: RunEvent): void {
    this.seen.push(event);
    this.wake();
  }

  private finish(): void {
    this.settled = true;
    this.wake();
  }

  private wake(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }

  private requestCancel(): void {
    if (this.settled || this.cancelRequested) return;
    this.cancelRequested = true;
    this.controller.abort();
  }

  /** Turn how the process ended into the result or the error, writing result.json if Python did not. */
  private conclude(exit: JobExit): RunResultOf<T> {
    if (exit.spawnError)
      throw new PythonEnvironmentError(
        `cannot start Python: ${exit.spawnError}`,
        this.python,
        "check the `python` option or env OPLORA_PYTHON",
      );
    const started = this.seen.find((e): e is EventOf<"started"> => e.type === "started");
    const errorEvent = this.seen.findLast((e): e is EventOf<"error"> => e.type === "error");
    // A result.json from an earlier run in this folder (a refused or resumed run) is not this run's.
    let result = started && this.isFresh(join(this.runDir, "result.json")) ? readResult(this.runDir) : null;
    const runCreated = existsSync(join(this.runDir, "spec.json")) && started !== undefined;

    if (
      !started &&
      !result &&
      exit.exitCode === 1 &&
      /ModuleNotFoundError|No module named/.test(exit.stderrTail)
    ) {
      throw notImportable(this.python, exit.stderrTail);
    }
    if (exit.protocolError) {
      if (runCreated && !result) this.writeFallback("failed", exit, exit.protocolError.message);
      throw exit.protocolError;
    }
    // result.json, when Python wrote one, is the authority (a crash after writing it changes nothing).
    if (result?.status === "succeeded") return result as RunResultOf<T>;
    if (result?.status === "cancelled") throw new CancelledError(this.runDir, result);
    if (result?.status === "failed" && result.error && !this.cancelRequested) {
      if (exit.exitCode === 2) throw new InputError(result.error.message, this.runDir, result);
      throw new TrainingFailedError(result.error, this.runDir, result);
    }
    if (this.cancelRequested || exit.exitCode === 130) {
      if (runCreated && !result) result = this.writeFallback("cancelled", exit);
      throw new CancelledError(this.runDir, result);
    }
    if (exit.exitCode === 2) {
      const error = errorEvent?.error;
      const message = error?.message ?? (exit.stderrTail.trim() || "invalid input");
      if (error?.type === "SpecError") {
        const problems = message
          .split("\n")
          .filter((l) => l.startsWith("  - "))
          .map((l) => l.slice(4));
        throw new SpecInvalidError(problems.length ? problems : [message], "python");
      }
      throw new InputError(message, this.runDir, result);
    }
    if (runCreated && !result) {
      this.writeFallback("failed", exit);
    } else if (!runCreated && errorEvent) {
      throw new OploraError(`${errorEvent.error.type}: ${errorEvent.error.message}`);
    }
    throw new ProcessCrashedError(exit.exitCode, exit.signal, exit.stderrTail, this.runDir);
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
    const started = this.seen.find((e): e is EventOf<"started"> => e.type === "started");
    const how = exit.signal ? `killed by ${exit.signal}` : `exited with code ${exit.exitCode}`;
    const now = new Date();
    const startedAt = started ? new Date(started.time * 1000) : now;
    const result = {
      status,
      task: this.task,
      run_dir: this.runDir,
      metrics: null,
      artifacts: this.seen.flatMap((e) =>
        e.type === "artifact"
          ? [
              {
                kind: e.kind,
                path: e.path,
                ...(e.step !== undefined && { step: e.step }),
                ...(e.label !== undefined && { label: e.label }),
              },
            ]
          : [],
      ),
      error:
        status === "failed"
          ? {
              type: "ProcessCrashed",
              message: why ?? `the Python process ${how} before writing result.json`,
              traceback: exit.stderrTail.slice(-4000),
            }
          : null,
      versions: started?.versions ?? {},
      device: started?.device ?? null,
      timing: {
        started_at: startedAt.toISOString(),
        finished_at: now.toISOString(),
        wall_s: (now.getTime() - startedAt.getTime()) / 1000,
      },
      written_by: "sdk",
    } as RunResult;
    writeResultAtomic(this.runDir, result);
    return result;
  }
}
