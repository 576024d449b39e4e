/**
 * Every error the SDK throws is an `OploraError`; each subclass carries what a caller needs to act on it
 * (the spec's problems, Python's traceback, the run directory, the process's exit).
 */
import type { RunResult } from "./result.js";

/** Python's side of a failure: its exception type, message and formatted traceback. */
export interface PythonErrorInfo {
  type: string;
  message: string;
  traceback: string;
}

export class OploraError extends Error {
  override name = "OploraError";
}

/** A spec that does not match the schema; `issues` lists every problem as `path: message`. */
export class SpecInvalidError extends OploraError {
  override name = "SpecInvalidError";
  constructor(
    readonly issues: string[],
    source: "sdk" | "python" = "sdk",
  ) {
    super(
      `invalid spec${source === "python" ? " (rejected by Python)" : ""}:\n${issues.map((i) => `  - ${i}`).join("\n")}`,
    );
  }
}

/** Bad input found by Python before training (a missing folder, a non-empty run dir, a bad record). */
export class InputError extends OploraError {
  override name = "InputError";
  constructor(
    message: string,
    readonly runDir: string,
    readonly result: RunResult | null = null,
  ) {
    super(message);
  }
}

/** Another live process writes this run directory (its `run.lock`); the CLI's exit 2. */
export class RunLockedError extends InputError {
  override name = "RunLockedError";
  constructor(
    runDir: string,
    readonly holder: { pid: number; hostname: string; started_at: string },
  ) {
    super(
      `run directory ${runDir} is in use by another run (pid ${holder.pid} on ${holder.hostname} since ${holder.started_at}); wait for it or cancel it`,
      runDir,
    );
  }
}

/** The Python interpreter is missing, or cannot import oplora; `fix` is a command that repairs it. */
export class PythonEnvironmentError extends OploraError {
  override name = "PythonEnvironmentError";
  constructor(
    message: string,
    readonly python: string,
    readonly fix: string,
  ) {
    super(`${message}\n  fix: ${fix}`);
  }
}

/** The run ran and Python raised: its type, message and traceback, with the run dir and its result.json. */
export class TrainingFailedError extends OploraError {
  override name = "TrainingFailedError";
  readonly type: string;
  readonly pythonMessage: string;
  readonly traceback: string;
  constructor(
    error: PythonErrorInfo,
    readonly runDir: string,
    readonly result: RunResult,
  ) {
    super(`run failed: ${error.type}: ${error.message} (run dir ${runDir})`);
    this.type = error.type;
    this.pythonMessage = error.message;
    this.traceback = error.traceback;
  }
}

/** The Python process died without finishing its run (killed, out of memory, a native crash). */
export class ProcessCrashedError extends OploraError {
  override name = "ProcessCrashedError";
  constructor(
    readonly exitCode: number | undefined,
    readonly signal: string | undefined,
    readonly stderrTail: string,
    readonly runDir: string,
  ) {
    const how = signal ? `was killed by ${signal}` : `exited with code ${exitCode}`;
    const tail = stderrTail.trim() ? `\n--- last stderr ---\n${stderrTail.trimEnd()}` : "";
    super(`the Python process ${how} before finishing its run (run dir ${runDir})${tail}`);
  }
}

/** The run was cancelled (AbortSignal, `handle.cancel()`, or `break` out of `for await`). */
export class CancelledError extends OploraError {
  override name = "CancelledError";
  constructor(
    readonly runDir: string,
    readonly result: RunResult | null = null,
  ) {
    super(`run cancelled (run dir ${runDir})`);
  }
}

/** A quick-lane call raised in Python (or the interpreter died / timed out while it ran). */
export class PythonCallError extends OploraError {
  override name = "PythonCallError";
  readonly type: string;
  readonly pythonMessage: string;
  readonly traceback: string;
  constructor(
    readonly call: string,
    error: PythonErrorInfo,
  ) {
    super(`${call}: ${error.type}: ${error.message}`);
    this.type = error.type;
    this.pythonMessage = error.message;
    this.traceback = error.traceback;
  }
}

/** Python said something the SDK's schemas do not accept: an event, result.json or a quick-call result. */
export class ProtocolError extends OploraError {
  override name = "ProtocolError";
}
