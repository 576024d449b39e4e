/**
 * listRuns / showRun over real run directories: one MF run through `run()`, a 3-trial MF sweep (LoRA and
 * OP-LoRA on the CPU, one LoRA trial on a CUDA device that does not exist: failed), plus hand-made bad
 * folders: a truncated result.json, a schema-invalid one, run files without spec.json, a run without a
 * result (incomplete) and one whose run.lock a live process holds (running); a sweep cancelled while its
 * first trial runs (pending, then not_run trials), a hand-written sweep.json whose base leaves the adapter
 * to its default, and a 4-trial MF search with a pruned trial.
 */
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { InputError } from "../../sdk/errors.js";
import { run } from "../../sdk/run.js";
import { listRuns, type RunEntry, showRun } from "../../sdk/runs.js";
import type { SpecInput } from "../../sdk/spec/index.js";
import type { Trial } from "../../sdk/sweep/expand.js";
import { MANIFEST, readManifest, trialDir } from "../../sdk/sweep/store.js";
import { sweep } from "../../sdk/sweep/sweep.js";
import { tempRunDir, writeSweepManifest } from "./helpers.js";

const base: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 16, cols: 16 },
  adapter: { kind: "lora", r: 2 },
  train: { steps: 20, log_every: 10 },
};

const json = (path: string) => JSON.parse(readFileSync(path, "utf8"));
const at = (entries: RunEntry[], path: string) => entries.find((e) => e.path === path);

/** Set a run's result/spec times to `t` seconds since the epoch (listing order and age). */
function touch(dir: string, t: number) {
  for (const f of ["spec.json", "result.json"]) {
    try {
      utimesSync(join(dir, f), t, t);
    } catch {
      // absent in this folder
    }
  }
}

