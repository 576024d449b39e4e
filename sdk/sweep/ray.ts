/**
 * The Ray backend of sweeps: every trial is one Ray task on a cluster (python/oplora/run/ray_driver.py).
 *
 *   sweep(base, { axes, outDir, backend: { kind: "ray", address: "10.0.0.5:6379" } })
 *
 * One driver process per sweep (`python -m oplora ray-driver`) connects to the cluster, checks that some
 * node can fit every trial before anything is submitted, submits trials, streams their events back and
 * writes each finished trial's run directory into the store atomically. Ray places the tasks and retries
 * those whose node died (`maxRetries`); a trial's own error is recorded as failed, never retried.
 *
 *   stdin  ──► {"op": "check" | "submit" | "cancel", ...}      one request per line
 *   fd 3   ◄── {"driver": "ready"} {"reply": "check"} {"trial", "event" | "placed"} {"reply": id, ...}
 *
 * The driver leads its own process group; closing its stdin (or Node dying) cancels every task.
 */
import { execa } from "execa";
import { z } from "zod";
import { PythonProcess } from "../bridge/process.js";
import { pythonEnv, resolvePython } from "../bridge/python.js";
import { OploraError } from "../errors.js";
import { RunEvent } from "../events.js";
import { RunResult } from "../result.js";
import type { Trial } from "./expand.js";
import type { Lane, TrialOutcome } from "./lanes.js";

export const LocalBackend = z.object({ kind: z.literal("local") }).strict();
export const RayBackend = z
  .object({
    kind: z.literal("ray"),
    /** The cluster: "HOST:PORT" of the head's GCS, or "auto" (the cluster this machine is a node of). */
    address: z.string().min(1),
    /** Passed to `ray.init(runtime_env=...)` as it is. */
    runtimeEnv: z.record(z.string(), z.unknown()).optional(),
    /** Retries of a trial whose worker or node died (default 2). */
    maxRetries: z.number().int().min(0).optional(),
    /** The store is on a path every node mounts: trials write there and a retried one resumes. */
    sharedStore: z.boolean().optional(),
    /** Fail trials still pending when nothing has started or finished for this long (default 600). */
    pendingTimeoutS: z.number().positive().optional(),
  })
  .strict();
export const SweepBackend = z.discriminatedUnion("kind", [LocalBackend, RayBackend]);
export type SweepBackend = z.infer<typeof SweepBackend>;
export type RayBackend = z.infer<typeof RayBackend>;

/** The cluster cannot run the sweep: ray missing, no connection, or a trial no node can fit. */
export class RayBackendError extends OploraError {
  override name = "RayBackendError";
}

export interface RayNode {
  node_id: string;
  node_ip: string;
  cpus: number;
  gpus: number;
  memory: number;
}

interface Reply {
  code: number;
  result: RunResult | null;
  cancelled: boolean;
}

interface Pending {
  onEvent: (e: RunEvent) => void;
  resolve: (r: Reply) => void;
}

export interface RayDriverOptions {
  python?: string | undefined;
  env?: Record<string, string | undefined> | undefined;
  onStderr?: ((chunk: string) => void) | undefined;
  killGraceMs: number;
}

export class RayDriver {
  readonly pid: number;
  readonly exited: Promise<void>;
  nodes: RayNode[] = [];
  private readonly proc: PythonProcess;
  private readonly pending = new Map<string, Pending>();
  private onReady: ((nodes: RayNode[]) => void) | undefined;
  private onCheck: ((error: string | null) => void) | undefined;

  constructor(backend: RayBackend, options: RayDriverOptions) {
    const config = {
      address: backend.address,
      runtime_env: backend.runtimeEnv ?? null,
      max_retries: backend.maxRetries ?? 2,
      shared_store: backend.sharedStore ?? false,
      pending_timeout_s: backend.pendingTimeoutS ?? 600,
    };
    this.proc = new PythonProcess({
      python: resolvePython({ python: options.python }),
      args: ["-m", "oplora", "ray-driver", "--config", JSON.stringify(config)],
      env: { ...options.env, OPLORA_WORKER_FD: "3" },
      detached: true,
      onStdout: options.onStderr,
      onStderr: options.onStderr,
      onMessage: (msg) => this.onMessage(msg as Record<string, unknown>),
    });
    this.pid = this.proc.pid ?? -1;
    this.exited = this.proc.exit.then(() => {
      for (const p of this.pending.values()) p.resolve({ code: 1, result: null, cancelled: false });
      this.pending.clear();
    });
  }

  private failure(what: string): RayBackendError {
    const tail = this.crashTail;
    const said = tail
      .split("\n")
      .filter((l) => l.startsWith("oplora: "))
      .map((l) => l.slice(8));
    return new RayBackendError(said.length ? said.join("\n") : `${what}\n${tail.trim().slice(-2000)}`);
  }

  /** Wait until the driver is connected to the cluster; rejects with the driver's reason otherwise. */
  async ready(): Promise<RayNode[]> {
    const ok = new Promise<RayNode[]>((r) => {
      this.onReady = r;
    });
    const dead = this.exited.then(() => {
      throw this.failure("the Ray driver exited before it connected to the cluster");
    });
    return Promise.race([ok, dead]);
  }

  /** Refuse (RayBackendError) when some trial asks more than any node has; nothing is submitted then. */
  async check(trials: readonly Trial[]): Promise<void> {
    const reply = new Promise<string | null>((r) => {
      this.onCheck = r;
    });
    this.send({ op: "check", trials: trials.map((t) => ({ id: t.id, label: t.label, spec: t.spec })) });
    const dead = this.exited.then(() => {
      throw this.failure("the Ray driver exited during the resource check");
    });
    const error = await Promise.race([reply, dead]);
    if (error) throw new RayBackendError(error);
  }

