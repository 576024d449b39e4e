/**
 * A warm worker: one `python -m oplora worker` process that runs trial after trial, so a sweep pays
 * Python's start-up (torch, diffusers, transformers imports) once per worker, not once per trial.
 *
 *   stdin  ──► {"id", "spec", "out_dir"}            one request per line (`python -m oplora worker`)
 *   fd 3   ◄── run events (NDJSON) ... {"reply": id, "code", "result"}
 *   stdout/stderr: library chatter, kept as a bounded tail for crash messages
 *
 * The process runs in its own process group (so a terminal's Ctrl-C reaches the SDK, which then cancels
 * in order) and is signalled as a group. Cancel = SIGTERM (the runner writes a cancelled result.json and
 * replies), then SIGKILL after a grace period. A worker that dies mid-trial rejects that trial with
 * `WorkerCrashedError`; the sweep records it as failed and starts a fresh worker for the next trial.
 */
import { PythonProcess } from "../bridge/process.js";
import { RunEvent } from "../events.js";
import type { RunResult } from "../result.js";
import { WorkerCrashedError } from "./errors.js";

export interface WorkerReply {
  code: number;
  result: RunResult | null;
}

interface Pending {
  id: string;
  onEvent: (event: RunEvent) => void;
  resolve: (reply: WorkerReply) => void;
  reject: (error: Error) => void;
}

export interface WorkerOptions {
  python: string;
  env?: Record<string, string | undefined> | undefined;
  /** Python's stdout and stderr chatter, as it arrives. */
  onStderr?: ((chunk: string) => void) | undefined;
}

export class Worker {
  readonly pid: number;
  /** Settles when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private readonly proc: PythonProcess;
  private pending: Pending | undefined;
  private seq = 0;

  constructor(options: WorkerOptions) {
    this.proc = new PythonProcess({
      python: options.python,
      args: ["-m", "oplora", "worker"],
      env: { ...options.env, OPLORA_WORKER_FD: "3" },
      detached: true,
      onStdout: options.onStderr,
      onStderr: options.onStderr,
      onMessage: (message) => this.onMessage(message),
    });
    this.pid = this.proc.pid ?? -1;
    this.exited = this.proc.exit.then((exit) => {
      const code = exit.exitCode ?? null;
      const signal = exit.signal ?? null;
      const p = this.pending;
      this.pending = undefined;
      p?.reject(new WorkerCrashedError(code, signal, this.tail(exit.spawnError)));
      return { code, signal };
    });
  }

  get alive(): boolean {
    return this.proc.alive;
  }

  get busy(): boolean {
    return this.pending !== undefined;
  }

  /** Run one spec into `outDir`; rejects with WorkerCrashedError if the process dies first. */
  run(spec: unknown, outDir: string, onEvent: (event: RunEvent) => void): Promise<WorkerReply> {
    if (!this.proc.alive) return Promise.reject(new WorkerCrashedError(null, null, this.tail()));
    if (this.pending) return Promise.reject(new Error("worker is busy"));
    const id = `r${this.seq++}`;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending = { id, onEvent, resolve, reject };
      this.proc.stdin.write(`${JSON.stringify({ id, spec, out_dir: outDir })}\n`);
    });
  }

  /** Signal the worker's whole process group (it leads one). */
  kill(signal: NodeJS.Signals): void {
    this.proc.kill(signal);
  }

  /** Cancel the trial in progress: SIGTERM, then SIGKILL if the worker is still there after `graceMs`. */
  async terminate(graceMs: number): Promise<void> {
    await this.proc.terminate(graceMs);
    await this.exited;
  }

  /** End the worker: close its stdin (it finishes and exits), SIGKILL after `graceMs`. */
  async close(graceMs: number): Promise<void> {
    if (!this.proc.alive) return;
    this.proc.stdin.end();
    await this.proc.waitOrKill(graceMs);
    await this.exited;
  }

  /** What the worker last wrote (stderr, then stdout), for crash messages. */
  private tail(spawnError?: string): string {
    return [this.proc.stderr.toString(), this.proc.stdout.toString(), spawnError ?? ""]
      .filter((t) => t.trim())
      .join("\n");
  }

  private onMessage(message: unknown): void {
    if (!message || typeof message !== "object") return;
    const msg = message as Record<string, unknown>;
    if ("worker" in msg) return; // ready
    const p = this.pending;
    if ("reply" in msg) {
      if (p && msg.reply === p.id) {
        this.pending = undefined;
        p.resolve({ code: Number(msg.code), result: (msg.result ?? null) as RunResult | null });
      }
      return;
    }
    const parsed = RunEvent.safeParse(msg);
    if (parsed.success) p?.onEvent(parsed.data);
  }
}