describe("listRuns / showRun (real MF runs and a sweep)", () => {
  const root = tempRunDir("store");
  const plain = join(root, "plain");
  const sweepDir = join(root, "nested", "sw");
  const bad = (name: string) => join(root, "bad", name);

  beforeAll(async () => {
    await run(base, { outDir: plain });
    const handle = sweep(
      { ...base, adapter: { kind: "op-lora", r: 2, generator: { embedding_dim: 8, hidden_dim: 8 } } },
      {
        zip: { "adapter.kind": ["lora", "op-lora", "lora"], device: ["cpu", "cpu", "cuda:7"] },
        seeds: [0],
        outDir: sweepDir,
      },
    );
    for await (const _ of handle);
    await handle;
    cpSync(plain, bad("truncated"), { recursive: true });
    const text = readFileSync(join(plain, "result.json"), "utf8");
    writeFileSync(join(bad("truncated"), "result.json"), text.slice(0, text.length / 2));
    cpSync(plain, bad("invalid"), { recursive: true });
    writeFileSync(
      join(bad("invalid"), "result.json"),
      JSON.stringify({ ...json(join(plain, "result.json")), status: "done" }),
    );
    mkdirSync(bad("no-spec"), { recursive: true });
    writeFileSync(join(bad("no-spec"), "events.ndjson"), "");
    cpSync(plain, bad("killed"), { recursive: true });
    rmSync(join(bad("killed"), "result.json"));
    cpSync(plain, bad("live"), { recursive: true });
    rmSync(join(bad("live"), "result.json"));
    writeFileSync(
      join(bad("live"), "run.lock"),
      JSON.stringify({ pid: process.pid, hostname: hostname(), started_at: new Date().toISOString() }),
    );
    // an ordinary folder with no run files is no entry
    mkdirSync(join(root, "notes"), { recursive: true });
    writeFileSync(join(root, "notes", "todo.txt"), "x");
  }, 240_000);

  it("lists every run and trial once, with task, arm, status, key metrics and wall time from its files", async () => {
    const entries = listRuns(root);
    const manifest = await readManifest(sweepDir);
    const trials = manifest?.trials ?? [];
    expect(trials).toHaveLength(3);
    const expected = [
      plain,
      ...trials.map((t) => join(sweepDir, t.dir)),
      ...["truncated", "invalid", "no-spec", "killed", "live"].map(bad),
    ];
    expect(entries.map((e) => e.path).sort()).toEqual(expected.sort());

    const p = at(entries, plain) as RunEntry;
    const result = json(join(plain, "result.json"));
    expect(p).toMatchObject({
      runId: "plain",
      task: "matrix_factorization",
      arm: { kind: "lora", r: 2, lora_alpha: null, use_rslora: false, use_dora: false },
      status: "succeeded",
      problem: null,
      sweep: null,
      wallS: result.timing.wall_s,
    });
    expect(p.metrics).toEqual({
      relative_excess: result.metrics.relative_excess,
      final_loss: result.metrics.final_loss,
    });

    for (const t of trials) {
      const e = at(entries, join(sweepDir, t.dir)) as RunEntry;
      expect(e.sweep).toEqual({ name: "sw", dir: sweepDir, label: t.label, axes: t.axes });
      expect(e.runId).toBe(t.id);
      expect(e.status).toBe(t.status);
      expect(e.arm?.kind).toBe(t.axes["adapter.kind"]);
    }
    expect(trials.map((t) => t.status).sort()).toEqual(["failed", "succeeded", "succeeded"]);
  });

  it("names the problem of each bad folder instead of throwing or skipping it", () => {
    const entries = listRuns(join(root, "bad"));
    const truncated = at(entries, bad("truncated"));
    expect(truncated?.status).toBe("corrupt");
    expect(truncated?.problem).toContain(join(bad("truncated"), "result.json"));
    expect(truncated?.problem).toContain("not valid JSON");
    const invalid = at(entries, bad("invalid"));
    expect(invalid?.status).toBe("corrupt");
    expect(invalid?.problem).toMatch(/does not match RunResult: status/);
    expect(invalid?.metrics).toEqual({});
    expect(at(entries, bad("no-spec"))).toMatchObject({
      status: "not_a_run",
      task: null,
      problem: `${join(bad("no-spec"), "spec.json")}: missing: not a run directory`,
    });
    expect(at(entries, bad("killed"))).toMatchObject({ status: "incomplete", problem: null, wallS: null });
    const live = at(entries, bad("live"));
    expect(live?.status).toBe("running");
    expect(live?.wallS).toBeGreaterThanOrEqual(0);
  });

  it("filters by task and status; newest first; a listing inside the sweep keeps its trials' sweep", () => {
    expect(listRuns(root, { status: "succeeded" }).map((e) => e.status)).toEqual([
      "succeeded",
      "succeeded",
      "succeeded",
    ]);
    expect(listRuns(root, { status: "failed" })).toHaveLength(1);
    expect(listRuns(root, { task: "text_to_image" })).toEqual([]);
    const mf = listRuns(root, { task: "matrix_factorization", status: "corrupt" });
    expect(mf.map((e) => e.path).sort()).toEqual([bad("invalid"), bad("truncated")]);

    touch(plain, 1_000_000_000);
    touch(bad("killed"), 1_500_000_000);
    const entries = listRuns(root);
    const times = entries.map((e) => e.modifiedAt);
    expect(times).toEqual([...times].sort().reverse());
    expect(entries.at(-1)?.path).toBe(plain);
    expect(entries.at(-2)?.path).toBe(bad("killed"));
    expect(at(entries, plain)?.modifiedAt).toBe(new Date(1_000_000_000_000).toISOString());
    expect(at(entries, plain)?.ageS).toBeGreaterThan(1e8);

    const inside = listRuns(join(sweepDir, "runs"));
    expect(inside).toHaveLength(3);
    for (const e of inside) expect(e.sweep?.name).toBe("sw");
  });

  it("a sweep file the user wrote (sweep.json, no trials) beside runs/ makes no sweep of the runs there", () => {
    const project = tempRunDir("project");
    cpSync(plain, join(project, "runs", "mf-1"), { recursive: true });
    writeFileSync(join(project, "sweep.json"), JSON.stringify({ base, axes: { "adapter.r": [2, 4] } }));
    expect(listRuns(project).map((e) => [e.status, e.sweep])).toEqual([["succeeded", null]]);
    expect(showRun(join(project, "runs", "mf-1")).entry.sweep).toBeNull();
  });

  it("a folder that does not exist is an InputError naming it", () => {
    expect(() => listRuns(join(root, "nope"))).toThrow(InputError);
    expect(() => listRuns(join(root, "nope"))).toThrow(join(root, "nope"));
    expect(() => showRun(join(root, "nope"))).toThrow(/nope: no such run directory/);
    expect(() => showRun(bad("no-spec"))).toThrow(/not a run directory/);
  });

  it("showRun: spec, scalar metrics, artifacts with sizes and existence; a failed trial's error", async () => {
    const copy = join(root, "shown");
    cpSync(plain, copy, { recursive: true });
    const d = showRun(copy);
    expect(d.spec).toEqual(json(join(plain, "spec.json")));
    const result = json(join(plain, "result.json"));
    expect(d.metrics.final_loss).toBe(result.metrics.final_loss);
    expect(d.error).toBeNull();
    expect(d.artifacts.map((a) => a.path)).toEqual(result.artifacts.map((a: { path: string }) => a.path));
    const plot = d.artifacts.find((a) => a.kind === "plot");
    expect(plot?.exists).toBe(true);
    expect(plot?.bytes).toBe(statSync(join(copy, plot?.path as string)).size);
    const adapter = d.artifacts.find((a) => a.kind === "adapter");
    expect(adapter?.bytes).toBeGreaterThan(0);

    rmSync(join(copy, plot?.path as string));
    expect(showRun(copy).artifacts.find((a) => a.kind === "plot")).toMatchObject({
      exists: false,
      bytes: null,
    });

    const failed = listRuns(root, { status: "failed" })[0] as RunEntry;
    const f = showRun(failed.path);
    expect(f.entry.sweep?.name).toBe("sw");
    expect(f.error?.message).toBe(json(join(failed.path, "result.json")).error.message);
    expect(f.error?.message.length).toBeGreaterThan(0);
    expect(failed.error).toEqual(f.error); // the listing carries it too
    expect(listRuns(root, { status: "succeeded" }).every((e) => e.error === null)).toBe(true);

    expect(showRun(bad("truncated")).entry.status).toBe("corrupt");
  });
});