  submit(trial: Trial, outDir: string, onEvent: (e: RunEvent) => void): Promise<Reply> {
    if (!this.proc.alive) return Promise.resolve({ code: 1, result: null, cancelled: false });
    return new Promise((resolve) => {
      this.pending.set(trial.id, { onEvent, resolve });
      this.send({ op: "submit", id: trial.id, label: trial.label, spec: trial.spec, out_dir: outDir });
    });
  }

  cancel(id: string): void {
    this.send({ op: "cancel", id });
  }

  /** Close stdin (the driver cancels what is left and disconnects), SIGKILL its group after `graceMs`. */
  async close(graceMs: number): Promise<void> {
    if (!this.proc.alive) return;
    this.proc.stdin.end();
    await this.proc.waitOrKill(graceMs);
    await this.exited;
  }

  get crashTail(): string {
    return `${this.proc.stdout}${this.proc.stderr}`.slice(-8000);
  }

  private send(obj: unknown): void {
    if (this.proc.alive) this.proc.stdin.write(`${JSON.stringify(obj)}\n`);
  }

  private onMessage(msg: Record<string, unknown>): void {
    if (msg.driver === "ready") {
      this.nodes = msg.nodes as RayNode[];
      this.onReady?.(this.nodes);
    } else if (msg.reply === "check") {
      this.onCheck?.((msg.error as string | null) ?? null);
    } else if (typeof msg.reply === "string") {
      const p = this.pending.get(msg.reply);
      this.pending.delete(msg.reply);
      const result = msg.result == null ? null : RunResult.safeParse(msg.result);
      p?.resolve({
        code: Number(msg.code),
        result: result?.success ? result.data : null,
        cancelled: msg.cancelled === true,
      });
    } else if (typeof msg.trial === "string" && msg.event) {
      const parsed = RunEvent.safeParse(msg.event);
      if (parsed.success) this.pending.get(msg.trial)?.onEvent(parsed.data);
    }
  }
}

/** A slot of a Ray sweep: hands its trial to the shared driver; Ray decides where it runs. */
export class RayLane implements Lane {
  readonly pids: number[];
  constructor(private readonly driver: RayDriver) {
    this.pids = [driver.pid];
  }

  async run(
    trial: Trial,
    dir: string,
    onEvent: (e: RunEvent) => void,
    signal: AbortSignal,
  ): Promise<TrialOutcome> {
    if (signal.aborted) return { status: "cancelled", result: null, error: null };
    const onAbort = () => this.driver.cancel(trial.id);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      const reply = await this.driver.submit(trial, dir, onEvent);
      if (reply.cancelled || (signal.aborted && !reply.result))
        return { status: "cancelled", result: null, error: null };
      const r = reply.result;
      if (r)
        return {
          status: r.status,
          result: r,
          error: r.error ? { type: r.error.type, message: r.error.message } : null,
        };
      const message =
        reply.code === 2
          ? `spec refused by the runner on the cluster (trial ${trial.label})`
          : `the Ray driver ended while the trial ran\n${this.driver.crashTail.trim().slice(-2000)}`;
      return {
        status: "failed",
        result: null,
        error: { type: reply.code === 2 ? "InputError" : "RayDriverError", message },
      };
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  async close(): Promise<void> {}
}

/** Start the driver for `queue`, wait for the cluster, refuse unfit trials. Closes the driver on error. */
export async function startRayDriver(
  backend: RayBackend,
  queue: readonly Trial[],
  options: RayDriverOptions,
): Promise<RayDriver> {
  const driver = new RayDriver(backend, options);
  try {
    await driver.ready();
    await driver.check(queue);
    return driver;
  } catch (e) {
    await driver.close(options.killGraceMs);
    throw e;
  }
}

export interface RayDoctorNode extends RayNode {
  /** Package versions on that node (null when the probe task failed: see `error`). */
  versions: Record<string, string | null> | null;
  /** Packages whose version differs from the driver's: {name: {driver, node}}. */
  mismatch: Record<string, { driver: string | null; node: string | null }> | null;
  error?: string;
}

export interface RayDoctorReport {
  address: string;
  driver_versions: Record<string, string | null>;
  nodes: RayDoctorNode[];
  /** Every node answered and runs the driver's versions of oplora, torch, peft, diffusers, transformers. */
  ok: boolean;
}

/**
 * A Ray cluster's nodes (CPUs, GPUs, memory) and, from a tiny task pinned to each, whether it imports the
 * same package versions as this machine: `oplora doctor --ray ADDR`. RayBackendError when ray is not
 * installed or the cluster cannot be reached.
 */
export async function rayDoctor(
  address: string,
  options: { python?: string } = {},
): Promise<RayDoctorReport> {
  const python = resolvePython({ python: options.python });
  const r = await execa(python, ["-m", "oplora", "ray-doctor", "--address", address], {
    env: pythonEnv(),
    extendEnv: false,
    reject: false,
  });
  if (r.exitCode !== 0 && r.exitCode !== 1) {
    const said = r.stderr
      .split("\n")
      .filter((l) => l.startsWith("oplora: "))
      .map((l) => l.slice(8));
    throw new RayBackendError(said.length ? said.join("\n") : r.stderr.trim().slice(-2000) || r.message);
  }
  return JSON.parse(r.stdout) as RayDoctorReport;
}
