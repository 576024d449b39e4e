/**
 * The job lane: one `python -m oplora run` process per run.
 *
 *   spec ──tmp file──► python -m oplora run SPEC --out DIR --events-fd 3 --watch-stdin
 *        fd 3 ──NDJSON──► zod-checked events ──► onEvent
 *        stdout/stderr ──► tails (for error messages) and optional callbacks; never mixed with events
 *        stdin: held open; when Node dies it closes, and Python's watchdog cancels the run
 *
 * `startJob` resolves to a `JobExit` (how the process ended, the events and result.json it left);
 * `sdk/run.ts` turns that into a typed result or a typed error.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ProtocolError } from "../errors.js";
import { RunEvent } from "../events.js";
import type { Spec } from "../spec/index.js";
import { KILL_GRACE_MS, type ProcessExit, PythonProcess } from "./process.js";
import { resolvePython } from "./python.js";

export interface JobOptions {
  outDir: string;
  python?: string | undefined;
  resume?: boolean | undefined;
  env?: Record<string, string | undefined> | undefined;
  onStderr?: ((chunk: string) => void) | undefined;
  onStdout?: ((chunk: string) => void) | undefined;
  /** Aborting it stops the run: SIGTERM, then SIGKILL after `killGraceMs`. */
  cancelSignal: AbortSignal;
  killGraceMs?: number | undefined;
}

export interface JobExit extends ProcessExit {
  stderrTail: string;
  stdoutTail: string;
  protocolError: ProtocolError | undefined;
}

export interface Job {
  runDir: string;
  python: string;
  pid: number | undefined;
  exit: Promise<JobExit>;
}

export function startJob(spec: Spec, options: JobOptions, onEvent: (event: RunEvent) => void): Job {
  const python = resolvePython(options);
  const runDir = resolve(options.outDir);
  const specDir = mkdtempSync(join(tmpdir(), "oplora-spec-"));
  const specFile = join(specDir, "spec.json");
  writeFileSync(specFile, JSON.stringify(spec));
  const args = ["-m", "oplora", "run", specFile, "--out", runDir, "--events-fd", "3", "--watch-stdin"];
  if (options.resume) args.push("--resume");
  const graceMs = options.killGraceMs ?? KILL_GRACE_MS;

  let protocolError: ProtocolError | undefined;
  const malformed = (line: string, why: string) => {
    if (protocolError) return;
    protocolError = new ProtocolError(`malformed event from Python (${why}): ${line.slice(0, 300)}`);
    if (!options.cancelSignal.aborted) void proc.terminate(graceMs);
  };
  const proc = new PythonProcess({
    python,
    args,
    env: options.env,
    onStdout: options.onStdout,
    onStderr: options.onStderr,
    onMalformed: (line, e) => malformed(line, e.message),
    onMessage: (message, line) => {
      if (protocolError) return;
      const parsed = RunEvent.safeParse(message);
      if (!parsed.success)
        return malformed(
          line,
          parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "),
        );
      if (parsed.data.type === "started") rmSync(specDir, { recursive: true, force: true });
      onEvent(parsed.data);
    },
  });
  const onCancel = () => void proc.terminate(graceMs);
  if (options.cancelSignal.aborted) onCancel();
  else options.cancelSignal.addEventListener("abort", onCancel, { once: true });

  const exit = (async (): Promise<JobExit> => {
    const ended = await proc.exit;
    options.cancelSignal.removeEventListener("abort", onCancel);
    // The events pipe normally closes with the process; a leftover grandchild could hold it open.
    await Promise.race([
      proc.channelClosed.catch(() => undefined),
      new Promise((r) => setTimeout(r, 1_000).unref()),
    ]);
    rmSync(specDir, { recursive: true, force: true });
    return {
      ...ended,
      stderrTail: proc.stderr.toString(),
      stdoutTail: proc.stdout.toString(),
      protocolError,
    };
  })();

  return { runDir, python, pid: proc.pid, exit };
}