describe("listRuns: sweep trials that have not started, from the manifest", () => {
  it("pending while the sweep runs, not_run once it is cancelled; arm and axes from the manifest", async () => {
    const dir = join(tempRunDir("progress"), "sw");
    // concurrency 1 and a long first trial: while it steps, the other two have no folder yet
    const handle = sweep(
      { ...base, train: { steps: 10_000_000, log_every: 10 } },
      { axes: { "adapter.r": [2, 3, 4] }, concurrency: 1, outDir: dir },
    );
    const ids = handle.trials.map((t) => t.id);
    let during: RunEntry[] | undefined;
    let pendingOnly: RunEntry[] | undefined;
    for await (const ev of handle) {
      if (during || ev.type !== "trial_progress" || ev.event.type !== "step") continue;
      during = listRuns(dirname(dir));
      pendingOnly = listRuns(dir, { status: "pending" });
      void handle.cancel();
    }
    await handle;
    const byId = (entries: RunEntry[] | undefined) =>
      Object.fromEntries((entries ?? []).map((e) => [e.runId, e]));
    const live = byId(during);
    expect(Object.keys(live).sort()).toEqual([...ids].sort());
    expect(live[ids[0] as string]?.status).toBe("running");
    for (const [i, id] of ids.entries()) {
      if (i === 0) continue;
      expect(existsSync(join(dir, "runs", id))).toBe(false);
      expect(live[id]).toMatchObject({
        path: join(dir, "runs", id),
        task: "matrix_factorization",
        arm: { kind: "lora", r: 2 + i },
        status: "pending",
        problem: null,
        metrics: {},
        wallS: null,
        sweep: { name: "sw", dir, label: `adapter.r=${2 + i}`, axes: { "adapter.r": 2 + i } },
      });
    }
    expect((pendingOnly ?? []).map((e) => e.runId).sort()).toEqual(ids.slice(1).sort());

    // cancelled: the store calls the two trials it never started not_run, and so does the listing
    const manifest = await readManifest(dir);
    expect(manifest?.trials.map((t) => t.status)).toEqual(["cancelled", "not_run", "not_run"]);
    const after = byId(listRuns(dir));
    expect(after[ids[0] as string]?.status).toBe("cancelled");
    expect(after[ids[1] as string]).toMatchObject({ status: "not_run", arm: { kind: "lora", r: 3 } });
    expect(after[ids[2] as string]?.status).toBe("not_run");
    expect(listRuns(dir, { status: "not_run" })).toHaveLength(2);
    // a trial folder with run files but no spec.json yet is that trial, not a stray folder; a listing of
    // the trial's own folder finds it too
    const third = join(dir, "runs", ids[2] as string);
    mkdirSync(third);
    writeFileSync(join(third, "events.ndjson"), "");
    expect(listRuns(third)).toMatchObject([{ path: third, status: "not_run", arm: { r: 4 }, problem: null }]);
    expect(
      listRuns(join(dir, "runs"))
        .map((e) => e.status)
        .sort(),
    ).toEqual(["cancelled", "not_run", "not_run"]);
  }, 120_000);
});

