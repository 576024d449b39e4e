/** Errors of sweeps and their run store; all are `OploraError`s. */
import { OploraError } from "../errors.js";
import type { LockHolder } from "../lock.js";

/** The sweep's axes or trial specs are invalid; `problems` names each trial and path at fault. */
export class SweepInvalidError extends OploraError {
  override name = "SweepInvalidError";
  constructor(readonly problems: string[]) {
    super(`invalid sweep:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** Another live sweep holds the directory's lock. */
export class SweepLockedError extends OploraError {
  override name = "SweepLockedError";
  constructor(
    readonly dir: string,
    readonly pid: number,
    readonly holder?: LockHolder,
  ) {
    const at = holder ? ` on ${holder.hostname} since ${holder.started_at}` : "";
    super(`sweep directory ${dir} is in use by another sweep (pid ${pid}${at}); wait for it or cancel it`);
  }
}

/** A warm worker process died while it ran a trial. */
export class WorkerCrashedError extends OploraError {
  override name = "WorkerCrashedError";
  constructor(
    readonly exitCode: number | null,
    readonly signal: string | null,
    readonly stderrTail: string,
  ) {
    const how = signal ? `was killed by ${signal}` : `exited with code ${exitCode}`;
    const tail = stderrTail.trim() ? `\n--- last stderr ---\n${stderrTail.trimEnd()}` : "";
    super(`the worker process ${how} while it ran the trial${tail}`);
  }
}
