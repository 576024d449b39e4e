import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { execa } from "execa";
import { afterEach, describe, expect, it } from "vitest";
import { notImportable, packageRoot, pythonEnv, resolvePython, venvDir } from "../../../sdk/bridge/python.js";
import { PythonEnvironmentError } from "../../../sdk/errors.js";
import { FAKE_PYTHON, REPO } from "../helpers.js";

const saved = process.env.OPLORA_PYTHON;
afterEach(() => {
  if (saved === undefined) delete process.env.OPLORA_PYTHON;
  else process.env.OPLORA_PYTHON = saved;
});

function notExecutable(): string {
  const file = join(mkdtempSync(join(tmpdir(), "oplora-py-")), "python");
  writeFileSync(file, "#!/bin/sh\n");
  chmodSync(file, 0o644);
  return file;
}

describe("resolvePython", () => {
  it("option > env OPLORA_PYTHON > the package's .venv", () => {
    process.env.OPLORA_PYTHON = FAKE_PYTHON;
    expect(resolvePython({ python: process.execPath })).toBe(process.execPath);
    expect(resolvePython()).toBe(FAKE_PYTHON);
    delete process.env.OPLORA_PYTHON;
    expect(resolvePython()).toBe(join(REPO, ".venv", "bin", "python"));
  });

  it("a bare name is left for PATH lookup", () => {
    expect(resolvePython({ python: "python3" })).toBe("python3");
  });

  it("a missing or non-executable interpreter -> PythonEnvironmentError naming its source", () => {
    process.env.OPLORA_PYTHON = notExecutable();
    const err = (() => {
      try {
        resolvePython();
      } catch (e) {
        return e;
      }
    })() as PythonEnvironmentError;
    expect(err).toBeInstanceOf(PythonEnvironmentError);
    expect(err.message).toContain("env OPLORA_PYTHON");
    expect(() => resolvePython({ python: "/nowhere/python" })).toThrow(/the `python` option/);
  });

  it("OPLORA_VENV moves the venv; a missing one says to run npx oplora setup", () => {
    delete process.env.OPLORA_PYTHON;
    const shared = join(mkdtempSync(join(tmpdir(), "oplora-venv-")), "venv");
    process.env.OPLORA_VENV = shared;
    try {
      expect(venvDir()).toBe(shared);
      const err = (() => {
        try {
          resolvePython();
        } catch (e) {
          return e;
        }
      })() as PythonEnvironmentError;
      expect(err).toBeInstanceOf(PythonEnvironmentError);
      expect(err.python).toBe(join(shared, "bin", "python"));
      expect(err.fix).toBe("npx oplora setup");
      expect(notImportable(join(shared, "bin", "python"), "No module named 'peft'").fix).toBe(
        "npx oplora setup",
      );
    } finally {
      delete process.env.OPLORA_VENV;
    }
    expect(venvDir()).toBe(join(REPO, ".venv"));
  });
});

describe("oplora setup", () => {
  const cli = (args: string[], env: Record<string, string>) =>
    execa("node", ["--import", "tsx", join(REPO, "sdk", "cli", "main.ts"), "setup", ...args], {
      reject: false,
      env: { ...env, npm_lifecycle_event: undefined },
      all: true,
    });

  it("with OPLORA_PYTHON builds nothing and checks that interpreter, visibly", async () => {
    const r = await cli([], { OPLORA_PYTHON: join(REPO, ".venv", "bin", "python") });
    expect(r.exitCode, r.all).toBe(0);
    expect(r.all).toMatch(/OPLORA_PYTHON=.*: using it, not building a venv/);
    expect(r.all).not.toMatch(/warning/);
  }, 60_000);

  it("on an up-to-date venv returns at once, naming where it lives", async () => {
    const r = await cli([], { OPLORA_VENV: join(REPO, ".venv") });
    expect(r.exitCode, r.all).toBe(0);
    expect(r.all).toContain(`oplora setup: environment at ${join(REPO, ".venv")}`);
    expect(r.all).toMatch(/is up to date|done:/);
  }, 600_000);
});

describe("pythonEnv / notImportable", () => {
  it("puts the package's python/ first on PYTHONPATH and keeps the caller's after it", () => {
    const env = pythonEnv({ PYTHONPATH: "/extra", FOO: "1" });
    expect(env.PYTHONPATH).toBe(`${join(packageRoot(), "python")}${delimiter}/extra`);
    expect(env.FOO).toBe("1");
    expect(env.PYTHONUNBUFFERED).toBe("1");
  });

  it("names the module that could not be imported", () => {
    const err = notImportable("/usr/bin/python3", "ModuleNotFoundError: No module named 'torch'");
    expect(err.message.split("\n")[0]).toBe("/usr/bin/python3 cannot import 'torch'");
    expect(err.message).toContain("-m pip install -e");
  });
});
