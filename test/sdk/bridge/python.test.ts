import { chmodSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { notImportable, packageRoot, pythonEnv, resolvePython } from "../../../sdk/bridge/python.js";
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
