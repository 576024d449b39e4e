/**
 * The quick lane: typed calls into `python/oplora/quick.py` through pythonia, without its rough edges.
 *
 *   - one interpreter (the resolved Python), started lazily on the first call, restarted after a death;
 *   - calls are serialised; each takes/returns a JSON string and the result is zod-validated;
 *   - Python exceptions come back whole as data (quick.py's envelope) -> PythonCallError(type, message, traceback);
 *   - the interpreter's exit is watched: a call in flight fails at once instead of waiting for pythonia's
 *     REQ_TIMEOUT (disabled here: REQ_TIMEOUT=0 holds no timer), and a per-call timeout kills a hung one;
 *   - the child and its IPC channel are unref'd between calls, so Node exits when the program is done, and
 *     `close()` (or process exit) ends the interpreter.
 *
 * pythonia spawns its Python when it is first required, reading PYTHON_BIN at that moment; we set it (and
 * PYTHONPATH) just around the require, attach an `error` listener in the same tick (a bad binary otherwise
 * crashes Node with an unhandled `error` event), then restore the environment.
 */
import type { ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import type { z } from "zod";
import {
  ProtocolError,
  PythonCallError,
  type PythonEnvironmentError,
  type PythonErrorInfo,
} from "../errors.js";
import { notImportable, type PythonOptions, pythonEnv, resolvePython } from "./python.js";

const require = createRequire(import.meta.url);

/** The slice of pythonia's CommonJS module we use. */
interface Pythonia {
  python: ((module: string) => Promise<PyModule>) & { exit(): void };
  com: { proc: ChildProcess | null; start(): void };
}
type PyModule = Record<string, (payload: string) => Promise<string>>;

export interface CallOptions {
  /** Per-call limit in ms (default 60 s); on expiry the interpreter is killed and restarted next call. */
  timeoutMs?: number | undefined;
}

const DEFAULT_TIMEOUT_MS = 60_000;

interface Live {
  pythonia: Pythonia;
  proc: ChildProcess;
  module: Promise<PyModule>;
  /** Rejects when the interpreter exits or fails to start. */
  died: Promise<never>;
  python: string;
}

let pythoniaModule: Pythonia | undefined;

function withEnv<T>(vars: Record<string, string>, fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

export class QuickBridge {
  private live: Live | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private exitHook: (() => void) | undefined;

  constructor(private readonly options: PythonOptions = {}) {}

  /** The interpreter's pid (undefined before the first call or after close). */
  get pid(): number | undefined {
    return this.live?.proc.pid;
  }

  /** Call `oplora.quick.<fn>(json(args))` and validate its value with `schema`. */
  call<S extends z.ZodType>(
    fn: string,
    args: object,
    schema: S,
    options: CallOptions = {},
  ): Promise<z.output<S>> {
    const next = this.queue.then(() => this.callNow(fn, args, schema, options));
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** End the interpreter (safe to call twice; the next call starts a new one). */
  close(): void {
    const live = this.live;
    this.live = undefined;
    if (!live) return;
    try {
      live.pythonia.python.exit(); // clears pythonia's interval, kills the child, forgets it
    } catch {
      live.proc.kill("SIGKILL");
    }
  }

  private async callNow<S extends z.ZodType>(fn: string, args: object, schema: S, options: CallOptions) {
    const live = this.ensure();
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.close();
        reject(
          new PythonCallError(fn, {
            type: "Timeout",
            message: `no answer within ${timeoutMs} ms; the interpreter was stopped`,
            traceback: "",
          }),
        );
      }, timeoutMs);
    });
    live.proc.channel?.ref();
    try {
      const call = (async () => {
        const module = await live.module;
        return await module[fn]?.(JSON.stringify(args));
      })();
      const raw = await Promise.race([call, live.died, timeout]);
      return parseEnvelope(fn, raw, schema);
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      const err = e instanceof PythonCallError ? e : new PythonCallError(fn, fromPythonia(e));
      throw missingModule(live.python, err) ?? err;
    } finally {
      clearTimeout(timer);
      if (this.live === live) live.proc.channel?.unref();
    }
  }

  private ensure(): Live {
    if (this.live) return this.live;
    const python = resolvePython(this.options);
    const env = pythonEnv();
    const pythonia = withEnv(
      { PYTHON_BIN: python, PYTHONPATH: env.PYTHONPATH ?? "", REQ_TIMEOUT: "0", PYTHONUNBUFFERED: "1" },
      () => {
        if (!pythoniaModule) pythoniaModule = require("pythonia") as Pythonia;
        else if (!pythoniaModule.com.proc) pythoniaModule.com.start();
        return pythoniaModule;
      },
    );
    const proc = pythonia.com.proc as ChildProcess;
    let fail: (e: Error) => void = () => undefined;
    const died = new Promise<never>((_, reject) => {
      fail = reject;
    });
    died.catch(() => undefined);
    proc.once("error", (e) =>
      fail(
        new PythonCallError("start", {
          type: "InterpreterFailed",
          message: `cannot start ${python}: ${e.message}`,
          traceback: "",
        }),
      ),
    );
    proc.once("exit", (code, signal) => {
      fail(
        new PythonCallError("call", {
          type: "InterpreterDied",
          message: `the Python interpreter (pid ${proc.pid}) ${signal ? `was killed by ${signal}` : `exited with code ${code}`}`,
          traceback: "",
        }),
      );
      if (this.live?.proc === proc) this.close();
    });
    // Between calls nothing here keeps Node alive: the child, its channel and pythonia's GC interval are unref'd.
    proc.unref();
    proc.channel?.unref();
    (globalThis as { __pythonBridge?: { loop?: NodeJS.Timeout } }).__pythonBridge?.loop?.unref();
    if (!this.exitHook) {
      this.exitHook = () => this.live?.proc.kill("SIGKILL");
      process.once("exit", this.exitHook);
    }
    const module = Promise.race([pythonia.python("oplora.run.quick"), died]);
    module.catch(() => undefined);
    this.live = { pythonia, proc, module, died, python };
    return this.live;
  }
}

