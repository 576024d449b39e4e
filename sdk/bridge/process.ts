/**
 * The one way the SDK runs a Python process (execa), for both lanes: `job.ts` (one process per run) and
 * `sweep/worker.ts` (a long-lived worker).
 *
 *   stdin  ──► held open (the job's watchdog) or a request per line (the worker)
 *   fd 3   ──NDJSON──► onMessage(parsed JSON) per line; onMalformed for a line that is not JSON
 *   stdout/stderr ──► bounded tails (for error messages) and optional callbacks; never mixed with fd 3
 *
 * Stopping is `terminate(graceMs)`: SIGTERM, then SIGKILL if the process is still there after the grace.
 * A `detached` process leads its own process group (a terminal's Ctrl-C reaches only the SDK, which then
 * cancels in order) and is signalled as a group.
 */
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { execa } from "execa";
import { pythonEnv } from "./python.js";

/** SIGTERM first; SIGKILL after this many ms if Python has not exited. */
export const KILL_GRACE_MS = 5_000;
const TAIL_CHARS = 16_384;

export interface ProcessOptions {
  python: string;
  args: readonly string[];
  /** Extra environment variables (on top of `pythonEnv`). */
  env?: Record<string, string | undefined> | undefined;
  /** Own process group, signalled as a group (the worker); otherwise killed when Node exits (the job). */
  detached?: boolean | undefined;
  onStdout?: ((chunk: string) => void) | undefined;
  onStderr?: ((chunk: string) => void) | undefined;
  /** One parsed JSON value per non-empty fd-3 line. */
  onMessage: (message: unknown, line: string) => void;
  /** An fd-3 line that is not JSON (default: ignored). */
  onMalformed?: ((line: string, error: Error) => void) | undefined;
}

export interface ProcessExit {
  exitCode: number | undefined;
  signal: string | undefined;
  /** The spawn itself failed (e.g. ENOENT), with its message. */
  spawnError: string | undefined;
}

/** A bounded tail of a text stream. */
export class Tail {
  private text = "";
  constructor(private readonly chars = TAIL_CHARS) {}
  push(chunk: string): void {
    this.text = (this.text + chunk).slice(-this.chars);
  }
  toString(): string {
    return this.text;
  }
}

export class PythonProcess {
  readonly pid: number | undefined;
  /** How the process ended; settles once it is gone (never rejects). */
  readonly exit: Promise<ProcessExit>;
  /** Settles when fd 3 has closed (normally with the process). */
  readonly channelClosed: Promise<void>;
  readonly stdout = new Tail();
  readonly stderr = new Tail();
  private readonly proc: ReturnType<typeof startExeca>;
  private gone = false;

  constructor(private readonly options: ProcessOptions) {
    this.proc = startExeca(options);
    this.pid = this.proc.pid;
    this.proc.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      this.stdout.push(chunk);
      options.onStdout?.(chunk);
    });
    this.proc.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
      this.stderr.push(chunk);
      options.onStderr?.(chunk);
    });
    this.stdin.on("error", () => undefined); // EPIPE when the process died: seen as its exit
    const channel = this.proc.stdio[3] as Readable | undefined;
    this.channelClosed = channel ? this.readChannel(channel) : Promise.resolve();
    this.exit = this.proc.then((r) => {
      this.gone = true;
      const spawnError = r.failed && r.exitCode === undefined && !r.signal ? r.message : undefined;
      return { exitCode: r.exitCode, signal: r.signal, spawnError };
    });
  }

  get alive(): boolean {
    return !this.gone;
  }

  get stdin(): Writable {
    return this.proc.stdin as Writable;
  }

  /** Send `signal` (to the whole group when detached); a no-op once the process is gone. */
  kill(signal: NodeJS.Signals): void {
    if (this.gone || this.pid === undefined) return;
    try {
      if (this.options.detached) process.kill(-this.pid, signal);
      else this.proc.kill(signal);
    } catch {
      try {
        this.proc.kill(signal);
      } catch {
        /* already gone */
      }
    }
  }

  /** SIGTERM, then SIGKILL if the process is still there after `graceMs`; resolves once it is gone. */
  async terminate(graceMs: number = KILL_GRACE_MS): Promise<ProcessExit> {
    this.kill("SIGTERM");
    return this.waitOrKill(graceMs);
  }

  /** Wait up to `graceMs` for the process to exit on its own, then SIGKILL it. */
  async waitOrKill(graceMs: number = KILL_GRACE_MS): Promise<ProcessExit> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), graceMs);
    });
    const outcome = await Promise.race([this.exit, timeout]);
    clearTimeout(timer);
    if (outcome !== "timeout") return outcome;
    this.kill("SIGKILL");
    return this.exit;
  }

  private async readChannel(channel: Readable): Promise<void> {
    const lines = createInterface({ input: channel, crlfDelay: Number.POSITIVE_INFINITY });
    for await (const line of lines) {
      if (!line.trim()) continue;
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch (e) {
        this.options.onMalformed?.(line, e as Error);
        continue;
      }
      this.options.onMessage(message, line);
    }
  }
}

function startExeca(options: ProcessOptions) {
  return execa(options.python, options.args, {
    stdio: ["pipe", "pipe", "pipe", "pipe"],
    buffer: false,
    reject: false,
    forceKillAfterDelay: false, // the grace is ours (terminate), for both lanes
    cleanup: !options.detached,
    detached: options.detached ?? false,
    env: pythonEnv(options.env),
    extendEnv: false,
    stripFinalNewline: false,
    encoding: "utf8",
  });
}
