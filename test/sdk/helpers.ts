import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const FIXTURES = join(import.meta.dirname, "fixtures");
export const FAKE_PYTHON = join(FIXTURES, "fake-python");
export const REPO = join(import.meta.dirname, "..", "..");
export const VENV_PYTHON = join(REPO, ".venv", "bin", "python");

/** A fresh temporary folder; the run dir inside it does not exist yet. */
export function tempRunDir(name = "run"): string {
  return join(mkdtempSync(join(tmpdir(), "oplora-test-")), name);
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export async function waitUntil(cond: () => boolean, timeoutMs: number, stepMs = 50): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, stepMs));
  }
  return cond();
}
