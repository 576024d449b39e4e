/**
 * Sweeps on the Ray backend against a real two-node cluster on 127.0.0.1 (test/python/run/ray_cluster.py:
 * one CPU per node, separate temp dirs, torn down by process group). The node-kill test runs last: it
 * leaves the cluster with one node.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { execa } from "execa";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { SpecInput } from "../../../sdk/spec/index.js";
import { RayBackendError } from "../../../sdk/sweep/ray.js";
import { readManifest } from "../../../sdk/sweep/store.js";
import { type SweepEvent, type SweepResults, sweep } from "../../../sdk/sweep/sweep.js";
import { isAlive, REPO, VENV_PYTHON, waitUntil } from "../helpers.js";

const BASE: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 16, cols: 16 },
  adapter: { kind: "op-lora", r: 2, generator: { embedding_dim: 8, hidden_dim: 8 } },
  train: { steps: 40, log_every: 10 },
};
const AXES = { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [0.01, 0.02, 0.05] } as const;

interface Cluster {
  proc: ChildProcess;
  address: string;
  pgids: number[];
  raylets: number[];
}

let cluster: Cluster;

function parentOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return null;
  }
}

function tmp(name: string): string {
  return join(mkdtempSync(join(tmpdir(), "oplora-ray-")), name);
}

function startedPids(events: readonly SweepEvent[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const e of events)
    if (e.type === "trial_progress" && e.event.type === "started") out.set(e.trial.id, e.event.pid);
  return out;
}

function nodeOf(runDir: string): string {
  return (JSON.parse(readFileSync(join(runDir, "ray.json"), "utf8")) as { node_id: string }).node_id;
}

// wall time and peak memory are per process, not results
const metricsOf = (r: SweepResults) =>
  Object.fromEntries(
    r.rows.map((row) => [row.label, { ...row.metrics, wall_s: undefined, peak_memory_bytes: undefined }]),
  );

beforeAll(async () => {
  const proc = spawn(VENV_PYTHON, [join(REPO, "test/python/run/ray_cluster.py")], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: proc.stdout as NodeJS.ReadableStream }).once("line", resolve);
    proc.once("exit", (code) => reject(new Error(`the test cluster did not start (exit ${code})`)));
  });
  cluster = { proc, ...(JSON.parse(line) as Omit<Cluster, "proc">) };
}, 120_000);

afterAll(async () => {
  cluster.proc.stdin?.end();
  await new Promise((r) => cluster.proc.once("exit", r));
  for (const g of cluster.pgids) expect(isAlive(-g) || isAlive(g)).toBe(false);
}, 60_000);

describe("sweep on a Ray cluster", () => {
  it("runs a 6-trial sweep on both nodes with the local backend's metrics", async () => {
    const handle = sweep(BASE, {
      axes: AXES,
      outDir: tmp("ray"),
      backend: { kind: "ray", address: cluster.address },
    });
    const ray = await handle;
    // every trial's step events streamed through the sweep's event stream while it ran
    const stepped = new Set(
      handle.events
        .filter((e) => e.type === "trial_progress" && e.event.type === "step")
        .map((e) => (e as { trial: { id: string } }).trial.id),
    );
    expect(stepped.size).toBe(6);
    expect(ray.counts).toEqual({ succeeded: 6, failed: 0, cancelled: 0, pruned: 0, not_run: 0 });
    const local = await sweep(BASE, { axes: AXES, outDir: tmp("local"), concurrency: 2 });
    expect(local.counts.succeeded).toBe(6);
    expect(metricsOf(ray)).toEqual(metricsOf(local));
    expect(new Set(ray.rows.map((r) => nodeOf(r.runDir))).size).toBe(2);
    for (const r of ray.rows)
      expect(readdirSync(r.runDir)).toEqual(expect.arrayContaining(["adapter", "result.json"]));
  }, 240_000);

  it("cancel mid-sweep kills the running tasks, keeps finished trials; a re-run completes the rest", async () => {
    const outDir = tmp("cancel");
    const backend = { kind: "ray" as const, address: cluster.address };
    const slow = { ...BASE, train: { steps: 3000, log_every: 100 } };
    const handle = sweep(slow, { axes: AXES, outDir, backend });
    let finished = 0;
    for await (const ev of handle) {
      if (ev.type === "trial_finished" && ++finished === 1) break; // break cancels the sweep
    }
    const first = await handle;
    expect(first.stopped).toBe(true);
    expect(first.counts.succeeded).toBeGreaterThanOrEqual(1);
    expect(first.counts.succeeded).toBeLessThan(6);
    const pids = startedPids(handle.events);
    const cancelled = first.rows.filter((r) => r.status === "cancelled").map((r) => pids.get(r.id));
    for (const pid of cancelled)
      if (pid !== undefined) expect(await waitUntil(() => !isAlive(pid), 10_000)).toBe(true);
    for (const r of first.rows.filter((r) => r.status !== "succeeded"))
      expect(() => readdirSync(r.runDir)).toThrow(); // never half a trial in the store
    const again = await sweep(slow, { axes: AXES, outDir, backend });
    expect(again.counts.succeeded).toBe(6);
    expect(again.rows.filter((r) => r.reused).length).toBe(first.counts.succeeded);
  }, 300_000);

  it("a search (two arms x 5 trials, median pruner) gives studies of the same size as on the local backend", async () => {
    const search = {
      space: { "optimizer.lr": { low: 1e-3, high: 1, log: true } },
      trials: 5,
      sampler: "tpe" as const,
      pruner: "median" as const,
      objective: "final_loss",
      startupTrials: 2,
      confirmSeeds: [1],
      seed: 0,
    };
    const axes = { "adapter.kind": ["lora", "op-lora"] } as const;
    const backend = { kind: "ray" as const, address: cluster.address };
    const ray = await sweep(BASE, { axes, outDir: tmp("search-ray"), backend, search });
    const local = await sweep(BASE, { axes, outDir: tmp("search-local"), concurrency: 2, search });
    for (const r of [ray, local]) {
      const studies = r.search?.studies ?? [];
      expect(studies.map((s) => s.name).sort()).toEqual(["adapter.kind=lora", "adapter.kind=op-lora"]);
      for (const s of studies) {
        expect(s.trials).toHaveLength(5);
        for (const t of s.trials) expect(["complete", "pruned"]).toContain(t.state);
        expect(s.best?.objective).toBeLessThan(1);
      }
      expect(r.search?.confirmations).toHaveLength(2);
    }
    // the Ray trials really ran on the cluster (each run dir carries the node it ran on)
    const ran = ray.rows.filter((r) => r.status === "succeeded");
    expect(ran.length).toBeGreaterThan(0);
    for (const r of ran) expect(nodeOf(r.runDir)).toMatch(/\w+/);
  }, 300_000);

  it("refuses a trial asking for more GPUs than any node has, before anything is submitted", async () => {
    const outDir = tmp("gpu");
    const p = sweep(
      { ...BASE, device: "cuda" },
      {
        axes: { "optimizer.lr": [0.01] },
        outDir,
        backend: { kind: "ray", address: cluster.address },
      },
    );
    await expect(p).rejects.toThrow(RayBackendError);
    await expect(p).rejects.toThrow(/asks 1 CPU, 1 GPU.*largest node: 1 CPU, 0 GPU.*nothing was submitted/s);
    expect(() => readdirSync(join(outDir, "runs"))).toThrow(); // no trial directory was ever made
  }, 60_000);

  it("says how to install ray when the Python side lacks it; unknown backend keys are refused", async () => {
    const fake = mkdtempSync(join(tmpdir(), "oplora-noray-"));
    mkdirSync(join(fake, "ray"));
    writeFileSync(join(fake, "ray", "__init__.py"), "raise ImportError('No module named ray')\n");
    const p = sweep(BASE, {
      outDir: tmp("noray"),
      env: { PYTHONPATH: fake },
      backend: { kind: "ray", address: cluster.address },
    });
    await expect(p).rejects.toThrow(/pip install 'oplora\[ray\]'/);
    expect(() =>
      sweep(BASE, {
        outDir: tmp("bad"),
        backend: { kind: "ray", address: "x", retries: 3 } as never,
      }),
    ).toThrow(/backend: .*retries/);
  }, 60_000);

  it("the CLI: doctor --ray lists both nodes with matching versions; sweep --backend ray runs the file", async () => {
    const cli = (args: string[], env: Record<string, string | undefined> = {}) =>
      execa("node", ["--import", "tsx", join(REPO, "sdk", "cli", "main.ts"), ...args], {
        reject: false,
        cwd: REPO,
        env: { ...env, RAY_ADDRESS: env.RAY_ADDRESS },
      });
    const doc = await cli(["doctor", "--ray", cluster.address, "--json"]);
    expect(doc.exitCode, doc.stderr).toBe(0);
    const report = JSON.parse(doc.stdout) as { ok: boolean; nodes: { cpus: number; mismatch: object }[] };
    expect(report.ok).toBe(true);
    expect(report.nodes.map((n) => [n.cpus, n.mismatch])).toEqual([
      [1, {}],
      [1, {}],
    ]);
    const text = await cli(["doctor", "--ray", cluster.address]);
    expect(text.stdout).toMatch(/2 node\(s\)[\s\S]*same versions as the driver[\s\S]*same versions/);
    const unreachable = await cli(["doctor", "--ray", "127.0.0.1:1"]);
    expect(unreachable.exitCode).toBe(2);
    expect(unreachable.stderr).toMatch(/^oplora: cannot connect to the Ray cluster at 127\.0\.0\.1:1/);

    const file = join(mkdtempSync(join(tmpdir(), "oplora-ray-cli-")), "sweep.json");
    writeFileSync(file, JSON.stringify({ base: BASE, axes: { "adapter.kind": ["lora", "op-lora"] } }));
    const outDir = tmp("cli");
    const noAddress = await cli(["sweep", file, "--out", outDir, "--backend", "ray"]);
    expect(noAddress.exitCode).toBe(2);
    expect(noAddress.stderr).toMatch(/--backend ray: needs --ray-address/);
    const r = await cli(["sweep", file, "--out", outDir, "--ray-address", cluster.address, "--no-report"]);
    expect(r.exitCode, r.stderr).toBe(0);
    const manifest = await readManifest(outDir);
    expect(manifest?.trials.map((t) => t.status)).toEqual(["succeeded", "succeeded"]);
    for (const t of manifest?.trials ?? []) expect(nodeOf(join(outDir, t.dir))).toMatch(/^[0-9a-f]+$/);
  }, 180_000);

  it("sharedStore: a trial whose worker dies is retried by Ray and resumes from its last checkpoint", async () => {
    const assets = mkdtempSync(join(tmpdir(), "oplora-ray-llava-"));
    const built = spawnSync(
      VENV_PYTHON,
      [join(REPO, "scripts", "make_tiny_llava.py"), assets, "--train", "8"],
      {
        encoding: "utf8",
        env: { ...process.env, OMP_NUM_THREADS: "1" },
      },
    );
    expect(built.status, built.stderr).toBe(0);
    const spec: SpecInput = {
      task: "llava",
      device: "cpu",
      model: { pretrained: join(assets, "model") },
      adapter: { kind: "op-lora", r: 4, generator: { embedding_dim: 16, hidden_dim: 8 } },
      data: {
        train_json: join(assets, "data", "train.json"),
        image_folder: join(assets, "data", "images"),
        max_length: 64,
      },
      optimizer: { lr: 3e-3 },
      // long enough that the first checkpoint's event reaches Node (polled through the hub) well before the
      // trial ends, even on a loaded machine: killing an idle Ray worker retries nothing
      train: { steps: 40, batch_size: 2, checkpoint_every: 2 },
    };
    const outDir = tmp("shared");
    const handle = sweep(spec, {
      outDir,
      backend: { kind: "ray", address: cluster.address, sharedStore: true, maxRetries: 2 },
      env: { OMP_NUM_THREADS: "1" },
    });
    let killed = false;
    for await (const ev of handle) {
      if (!killed && ev.type === "trial_progress" && ev.event.type === "checkpoint" && ev.event.step <= 20) {
        const pid = startedPids(handle.events).get(ev.trial.id);
        if (pid !== undefined) {
          process.kill(pid, "SIGKILL"); // the Ray worker running the trial: Ray retries the task
          killed = true;
        }
      }
    }
    const results = await handle;
    expect(killed).toBe(true);
    expect(results.counts.succeeded).toBe(1);
    const runDir = results.rows[0]?.runDir as string;
    const events = readFileSync(join(runDir, "events.ndjson"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { type: string; step?: number });
    const starts = events.flatMap((e, i) => (e.type === "started" ? [i] : []));
    expect(starts.length).toBe(2); // the first attempt and the retry, in the same (shared) run directory
    const firstCheckpoint = events.find((e) => e.type === "checkpoint")?.step as number;
    const resumedSteps = events
      .slice(starts[1])
      .filter((e) => e.type === "step")
      .map((e) => e.step as number);
    expect(resumedSteps[0]).toBeGreaterThan(firstCheckpoint); // picked up after a checkpoint, not from step 1
    expect(resumedSteps.at(-1)).toBe(40);
  }, 240_000);

  it("a node dying mid-sweep: its trials are retried elsewhere, every trial succeeds once", async () => {
    const outDir = tmp("kill");
    const slow = { ...BASE, train: { steps: 1500, log_every: 100 } };
    const handle = sweep(slow, { axes: AXES, outDir, backend: { kind: "ray", address: cluster.address } });
    let killed = false;
    for await (const ev of handle) {
      if (!killed && ev.type === "trial_progress" && ev.event.type === "step") {
        const pid = startedPids(handle.events).get(ev.trial.id);
        if (pid !== undefined && parentOf(pid) === cluster.raylets[1]) {
          process.kill(cluster.raylets[1] as number, "SIGKILL");
          killed = true;
        }
      }
    }
    const r = await handle;
    expect(killed).toBe(true);
    // on a failure, say why each trial failed (e.g. retries spent on the dead node before Ray saw it die)
    expect(r.rows.filter((row) => row.error).map((row) => `${row.label}: ${row.error?.message}`)).toEqual([]);
    expect(r.counts).toEqual({ succeeded: 6, failed: 0, cancelled: 0, pruned: 0, not_run: 0 });
    const manifest = await readManifest(r.dir);
    expect(manifest?.trials.map((t) => t.status)).toEqual(Array(6).fill("succeeded"));
    expect(readdirSync(join(r.dir, "runs")).sort()).toEqual(r.rows.map((row) => row.id).sort());
    for (const row of r.rows) {
      const result = JSON.parse(readFileSync(join(row.runDir, "result.json"), "utf8")) as { status: string };
      expect(result.status).toBe("succeeded");
    }
  }, 300_000);
});
