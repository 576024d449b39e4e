import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import {
  CancelledError,
  InputError,
  ProcessCrashedError,
  PythonEnvironmentError,
  RunLockedError,
  SpecInvalidError,
  TrainingFailedError,
} from "../../../sdk/errors.js";
import type { RunEvent } from "../../../sdk/events.js";
import { run } from "../../../sdk/run.js";
import { readEvents, readResult } from "../../../sdk/run-dir.js";
import { FAKE_PYTHON, FIXTURES, isAlive, tempRunDir, waitUntil } from "../helpers.js";

const SPEC = { task: "matrix_factorization", device: "cpu" } as const;
const fake = (mode: string, extra: Record<string, unknown> = {}) => ({
  outDir: tempRunDir(),
  python: FAKE_PYTHON,
  env: { FAKE_MODE: mode },
  ...extra,
});

describe("job lane (fake task, real runner)", () => {
  it("succeeds: typed events, then the typed result; events.ndjson matches", async () => {
    const opts = fake("ok");
    const handle = run(SPEC, opts);
    const seen: RunEvent["type"][] = [];
    for await (const ev of handle) seen.push(ev.type);
    const result = await handle;
    expect(seen).toEqual(["started", "step", "artifact", "step", "completed"]);
    expect(result.status).toBe("succeeded");
    if (result.task !== "matrix_factorization") throw new Error("narrowing");
    expect(result.metrics?.steps_to_excess).toEqual({ "1e-2": null });
    expect(result.artifacts).toEqual([{ kind: "table", path: "table.md" }]);
    expect(readEvents(opts.outDir).map((e) => e.type)).toEqual(seen);
    expect(isAlive(handle.pid as number)).toBe(false);
  });

  it("Python raising -> TrainingFailedError with type, message, traceback; result.json failed", async () => {
    const opts = fake("raise");
    const err = await run(SPEC, opts)
      .result()
      .catch((e) => e);
    expect(err).toBeInstanceOf(TrainingFailedError);
    expect(err.type).toBe("ValueError");
    expect(err.pythonMessage).toBe("boom from the fake task");
    expect(err.traceback).toContain("Traceback (most recent call last)");
    expect(err.traceback).toContain("fake_task.py");
    expect(readResult(opts.outDir)?.status).toBe("failed");
  });

  it("InputError from the task -> InputError (exit 2)", async () => {
    const err = await run(SPEC, fake("input_error"))
      .result()
      .catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain("data.folder: /nowhere does not exist");
  });

  it("Python killed mid-run -> ProcessCrashedError; the SDK writes result.json; no orphan", async () => {
    const opts = fake("sigkill");
    const handle = run(SPEC, opts);
    const err = await handle.result().catch((e) => e);
    expect(err).toBeInstanceOf(ProcessCrashedError);
    expect(err.signal).toBe("SIGKILL");
    const result = readResult(opts.outDir);
    expect(result?.status).toBe("failed");
    expect(result?.error?.type).toBe("ProcessCrashed");
    expect((result as Record<string, unknown>).written_by).toBe("sdk");
    expect(readdirSync(opts.outDir).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(isAlive(handle.pid as number)).toBe(false);
  });

  it("cancel via AbortSignal -> CancelledError (also from the iterator), result.json cancelled, process gone", async () => {
    const controller = new AbortController();
    const opts = fake("slow", { signal: controller.signal });
    const handle = run(SPEC, opts);
    const iterate = async () => {
      for await (const ev of handle) if (ev.type === "step" && ev.step >= 3) controller.abort();
    };
    await expect(iterate()).rejects.toBeInstanceOf(CancelledError);
    await expect(handle.result()).rejects.toBeInstanceOf(CancelledError);
    expect(readResult(opts.outDir)?.status).toBe("cancelled");
    expect(isAlive(handle.pid as number)).toBe(false);
  }, 30_000);

  it("a second writer on a running run's dir is refused (RunLockedError naming Python's pid); lock released after", async () => {
    const opts = fake("slow");
    const first = run(SPEC, opts);
    const iterate = async () => {
      for await (const ev of first) if (ev.type === "step" && ev.step >= 2) break;
    };
    const lock = join(opts.outDir, "run.lock");
    const events = join(opts.outDir, "events.ndjson");
    const stepped = () =>
      existsSync(lock) && existsSync(events) && readFileSync(events, "utf8").includes('"step"');
    expect(await waitUntil(stepped, 20_000)).toBe(true);
    const holder = JSON.parse(readFileSync(lock, "utf8")) as { pid: number };
    expect(holder.pid).toBe(first.pid);
    const before = readdirSync(opts.outDir).map((f) => [f, readFileSync(join(opts.outDir, f), "utf8")]);
    const second = () => run(SPEC, { ...opts, resume: true });
    expect(second).toThrow(RunLockedError);
    expect(second).toThrow(new RegExp(`in use by another run \\(pid ${first.pid} on \\S+ since `));
    expect(second).toThrow(InputError);
    expect(readdirSync(opts.outDir).filter((f) => f !== "events.ndjson")).toEqual(
      before.map(([f]) => f as string).filter((f) => f !== "events.ndjson"),
    );
    await iterate();
    await expect(first.result()).rejects.toBeInstanceOf(CancelledError);
    expect(existsSync(lock)).toBe(false);
  });

  it("break in for-await cancels; result.json cancelled; pid dead", async () => {
    const opts = fake("slow");
    const handle = run(SPEC, opts);
    for await (const ev of handle) if (ev.type === "step" && ev.step >= 2) break;
    expect(isAlive(handle.pid as number)).toBe(false);
    await expect(handle.result()).rejects.toBeInstanceOf(CancelledError);
    expect(readResult(opts.outDir)?.status).toBe("cancelled");
    expect(handle.events.at(-1)?.type).toBe("cancelled");
  });

  it("a process ignoring SIGTERM is SIGKILLed after the grace; the SDK writes result.json cancelled", async () => {
    const opts = fake("ignore_term", { killGraceMs: 500 });
    const handle = run(SPEC, opts);
    const iterate = async () => {
      for await (const ev of handle) if (ev.type === "step" && ev.step >= 2) void handle.cancel();
    };
    await expect(iterate()).rejects.toBeInstanceOf(CancelledError);
    await expect(handle.result()).rejects.toBeInstanceOf(CancelledError);
    const result = readResult(opts.outDir);
    expect(result?.status).toBe("cancelled");
    expect((result as Record<string, unknown>).written_by).toBe("sdk");
    expect(isAlive(handle.pid as number)).toBe(false);
  });

  it("chatty stdout/stderr never blocks the run nor mixes with events", async () => {
    let stderrBytes = 0;
    const handle = run(SPEC, { ...fake("chatter"), onStderr: (c) => (stderrBytes += c.length) });
    const result = await handle;
    expect(result.status).toBe("succeeded");
    expect(stderrBytes).toBeGreaterThan(2_000_000);
    expect(handle.events.map((e) => e.type)).toEqual(["started", "step", "artifact", "step", "completed"]);
  });

  it("invalid spec -> SpecInvalidError thrown synchronously, nothing spawned, no run dir", () => {
    const outDir = tempRunDir();
    expect(() => run({ task: "matrix_factorization", adapter: { kind: "lora", r: -1 } }, { outDir })).toThrow(
      SpecInvalidError,
    );
    expect(existsSync(outDir)).toBe(false);
  });

  it("a non-empty out dir is refused by Python -> InputError, nothing written", async () => {
    const opts = fake("ok");
    await run(SPEC, opts);
    const before = readFileSync(join(opts.outDir, "result.json"), "utf8");
    const err = await run(SPEC, { ...opts })
      .result()
      .catch((e) => e);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain("not empty");
    expect(readFileSync(join(opts.outDir, "result.json"), "utf8")).toBe(before);
  });

  it("missing interpreter -> PythonEnvironmentError at once; oplora not importable -> PythonEnvironmentError", async () => {
    expect(() => run(SPEC, { outDir: tempRunDir(), python: "/nonexistent/python" })).toThrow(
      PythonEnvironmentError,
    );
    const outDir = tempRunDir();
    const err = await run(SPEC, { outDir, python: join(FIXTURES, "no-oplora-python") })
      .result()
      .catch((e) => e);
    expect(err).toBeInstanceOf(PythonEnvironmentError);
    expect(err.message).toMatch(/cannot import 'oplora'/);
    expect(err.fix).toContain("pip install");
    expect(existsSync(outDir)).toBe(false);
  });

  it("Node killed: the Python child exits on its own (stdin watchdog)", async () => {
    const outDir = tempRunDir();
    const child = execa("node", ["--import", "tsx", join(FIXTURES, "node-run.ts"), outDir, FAKE_PYTHON], {
      buffer: false,
      reject: false,
    });
    const pid = await new Promise<number>((resolve, reject) => {
      child.stdout?.setEncoding("utf8").on("data", (line: string) => resolve(JSON.parse(line).pid));
      child.on("exit", () => reject(new Error("node-run exited early")));
    });
    expect(isAlive(pid)).toBe(true);
    child.kill("SIGKILL");
    await child;
    expect(await waitUntil(() => !isAlive(pid), 8_000)).toBe(true);
    expect(readResult(outDir)?.status).toBe("cancelled");
  }, 60_000);
});
