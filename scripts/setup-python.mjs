#!/usr/bin/env node
// Sets up the Python side of oplora: run by `npm install` (postinstall) and by `npx oplora setup`
// (the same, with visible progress; `--force` rebuilds even when nothing changed).
//
// - OPLORA_PYTHON set: use that interpreter as it is (no venv is built; we only report what it lacks).
// - otherwise: build a venv at OPLORA_VENV (default: `.venv/` in the package), install torch==2.13.0 only
//   when the venv has no torch yet (an unpinned torch pulls a multi-GB CUDA build on CPU machines; a torch
//   already present is kept), then oplora itself:
//     in a checkout of this repository   `pip install -e .[dev,ray,tracking]` (editable, with the test tools)
//     as a dependency (under node_modules) `pip install .[EXTRAS]`, EXTRAS = env OPLORA_EXTRAS (default none;
//                                          e.g. OPLORA_EXTRAS=ray,tracking), no dev tools, not editable
// A hash of pyproject.toml, this script and the choices above is stored in the venv, so a second run with
// nothing changed returns at once.
import { execFileSync, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
// The same rule as sdk/bridge/python.ts `venvDir()`: OPLORA_VENV, else the package's own .venv.
const venv = process.env.OPLORA_VENV ? resolve(process.env.OPLORA_VENV) : join(root, ".venv");
const force = process.argv.includes("--force");
const consumer = root.split(sep).includes("node_modules");
const extras = consumer ? (process.env.OPLORA_EXTRAS ?? "") : "dev,ray,tracking";
const target = `${root}${extras ? `[${extras}]` : ""}`;
const venvPython = join(venv, process.platform === "win32" ? "Scripts/python.exe" : "bin/python");
const stamp = join(venv, ".oplora-setup");
const TORCH = process.env.OPLORA_TORCH_SPEC ?? "torch==2.13.0";

function log(msg) {
  console.log(`[oplora setup] ${msg}`);
}

function run(cmd, args) {
  log(`${cmd} ${args.join(" ")}`);
  const r = spawnSync(cmd, args, { stdio: "inherit", cwd: root });
  if (r.status !== 0) {
    console.error(`[oplora setup] failed: ${cmd} ${args.join(" ")} (exit ${r.status})`);
    process.exit(r.status ?? 1);
  }
}

if (process.env.OPLORA_SKIP_PYTHON_SETUP === "1") {
  log("OPLORA_SKIP_PYTHON_SETUP=1: skipping the Python set-up");
  process.exit(0);
}

if (process.env.OPLORA_PYTHON) {
  const py = process.env.OPLORA_PYTHON;
  log(`OPLORA_PYTHON=${py}: using it, not building a venv`);
  const r = spawnSync(py, ["-c", "import oplora, torch, peft; print(oplora.__file__)"], { encoding: "utf8" });
  if (r.status !== 0) {
    log(`warning: ${py} cannot import oplora/torch/peft yet; install with: ${py} -m pip install -e ${root}`);
  }
  process.exit(0);
}

const hash = createHash("sha256")
  .update(readFileSync(join(root, "pyproject.toml")))
  .update(readFileSync(fileURLToPath(import.meta.url)))
  .update(TORCH)
  .update(target)
  .digest("hex");

if (!force && existsSync(stamp) && readFileSync(stamp, "utf8").trim() === hash && existsSync(venvPython)) {
  log(`${venv} is up to date`);
  process.exit(0);
}

if (!existsSync(venvPython)) {
  const base = process.env.PYTHON ?? "python3";
  run(base, ["-m", "venv", venv]);
}

const hasTorch = spawnSync(venvPython, ["-c", "import torch"], { stdio: "ignore" }).status === 0;
if (!hasTorch) {
  run(venvPython, ["-m", "pip", "install", "--disable-pip-version-check", TORCH]);
} else {
  const v = execFileSync(venvPython, ["-c", "import torch; print(torch.__version__)"], { encoding: "utf8" });
  log(`keeping the torch already installed (${v.trim()})`);
}
const editable = consumer ? [] : ["-e"];
run(venvPython, ["-m", "pip", "install", "--disable-pip-version-check", ...editable, target]);
writeFileSync(stamp, `${hash}\n`);
log(`done: ${venv}`);
