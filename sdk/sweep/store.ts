/**
 * The run store: one sweep directory holding a run directory per trial, a manifest and a lock.
 *
 *     SWEEP/sweep.json          manifest: base, plan, trials (id, hash, axes, status, error)
 *     SWEEP/sweep.lock          {pid, hostname, started_at} while a sweep writes here
 *     SWEEP/runs/<id>/          a run directory (spec.json, events.ndjson, result.json), id = spec hash
 *     SWEEP/.trash/             failed attempts moved aside before a re-run, then deleted
 *
 * A trial whose result.json says `succeeded` for the same spec is reused; any other content of its
 * directory is moved aside and deleted before it runs again, so results of different specs never mix.
 */
import { randomBytes } from "node:crypto";
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { acquireDirLock } from "../lock.js";
import type { RunResult } from "../result.js";
import { readJsonIfValid, runDirProblem, writeFileAtomic } from "../run-dir.js";
import { sameJson } from "./canonical.js";
import { SweepLockedError } from "./errors.js";
import type { SweepPlan } from "./expand.js";

export const MANIFEST = "sweep.json";
export const LOCK = "sweep.lock";
export const RUNS = "runs";

/** `pruned`: a search trial the study's pruner stopped early (it ran fewer steps than the budget). */
export type TrialStatus = "pending" | "running" | "succeeded" | "failed" | "cancelled" | "pruned" | "not_run";

export interface ManifestTrial {
  index: number;
  id: string;
  hash: string;
  label: string;
  axes: Record<string, unknown>;
  /** Run directory, relative to the sweep directory. */
  dir: string;
  status: TrialStatus;
  /** True when a previous sweep's result was reused. */
  reused: boolean;
  error: { type: string; message: string } | null;
}

export interface SweepManifest {
  version: 1;
  created_at: string;
  updated_at: string;
  base: unknown;
  plan: SweepPlan & { search?: unknown };
  mode: "warm" | "cold";
  trials: ManifestTrial[];
}

export function trialDir(sweepDir: string, id: string): string {
  return join(sweepDir, RUNS, id);
}

export async function readManifest(sweepDir: string): Promise<SweepManifest | undefined> {
  return readJsonIfValid<SweepManifest>(join(sweepDir, MANIFEST));
}

/** Serialises manifest writes: the latest state always lands last. */
export class ManifestWriter {
  private chain: Promise<void> = Promise.resolve();
  constructor(
    private readonly sweepDir: string,
    readonly manifest: SweepManifest,
  ) {}

  save(): Promise<void> {
    const text = `${JSON.stringify({ ...this.manifest, updated_at: new Date().toISOString() }, null, 2)}\n`;
    this.chain = this.chain.then(() => writeFileAtomic(join(this.sweepDir, MANIFEST), text));
    return this.chain;
  }
}

/**
 * Take the sweep directory's lock (sdk/lock.ts), or throw `SweepLockedError` when a live process holds it.
 * Returns the function that releases it.
 */
export async function acquireLock(sweepDir: string): Promise<() => Promise<void>> {
  const release = acquireDirLock(sweepDir, LOCK, (h) => new SweepLockedError(sweepDir, h.pid, h));
  return async () => release();
}

/** A trial directory's reusable result: its result.json when it succeeded for exactly this spec. */
export async function reusableResult(dir: string, spec: unknown): Promise<RunResult | undefined> {
  const result = readJsonIfValid<RunResult>(join(dir, "result.json"));
  if (result?.status !== "succeeded" || runDirProblem(dir) !== null) return undefined; // corrupt: run again
  const recorded = readJsonIfValid(join(dir, "spec.json"));
  return recorded !== undefined && sameJson(recorded, spec) ? result : undefined;
}

/** Move a trial directory aside (atomic rename into .trash/) and delete it; a no-op when it is absent. */
export async function clearTrialDir(sweepDir: string, dir: string, id: string): Promise<void> {
  const trash = join(sweepDir, ".trash");
  await mkdir(trash, { recursive: true });
  const aside = join(trash, `${id}-${Date.now()}-${randomBytes(3).toString("hex")}`);
  try {
    await rename(dir, aside);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
    throw e;
  }
  await rm(aside, { recursive: true, force: true });
}