describe("listRuns / showRun: unstarted trials of a base that leaves the adapter to its default", () => {
  const { adapter: _, ...noAdapter } = base;
  const plan = { axes: { "optimizer.lr": [1e-3, 1e-2] } };

  it("their task, arm and spec are the sweep's own expansion of the trial (defaults filled in)", () => {
    const dir = tempRunDir("defaults");
    const trials = writeSweepManifest(dir, noAdapter, plan, ["not_run", "running"]);
    const { adapter } = (trials[0] as Trial).spec as { adapter: { kind: string; r: number } };
    expect(adapter.kind).toBe("op-lora"); // the MF spec's default adapter
    // the second trial's run is starting: run files, no spec.json yet
    const starting = trialDir(dir, trials[1]?.id as string);
    mkdirSync(starting, { recursive: true });
    writeFileSync(join(starting, "events.ndjson"), "");

    const entries = listRuns(dir);
    expect(entries).toHaveLength(2);
    const arm = { kind: "op-lora", r: adapter.r, lora_alpha: null, use_rslora: false, use_dora: false };
    for (const t of trials) {
      expect(at(entries, trialDir(dir, t.id))).toMatchObject({
        task: "matrix_factorization",
        arm,
        status: "not_run", // no live sweep.lock: the sweep ended or was killed without running it
        problem: null,
        sweep: { name: "defaults", label: t.label, axes: t.axes },
      });
      // showRun: the manifest's entry and the spec the trial will run, folder or not
      const d = showRun(trialDir(dir, t.id));
      const { ageS: _age, ...listed } = at(entries, trialDir(dir, t.id)) as RunEntry;
      expect(d.entry).toMatchObject(listed);
      expect(d.spec).toEqual(t.spec);
      expect(d).toMatchObject({ metrics: {}, error: null, artifacts: [] });
    }

    // a live sweep.lock: pending, as listRuns says
    writeSweepManifest(dir, noAdapter, plan, ["pending", "running"], true);
    expect(listRuns(dir).map((e) => e.status)).toEqual(["pending", "pending"]);
    expect(showRun(starting).entry.status).toBe("pending");
    // a folder under the sweep's runs/ that sweep.json does not list is no trial of it
    mkdirSync(join(dir, "runs", "stray"));
    expect(() => showRun(join(dir, "runs", "stray"))).toThrow(/stray is not a run directory/);
  });

  it("a trial sweep.json's base and axes no longer make a valid spec of: listed with the problem", () => {
    const dir = tempRunDir("stale");
    const [t] = writeSweepManifest(dir, noAdapter, plan, ["not_run"]);
    const manifest = json(join(dir, MANIFEST));
    manifest.trials[0].axes = { "optimizer.lr": "fast" };
    writeFileSync(join(dir, MANIFEST), JSON.stringify(manifest));
    const [e] = listRuns(dir);
    expect(e).toMatchObject({
      path: trialDir(dir, t?.id as string),
      task: "matrix_factorization",
      arm: null,
    });
    expect(e?.problem).toContain(`${join(dir, MANIFEST)}: trial 0 (${t?.label}): base and axes are not`);
    expect(e?.problem).toContain("optimizer.lr");
    expect(showRun(e?.path as string)).toMatchObject({ spec: {}, entry: { problem: e?.problem } });
  });
});

describe("listRuns: a real search sweep's pruned trials", () => {
  it("a trial its median pruner stopped (result.json cancelled, manifest pruned) is listed pruned", async () => {
    const dir = tempRunDir("search");
    // lr over 1e-4..1: after 2 startup trials TPE (seed 0) tries an lr near 1e-4, still far behind the
    // median after the default warm-up (750 of 3000 steps), and the pruner stops it. Prune replies are
    // asynchronous (each report is a round trip to the search process's SQLite study) and may land many
    // steps late under load: 30 reports over 3000 steps leave the pruned trial 2200 steps to receive one
    const handle = sweep(
      { ...base, optimizer: { name: "adam" }, train: { steps: 3000, log_every: 100 } },
      {
        outDir: dir,
        concurrency: 1,
        search: {
          space: { "optimizer.lr": { low: 1e-4, high: 1, log: true } },
          trials: 4,
          pruner: "median",
          objective: "final_loss",
          startupTrials: 2,
          confirmSeeds: [1],
          seed: 0,
        },
      },
    );
    for await (const _ of handle);
    const results = await handle;
    const manifest = await readManifest(dir);
    const trials = manifest?.trials ?? [];
    const pruned = trials.filter((t) => t.status === "pruned");
    expect(pruned.length).toBeGreaterThan(0);
    expect(results.counts.pruned).toBe(pruned.length);
    const entries = listRuns(dir);
    expect(entries).toHaveLength(trials.length);
    for (const t of trials) {
      const e = at(entries, join(dir, t.dir)) as RunEntry;
      expect(e.status).toBe(t.status);
      expect(e.sweep?.label).toBe(t.label);
    }
    for (const t of pruned) {
      const result = json(join(dir, t.dir, "result.json"));
      expect(result.status).toBe("cancelled"); // the run itself was stopped; only the sweep knows why
      const e = at(entries, join(dir, t.dir)) as RunEntry;
      expect(e.problem).toBeNull();
      expect(e.wallS).toBe(result.timing.wall_s);
    }
    expect(
      listRuns(dir, { status: "pruned" })
        .map((e) => e.runId)
        .sort(),
    ).toEqual(pruned.map((t) => t.id).sort());
    expect(listRuns(dir, { status: "cancelled" })).toEqual([]);
  }, 180_000);
});
