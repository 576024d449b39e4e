/**
 * One writer per directory: a lock file `{pid, hostname, started_at}` created exclusively (O_EXCL) and
 * removed on release. A lock whose process is gone (same host, pid not alive) is stale and taken over, so
 * a crashed writer never blocks the next one. Sweeps lock their store (sweep.lock), runs their run
 * directory (run.lock, taken by Python: python/oplora/run/lock.py reads and writes the same format).
 */
import { randomBytes } from "node:crypto";
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";

export interface LockHolder {
  pid: number;
  hostname: string;
  started_at: string;
}

/**
 * The env var naming the sweep (its lock's "pid@host") that started a trial: Python lets a run into a store
 * only when the store's live sweep.lock is that sweep's (python/oplora/run/lock.py).
 */
export const SWEEP_HOLDER_ENV = "OPLORA_SWEEP_HOLDER";

/** This process as a lock holder names itself in SWEEP_HOLDER_ENV. */
export function holderToken(): string {
  return `${process.pid}@${hostname()}`;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readHolder(path: string): Partial<LockHolder> | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Partial<LockHolder>;
  } catch {
    return undefined;
  }
}

/** The live holder of `dir/file`, or undefined when there is none (no file, or a stale one). */
export function liveHolder(dir: string, file: string): LockHolder | undefined {
  const h = readHolder(join(dir, file));
  if (typeof h?.pid !== "number") return undefined;
  const otherHost = h.hostname !== undefined && h.hostname !== hostname();
  if (!otherHost && !alive(h.pid)) return undefined;
  return { pid: h.pid, hostname: h.hostname ?? "?", started_at: h.started_at ?? "?" };
}

/**
 * Take `dir/file`, or throw what `held(holder)` makes when a live process holds it (another host's lock is
 * always live: its pid cannot be checked from here). Returns the function that releases it.
 */
export function acquireDirLock(dir: string, file: string, held: (holder: LockHolder) => Error): () => void {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, file);
  const mine: LockHolder = { pid: process.pid, hostname: hostname(), started_at: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(path, "wx");
      writeSync(fd, `${JSON.stringify(mine)}\n`);
      closeSync(fd);
      return () => {
        if (readHolder(path)?.pid === process.pid) rmSync(path, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    }
    const h = readHolder(path);
    const pid = typeof h?.pid === "number" ? h.pid : undefined;
    const otherHost = h?.hostname !== undefined && h.hostname !== mine.hostname;
    if (pid !== undefined && (otherHost || alive(pid)))
      throw held({ pid, hostname: h?.hostname ?? "?", started_at: h?.started_at ?? "?" });
    // stale (dead owner, or a lock file we cannot read): move it aside atomically, then try again
    const stale = `${path}.stale.${randomBytes(4).toString("hex")}`;
    try {
      renameSync(path, stale);
      rmSync(stale, { force: true });
    } catch {
      // another process took it over first: try again
    }
  }
  throw held({ pid: -1, hostname: "?", started_at: "?" });
}
