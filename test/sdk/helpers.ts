import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import type { SpecInput } from "../../sdk/spec/index.js";
import { expandSweep, type SweepPlan, type Trial } from "../../sdk/sweep/expand.js";
import {
  LOCK,
  MANIFEST,
  type ManifestTrial,
  type SweepManifest,
  type TrialStatus,
} from "../../sdk/sweep/store.js";

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

/**
 * A sweep store written by hand, nothing run: `dir/sweep.json` lists `expandSweep(base, plan)`'s trials with
 * `statuses` (by index; `not_run` past the list), and with `live` a sweep.lock this process holds.
 */
/** The manifest entry the sweep store writes for trial `t` (its folder runs/<id>). */
export function manifestTrial(t: Trial, status: TrialStatus): ManifestTrial {
  return {
    index: t.index,
    id: t.id,
    hash: t.hash,
    label: t.label,
    axes: t.axes,
    dir: `runs/${t.id}`,
    status,
    reused: false,
    error: null,
  };
}

export function writeSweepManifest(
  dir: string,
  base: SpecInput,
  plan: SweepPlan,
  statuses: TrialStatus[],
  live = false,
): Trial[] {
  const trials = expandSweep(base, plan);
  const manifest: SweepManifest = {
    version: 1,
    created_at: new Date().toISOString(),
    updated_at: new Date().toISOString(),
    base,
    plan,
    mode: "warm",
    trials: trials.map((t) => manifestTrial(t, statuses[t.index] ?? "not_run")),
  };
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, MANIFEST), JSON.stringify(manifest));
  if (live) {
    const holder = { pid: process.pid, hostname: hostname(), started_at: new Date().toISOString() };
    writeFileSync(join(dir, LOCK), JSON.stringify(holder));
  }
  return trials;
}
