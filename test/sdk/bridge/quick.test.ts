import { chmodSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { QuickBridge } from "../../../sdk/bridge/quick.js";
import { ProtocolError, PythonCallError, PythonEnvironmentError } from "../../../sdk/errors.js";
import { FIXTURES, VENV_PYTHON } from "../helpers.js";

const bridge = new QuickBridge();
afterAll(() => bridge.close());

describe("quick lane (pythonia)", () => {
  it("round-trips JSON and validates the value", async () => {
    const value = await bridge.call(
      "echo",
      { a: 1, b: ["x"] },
      z.object({ a: z.number(), b: z.array(z.string()) }),
    );
    expect(value).toEqual({ a: 1, b: ["x"] });
    await expect(bridge.call("echo", { a: "no" }, z.object({ a: z.number() }))).rejects.toBeInstanceOf(
      ProtocolError,
    );
  });

  it("a Python exception -> PythonCallError with type, message and traceback", async () => {
    const call = bridge.call("read_adapter", { dir: "/no/such/adapter" }, z.unknown());
    const err = (await call.catch((e: unknown) => e)) as PythonCallError;
    expect(err).toBeInstanceOf(PythonCallError);
    expect(err.type).toBe("FileNotFoundError");
    expect(err.pythonMessage).toContain("/no/such/adapter");
    expect(err.traceback).toContain("Traceback (most recent call last)");
  });

  it("the interpreter killed mid-call fails the call promptly; the next call starts a new one", async () => {
    const pid = await bridge.call("pid", {}, z.int());
    const call = bridge.call("sleep", { seconds: 60 }, z.number());
    setTimeout(() => process.kill(pid, "SIGKILL"), 300);
    const t0 = Date.now();
    const err = await call.catch((e) => e);
    expect(err).toBeInstanceOf(PythonCallError);
    expect(err.type).toBe("InterpreterDied");
    expect(Date.now() - t0).toBeLessThan(3_000);
    const pid2 = await bridge.call("pid", {}, z.int());
    expect(pid2).not.toBe(pid);
  });

  it("a per-call timeout stops a hung call and the interpreter", async () => {
    const err = await bridge.call("sleep", { seconds: 30 }, z.number(), { timeoutMs: 300 }).catch((e) => e);
    expect(err).toBeInstanceOf(PythonCallError);
    expect(err.type).toBe("Timeout");
    expect(await bridge.call("echo", { ok: true }, z.object({ ok: z.boolean() }))).toEqual({ ok: true });
  });

  it("a missing interpreter -> PythonEnvironmentError (Node does not crash)", async () => {
    const bad = new QuickBridge({ python: "/nonexistent/python3" });
    await expect(bad.call("pid", {}, z.int())).rejects.toBeInstanceOf(PythonEnvironmentError);
  });

  it("a module missing on the Python side -> PythonEnvironmentError naming it and the fix", async () => {
    // an interpreter whose safetensors is not importable (read_adapter imports it to open its first file)
    const dir = mkdtempSync(join(tmpdir(), "oplora-nomodule-"));
    writeFileSync(join(dir, "adapter_model.safetensors"), "");
    mkdirSync(join(dir, "stub", "safetensors"), { recursive: true });
    writeFileSync(
      join(dir, "stub", "safetensors", "__init__.py"),
      'raise ModuleNotFoundError("No module named \'safetensors\'", name="safetensors")\n',
    );
    const python = join(dir, "python3");
    writeFileSync(
      python,
      `#!/bin/sh\nPYTHONPATH="${join(dir, "stub")}:$PYTHONPATH" exec ${VENV_PYTHON} "$@"\n`,
    );
    chmodSync(python, 0o755);
    bridge.close(); // pythonia runs one interpreter per Node process: the stubbed one must start fresh
    const stub = new QuickBridge({ python });
    try {
      const err = (await stub
        .call("read_adapter", { dir }, z.unknown())
        .catch((e) => e)) as PythonEnvironmentError;
      expect(err).toBeInstanceOf(PythonEnvironmentError);
      expect(err.message).toMatch(/cannot import 'safetensors'/);
      expect(err.fix).toMatch(/pip install|oplora setup/);
      // the interpreter itself is fine: calls that need no missing module still answer
      expect(await stub.call("echo", { ok: true }, z.object({ ok: z.boolean() }))).toEqual({ ok: true });
    } finally {
      stub.close();
    }
  });

  it("Node exits on its own after quick calls (with and without closePython)", async () => {
    for (const close of ["", "close"]) {
      const t0 = Date.now();
      const r = await execa("node", ["--import", "tsx", join(FIXTURES, "quick-exit.ts"), close], {
        timeout: 30_000,
      });
      expect(r.stdout.trim()).toMatch(/^pid \d+$/);
      expect(Date.now() - t0).toBeLessThan(25_000);
    }
  }, 60_000);
});
