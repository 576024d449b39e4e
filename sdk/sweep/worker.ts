/**
 * A warm worker: one `python -m oplora worker` process that runs trial after trial, so a sweep pays
 * Python's start-up (torch, diffusers, transformers imports) once per worker, not once per trial.
 *
 *   stdin  ──► {"id", "spec", "out_dir"}            one request per line (python/oplora/worker.py)
 *   fd 3   ◄── run events (NDJSON) ... {"reply": id, "code", "result"}
 *   stdout/stderr: library chatter, kept as a bounded tail for crash messages
 *
 * The process runs in its own process group (so a terminal's Ctrl-C reaches the SDK, which then cancels
 * in order) and is signalled as a group. Cancel = SIGTERM (the runner writes a cancelled result.json and
 * replies), then SIGKILL after a grace period. A worker that dies mid-trial rejects that trial with
 * `WorkerCrashedError`; the sweep records it as failed and starts a fresh worker for the next trial.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createInterface } from "node:readline";
import type { Readable, Writable } from "node:stream";
import { pythonEnv } from "../bridge/python.js";
import { RunEvent } from "../events.js";
import type { RunResult } from "../result.js";
import { WorkerCrashedError } from "./errors.js";

const TAIL_CHARS = 8_000;

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
  onStderr?: ((chunk: string) => void) | undefined;
}

export class Worker {
  readonly pid: number;
  /** Settles when the process has exited. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>;
  private readonly proc: ChildProcess;
  private pending: Pending | undefined;
  private tail = "";
  private gone = false;
  private seq = 0;

  constructor(options: WorkerOptions) {
    this.proc = spawn(options.python, ["-m", "oplora", "worker"], {
      stdio: ["pipe", "pipe", "pipe", "pipe"],
      env: pythonEnv({ ...options.env, OPLORA_WORKER_FD: "3" }),
      detached: true,
    });
    this.pid = this.proc.pid ?? -1;
    const keep = (chunk: Buffer) => {
      const text = chunk.toString("utf8");
      this.tail = (this.tail + text).slice(-TAIL_CHARS);
      options.onStderr?.(text);
    };
    this.proc.stdout?.on("data", keep);
    this.proc.stderr?.on("data", keep);
    (this.proc.stdin as Writable).on("error", () => undefined); // EPIPE when the worker died: seen as exit
    const channel = this.proc.stdio[3] as Readable;
    createInterface({ input: channel, crlfDelay: Number.POSITIVE_INFINITY }).on("line", (line) =>
      this.onLine(line),
    );
    this.exited = new Promise((resolve) => {
      this.proc.on("error", (e) => {
        this.tail += `\n${e.message}`;
      });
      this.proc.on("close", (code, signal) => {
        this.gone = true;
        const p = this.pending;
        this.pending = undefined;
        p?.reject(new WorkerCrashedError(code, signal, this.tail));
        resolve({ code, signal });
      });
    });
  }

  get alive(): boolean {
    return !this.gone;
  }

  get busy(): boolean {
    return this.pending !== undefined;
  }

  /** Run one spec into `outDir`; rejects with WorkerCrashedError if the process dies first. */
  run(spec: unknown, outDir: string, onEvent: (event: RunEvent) => void): Promise<WorkerReply> {
    if (this.gone) return Promise.reject(new WorkerCrashedError(null, null, this.tail));
    if (this.pending) return Promise.reject(new Error("worker is busy"));
    const id = `r${this.seq++}`;
    return new Promise<WorkerReply>((resolve, reject) => {
      this.pending = { id, onEvent, resolve, reject };
      (this.proc.stdin as Writable).write(`${JSON.stringify({ id, spec, out_dir: outDir })}\n`);
    });
  }

  /** Signal the worker's whole process group (it leads one). */
  kill(signal: NodeJS.Signals): void {
    if (this.gone) return;
    try {
      process.kill(-this.pid, signal);
    } catch {
      try {
        this.proc.kill(signal);
      } catch {
        /* already gone */
      }
    }
  }

  /** Cancel the trial in progress: SIGTERM, then SIGKILL if the worker is still there after `graceMs`. */
  async terminate(graceMs: number): Promise<void> {
    this.kill("SIGTERM");
    await this.waitOrKill(graceMs);
  }

  /** End the worker: close its stdin (it finishes and exits), SIGKILL after `graceMs`. */
  async close(graceMs: number): Promise<void> {
    if (this.gone) return;
    (this.proc.stdin as Writable).end();
    await this.waitOrKill(graceMs);
  }

  private async waitOrKill(graceMs: number): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), graceMs);
    });
    const outcome = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (outcome === "timeout") {
      this.kill("SIGKILL");
      await this.exited;
    }
  }

  private onLine(line: string): void {
    if (!line.trim()) return;
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return;
    }
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