/** A Python module that is not installed is the environment's fault: PythonEnvironmentError naming the
 * module and the fix (what `run` says for the same problem), not a call error. */
function missingModule(python: string, err: PythonCallError): PythonEnvironmentError | undefined {
  if (err.type !== "ModuleNotFoundError" && !/No module named/.test(err.pythonMessage)) return undefined;
  return notImportable(python, err.pythonMessage);
}

interface Envelope {
  ok: boolean;
  value?: unknown;
  error?: PythonErrorInfo;
}

function parseEnvelope<S extends z.ZodType>(fn: string, raw: unknown, schema: S): z.output<S> {
  if (typeof raw !== "string")
    throw new ProtocolError(`oplora.quick.${fn}: expected a JSON string, got ${typeof raw}`);
  const envelope = JSON.parse(raw) as Envelope;
  if (!envelope.ok) {
    throw new PythonCallError(
      fn,
      envelope.error ?? { type: "Error", message: "unknown error", traceback: "" },
    );
  }
  const parsed = schema.safeParse(envelope.value);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
    throw new ProtocolError(`oplora.quick.${fn} returned an unexpected value: ${issues}`);
  }
  return parsed.data;
}

/** pythonia's PythonException has an empty message; its formatted `stack` ends with Python's `Type: message`. */
function fromPythonia(e: unknown): PythonErrorInfo {
  const err = e as Error;
  const stack = String(err?.stack ?? err);
  const match = /([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)):\s?(.*)$/m.exec(
    stack
      .split("\n")
      .reverse()
      .find((l) => /(Error|Exception)\b/.test(l)) ?? "",
  );
  return {
    type: match?.[1] ?? err?.name ?? "Error",
    message: match?.[2] ?? (err?.message || stack.split("\n")[0] || "unknown error"),
    traceback: stack,
  };
}

let shared: QuickBridge | undefined;
let sharedPython: string | undefined;

/** The process-wide bridge (one interpreter); a different `python` option replaces it. */
export function quickBridge(options: PythonOptions = {}): QuickBridge {
  const key = options.python ?? "";
  if (!shared || sharedPython !== key) {
    shared?.close();
    shared = new QuickBridge(options);
    sharedPython = key;
  }
  return shared;
}

/** Stop the quick lane's interpreter (Node also exits without this; it frees the memory sooner). */
export function closePython(): void {
  shared?.close();
}
