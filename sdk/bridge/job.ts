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
import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { execa } from "execa";
import { ProtocolError } from "../errors.js";
import { RunEvent } from "../events.js";
import type { Spec } from "../spec/index.js";
import { pythonEnv, resolvePython } from "./python.js";

/** SIGTERM first; SIGKILL after this many ms if Python has not exited. */
export const KILL_GRACE_MS = 5_000;
const TAIL_BYTES = 16_384;

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

export interface JobExit {
  exitCode: number | undefined;
  signal: string | undefined;
  /** The spawn itself failed (e.g. ENOENT), with its message. */
  spawnError: string | undefined;
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

/** A bounded tail of a text stream. */
class Tail {
  private text = "";
  push(chunk: string): void {
    this.text = (this.text + chunk).slice(-TAIL_BYTES);
  }
  toString(): string {
    return this.text;
  }
}

export function startJob(spec: Spec, options: JobOptions, onEvent: (event: RunEvent) => void): Job {
  const python = resolvePython(options);
  const runDir = resolve(options.outDir);
  const specDir = mkdtempSync(join(tmpdir(), "oplora-spec-"));
  const specFile = join(specDir, "spec.json");
  writeFileSync(specFile, JSON.stringify(spec));
  const args = ["-m", "oplora", "run", specFile, "--out", runDir, "--events-fd", "3", "--watch-stdin"];
  if (options.resume) args.push("--resume");

  const proc = execa(python, args, {
    stdio: ["pipe", "pipe", "pipe", "pipe"],
    buffer: false,
    reject: false,
    cancelSignal: options.cancelSignal,
    forceKillAfterDelay: options.killGraceMs ?? KILL_GRACE_MS,
    cleanup: true,
    env: pythonEnv(options.env),
    extendEnv: false,
    stripFinalNewline: false,
    encoding: "utf8",
  });

  const stderr = new Tail();
  const stdout = new Tail();
  proc.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr.push(chunk);
    options.onStderr?.(chunk);
  });
  proc.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout.push(chunk);
    options.onStdout?.(chunk);
  });

  let protocolError: ProtocolError | undefined;
  const eventsStream = proc.stdio[3] as Readable | undefined;
  const eventsDone = eventsStream ? readEvents(eventsStream) : Promise.resolve();

  async function readEvents(stream: Readable): Promise<void> {
    const lines = createInterface({ input: stream, crlfDelay: Number.POSITIVE_INFINITY });
    for await (const line of lines) {
      if (!line.trim() || protocolError) continue;
      let event: RunEvent;
      try {
        const parsed = RunEvent.safeParse(JSON.parse(line));
        if (!parsed.success)
          throw new Error(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
        event = parsed.data;
      } catch (e) {
        protocolError = new ProtocolError(
          `malformed event from Python (${(e as Error).message}): ${line.slice(0, 300)}`,
        );
        if (!options.cancelSignal.aborted) proc.kill("SIGTERM");
        continue;
      }
      if (event.type === "started") rmSync(specDir, { recursive: true, force: true });
      onEvent(event);
    }
  }

  const exit = (async (): Promise<JobExit> => {
    const result = await proc;
    // The events pipe normally closes with the process; a leftover grandchild could hold it open.
    await Promise.race([eventsDone.catch(() => undefined), new Promise((r) => setTimeout(r, 1_000).unref())]);
    rmSync(specDir, { recursive: true, force: true });
    const spawnError =
      result.failed && result.exitCode === undefined && !result.signal ? result.message : undefined;
    return {
      exitCode: result.exitCode,
      signal: result.signal,
      spawnError: spawnError && !result.isCanceled ? spawnError : undefined,
      stderrTail: stderr.toString(),
      stdoutTail: stdout.toString(),
      protocolError,
    };
  })();

  return { runDir, python, pid: proc.pid, exit };
}
