/**
 * Which Python interpreter runs oplora: option `python` > env `OPLORA_PYTHON` > `$OPLORA_VENV/bin/python`
 * (default venv: `<package root>/.venv`)
 * (built by `npm install` or `npx oplora setup`). Every child gets `<package root>/python` first on PYTHONPATH, so the Python
 * package that runs is the one shipped with this SDK, whatever the interpreter has installed.
 */
import { execFile } from "node:child_process";
import { accessSync, constants, existsSync, readFileSync } from "node:fs";
import { delimiter, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { PythonEnvironmentError } from "../errors.js";

let cachedRoot: string | undefined;

/** The folder holding oplora's package.json (works from sdk/ sources and from dist/). */
export function packageRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && JSON.parse(readFileSync(pkg, "utf8")).name === "oplora") {
      cachedRoot = dir;
      return dir;
    }
    const up = dirname(dir);
    if (up === dir)
      throw new Error(`oplora: cannot find the package root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export interface PythonOptions {
  /** Path to a Python interpreter (default: env OPLORA_PYTHON, then the package's .venv). */
  python?: string | undefined;
}

/** What every "environment missing" error suggests: builds (or rebuilds) the venv with visible progress. */
export const SETUP_FIX = "npx oplora setup";

/**
 * Where `npx oplora setup` (scripts/setup-python.mjs, same rule) builds the venv: env OPLORA_VENV (one venv
 * shared by several projects), else `<package root>/.venv`.
 */
export function venvDir(): string {
  return process.env.OPLORA_VENV ? resolve(process.env.OPLORA_VENV) : join(packageRoot(), ".venv");
}

/** The interpreter to run; throws PythonEnvironmentError when it does not exist or is not executable. */
export function resolvePython(options: PythonOptions = {}): string {
  const venv = join(venvDir(), process.platform === "win32" ? "Scripts/python.exe" : "bin/python");
  const [python, source] = options.python
    ? [options.python, "the `python` option"]
    : process.env.OPLORA_PYTHON
      ? [process.env.OPLORA_PYTHON, "env OPLORA_PYTHON"]
      : [venv, "the package's virtual environment"];
  if (!python.includes("/") && !python.includes("\\")) return python; // a bare name: found on PATH by spawn
  try {
    accessSync(python, constants.X_OK);
  } catch {
    const fix =
      source === "the package's virtual environment"
        ? SETUP_FIX
        : `point ${source} at an executable Python 3.10+ (pyproject.toml: requires-python >=3.10) with torch and peft installed`;
    throw new PythonEnvironmentError(
      `Python interpreter not found or not executable: ${python} (from ${source})`,
      python,
      fix,
    );
  }
  return python;
}

/** The environment for a Python child: `<root>/python` first on PYTHONPATH, unbuffered output. */
export function pythonEnv(
  extra: Record<string, string | undefined> = {},
): Record<string, string | undefined> {
  const own = join(packageRoot(), "python");
  const current = extra.PYTHONPATH ?? process.env.PYTHONPATH;
  return {
    ...process.env,
    ...extra,
    PYTHONPATH: current ? `${own}${delimiter}${current}` : own,
    PYTHONUNBUFFERED: "1",
  };
}

/** The PythonEnvironmentError for an interpreter that cannot import oplora (or its dependencies). */
export function notImportable(python: string, stderr: string): PythonEnvironmentError {
  const missing = /No module named '?([\w.]+)'?/.exec(stderr)?.[1];
  const what = missing ? `cannot import '${missing}'` : "cannot import oplora";
  const fix = python.startsWith(venvDir())
    ? SETUP_FIX
    : `${python} -m pip install -e ${packageRoot()}   (installs oplora and its dependencies into that interpreter)`;
  return new PythonEnvironmentError(`${python} ${what}`, python, fix);
}

const execFileP = promisify(execFile);

/**
 * `python -m <module> ...args` to completion (a short helper process, e.g. the report's figures and MF table);
 * rejects with its stderr when it exits non-zero. Returns its stdout.
 */
export async function runModule(
  module: string,
  args: string[],
  options: PythonOptions & { env?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<string> {
  const python = resolvePython(options);
  const { stdout } = await execFileP(python, ["-m", module, ...args], {
    env: pythonEnv(options.env) as NodeJS.ProcessEnv,
    maxBuffer: 16 * 1024 * 1024,
    timeout: options.timeoutMs ?? 300_000,
  });
  return stdout;
}
