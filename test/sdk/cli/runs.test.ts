/**
 * `oplora runs` and `oplora show` through the built CLI (dist/, from `npm run build`), over a real MF run
 * made by `oplora run`, a real MF run that diverges (lr 1e30: failed, TrainingDiverged), a 2-trial sweep, a
 * copy of the run with a truncated result.json and a folder with run files but no spec.json; `oplora show` of sweep trials that have not started (a hand-written sweep.json).
 */
import { cpSync, mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { armText } from "../../../sdk/cli/commands/runs.js";
import type { RunDetails, RunEntry } from "../../../sdk/runs.js";
import { trialDir } from "../../../sdk/sweep/store.js";
import { sweep } from "../../../sdk/sweep/sweep.js";
import { REPO, tempRunDir, writeSweepManifest } from "../helpers.js";

const MAIN = join(REPO, "dist", "sdk", "cli", "main.js");
/** The message JSON.parse gives for `text` (Node's wording). */
function jsonError(text: string): string {
  try {
    JSON.parse(text);
  } catch (e) {
    return (e as Error).message;
  }
  return "";
}
const cli = (args: string[]) => execa("node", [MAIN, ...args], { reject: false, cwd: REPO });

const spec = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 16, cols: 16 },
  adapter: { kind: "lora", r: 2, use_rslora: true },
  train: { steps: 20, log_every: 10 },
} as const;

describe("oplora runs / oplora show (built CLI)", () => {
  const root = tempRunDir("store");
  const plain = join(root, "plain");
  const sweepDir = join(root, "sw");
  const corrupt = join(root, "corrupt");
  const noSpec = join(root, "no-spec");
  const diverged = join(root, "diverged");

  beforeAll(async () => {
    mkdirSync(root, { recursive: true });
    const specFile = join(root, "spec.in.json");
    writeFileSync(specFile, JSON.stringify(spec));
    const r = await cli(["run", specFile, "--out", plain]);
    expect(r.exitCode, r.stderr).toBe(0);
    writeFileSync(specFile, JSON.stringify({ ...spec, optimizer: { lr: 1e30 } }));
    const d = await cli(["run", specFile, "--out", diverged]);
    expect(d.exitCode, d.stderr).toBe(1);
    // the error is said once, with the run dir (not also as a progress line)
    expect(d.stderr.match(/training diverged at step/g), d.stderr).toHaveLength(1);
    expect(d.stderr).toMatch(
      /^oplora: run failed: TrainingDiverged: training diverged at step \d+: .*\(run dir /m,
    );
    rmSync(specFile);
    const handle = sweep({ ...spec, adapter: { kind: "lora", r: 2 } }, { seeds: [0, 1], outDir: sweepDir });
    for await (const _ of handle);
    await handle;
    cpSync(plain, corrupt, { recursive: true });
    writeFileSync(join(corrupt, "result.json"), "{");
    mkdirSync(noSpec);
    writeFileSync(join(noSpec, "result.json"), "{}");
    // the plain run the oldest, the corrupt copy the newest: the table's order is not the walk's
    utimesSync(join(plain, "spec.json"), 1e9, 1e9);
    utimesSync(join(plain, "result.json"), 1e9, 1e9);
    const later = Date.now() / 1000 + 60;
    utimesSync(join(corrupt, "spec.json"), later, later);
    utimesSync(join(corrupt, "result.json"), later, later);
  }, 240_000);

  it("--help lists runs and show", async () => {
    const r = await cli(["--help"]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^ {2}runs +list the runs/m);
    expect(r.stdout).toMatch(/^ {2}show +one run/m);
    expect((await cli(["runs", "--help"])).stdout).toContain("--status STATUS");
  });

  it("runs: a table, newest first, with arm, status, key metrics and each bad folder's problem", async () => {
    const r = await cli(["runs", root]);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^TASK +ARM +STATUS +METRICS +WALL +AGE +TRIAL +PATH$/);
    const rows = lines.slice(1).filter((l) => !l.startsWith("  !"));
    expect(rows).toHaveLength(6);
    expect(rows[0]).toMatch(/corrupt/);
    expect(rows[0]?.endsWith(corrupt)).toBe(true);
    expect(rows.at(-1)?.endsWith(plain)).toBe(true);
    const result = JSON.parse(readFileSync(join(plain, "result.json"), "utf8"));
    expect(rows.at(-1)).toMatch(
      /^matrix_factorization +lora r=2 rslora +succeeded +relative_excess=\S+ final_loss=\S+ /,
    );
    expect(rows.at(-1)).toContain(`final_loss=${Number(result.metrics.final_loss).toPrecision(4)}`);
    expect(rows.filter((l) => /sw: seed=[01] /.test(l))).toHaveLength(2);
    expect(r.stdout).toContain(`  ! ${join(corrupt, "result.json")}: not valid JSON`);
    expect(r.stdout).toContain(`  ! ${join(noSpec, "spec.json")}: missing: not a run directory`);
    // a failed run: its error's type and first line right under its row
    const at = lines.findIndex((l) => l.endsWith(diverged));
    expect(lines[at]).toMatch(/^matrix_factorization +lora r=2 rslora +failed /);
    expect(lines[at + 1]).toMatch(
      /^ {2}! TrainingDiverged: training diverged at step \d+: loss \S+ with lr 1e\+30; /,
    );
  });

  it("runs --json prints the listRuns array; --task and --status filter it", async () => {
    const all = JSON.parse((await cli(["runs", root, "--json"])).stdout) as RunEntry[];
    expect(all.map((e) => e.status).sort()).toEqual([
      "corrupt",
      "failed",
      "not_a_run",
      "succeeded",
      "succeeded",
      "succeeded",
    ]);
    const plainEntry = all.find((e) => e.path === plain);
    expect(plainEntry?.arm).toEqual({
      kind: "lora",
      r: 2,
      lora_alpha: null,
      use_rslora: true,
      use_dora: false,
    });
    expect(plainEntry?.metrics.final_loss).toBe(
      JSON.parse(readFileSync(join(plain, "result.json"), "utf8")).metrics.final_loss,
    );
    const ok = JSON.parse(
      (await cli(["runs", root, "--status", "succeeded", "--json"])).stdout,
    ) as RunEntry[];
    expect(ok).toHaveLength(3);
    expect(ok.filter((e) => e.sweep?.name === "sw")).toHaveLength(2);
    const none = await cli(["runs", root, "--task", "llava"]);
    expect(none.exitCode).toBe(0);
    expect(none.stdout).toBe(`no runs under ${root}`);
  });

  it("the arm column names every switch: rslora, dora", () => {
    const arm = { kind: "op-lora", r: 8, lora_alpha: 16, use_rslora: true, use_dora: true };
    expect(armText(arm)).toBe("op-lora r=8 alpha=16 rslora dora");
    expect(armText({ ...arm, use_rslora: false, use_dora: false, lora_alpha: null })).toBe("op-lora r=8");
    expect(armText(null)).toBe("-");
  });

  it("show: status, metrics, artifacts and spec; --json the showRun object", async () => {
    const r = await cli(["show", plain]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^status +succeeded$/m);
    expect(r.stdout).toMatch(/^ {2}final_loss +\S+$/m);
    expect(r.stdout).toMatch(/^ {2}adapter +adapter +\d+(\.\d)? (B|KiB)$/m);
    expect(r.stdout).toContain('"use_rslora": true');
    const d = JSON.parse((await cli(["show", plain, "--json"])).stdout) as RunDetails;
    expect(d.entry.path).toBe(plain);
    expect(d.spec).toEqual(JSON.parse(readFileSync(join(plain, "spec.json"), "utf8")));
    expect(d.artifacts.length).toBeGreaterThan(0);
    for (const a of d.artifacts) expect(a.exists).toBe(true);
    expect(d.error).toBeNull();
    const f = JSON.parse((await cli(["show", diverged, "--json"])).stdout) as RunDetails;
    expect(f.entry.status).toBe("failed");
    expect(f.error).toEqual(f.entry.error);
    expect(f.error?.type).toBe("TrainingDiverged");
    expect(f.error?.message).toBe(
      JSON.parse(readFileSync(join(diverged, "result.json"), "utf8")).error.message,
    );
  });

  it("show on a corrupt run: prints what it can read, the problem on stderr, exit 1", async () => {
    const c = await cli(["show", corrupt]);
    expect(c.exitCode).toBe(1);
    expect(c.stdout).toMatch(/^status +corrupt$/m);
    expect(c.stdout).toContain(`problem  ${join(corrupt, "result.json")}: not valid JSON`);
    expect(c.stdout).toContain('"use_rslora": true'); // the spec still shown
    expect(c.stderr).toBe(
      `oplora: ${join(corrupt, "result.json")}: not valid JSON (truncated?): ${jsonError("{")}`,
    );
    const j = await cli(["show", corrupt, "--json"]);
    expect(j.exitCode).toBe(1);
    expect((JSON.parse(j.stdout) as RunDetails).entry.status).toBe("corrupt");
    expect(j.stderr).toContain(join(corrupt, "result.json"));
    // schema-invalid, not only unparsable
    const invalid = join(root, "invalid");
    cpSync(plain, invalid, { recursive: true });
    const result = JSON.parse(readFileSync(join(plain, "result.json"), "utf8"));
    writeFileSync(join(invalid, "result.json"), JSON.stringify({ ...result, status: "done" }));
    const v = await cli(["show", invalid]);
    expect(v.exitCode).toBe(1);
    expect(v.stderr).toMatch(/result\.json does not match RunResult: status/);
    expect(v.stdout).toMatch(/^status +corrupt$/m);
    rmSync(invalid, { recursive: true });
  });

  it("a wrong path or a bad flag: a clear error, exit 2", async () => {
    const missing = join(root, "nope");
    const a = await cli(["runs", missing]);
    expect(a.exitCode).toBe(2);
    expect(a.stderr).toBe(`oplora: ${missing}: no such directory`);
    const b = await cli(["show", missing]);
    expect(b.exitCode).toBe(2);
    expect(b.stderr).toContain(missing);
    const c = await cli(["show", noSpec]);
    expect(c.exitCode).toBe(2);
    expect(c.stderr).toContain("not a run directory");
    const d = await cli(["runs", root, "--status", "done"]);
    expect(d.exitCode).toBe(2);
    expect(d.stderr).toContain("--status: expected one of succeeded");
    expect((await cli(["runs"])).exitCode).toBe(2);
  });
});

describe("oplora show of a sweep trial that has not started (built CLI)", () => {
  const { adapter: _, ...noAdapter } = spec;
  const plan = { axes: { "optimizer.lr": [1e-3, 1e-2] } };

  it("prints its label, status from the manifest and the spec it will run; exit 0", async () => {
    const dir = tempRunDir("sw");
    const trials = writeSweepManifest(dir, noAdapter, plan, ["not_run", "pending"]);
    const [first, second] = trials.map((t) => trialDir(dir, t.id));
    mkdirSync(first as string, { recursive: true }); // a folder, no spec.json; the second has no folder
    for (const [i, t] of trials.entries()) {
      const r = await cli(["show", trialDir(dir, t.id)]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^status +not_run$/m); // no live sweep.lock
      expect(r.stdout).toMatch(/^arm +op-lora r=8$/m); // the default adapter, filled in
      expect(r.stdout).toContain(`sweep    sw: optimizer.lr=${i ? "0.01" : "0.001"}`);
      expect(r.stdout).toContain(JSON.stringify(t.spec, null, 2));
      const j = await cli(["show", trialDir(dir, t.id), "--json"]);
      expect(j.exitCode, j.stderr).toBe(0);
      const d = JSON.parse(j.stdout) as RunDetails;
      expect(d.spec).toEqual(t.spec);
      expect(d.entry).toMatchObject({
        status: "not_run",
        problem: null,
        sweep: { label: t.label, axes: t.axes },
      });
      expect(d).toMatchObject({ metrics: {}, error: null, artifacts: [] });
    }
    writeSweepManifest(dir, noAdapter, plan, ["not_run", "pending"], true);
    const live = await cli(["show", second as string, "--json"]);
    expect((JSON.parse(live.stdout) as RunDetails).entry.status).toBe("pending");
    expect((await cli(["show", first as string])).stdout).toMatch(/^status +not_run$/m); // the store's word
  });

  it("a folder that is no trial of the sweep and has no spec.json: exit 2, not a run directory", async () => {
    const dir = tempRunDir("sw");
    writeSweepManifest(dir, noAdapter, plan, []);
    const stray = join(dir, "runs", "stray");
    mkdirSync(stray, { recursive: true });
    const r = await cli(["show", stray]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe(
      `oplora: ${stray} is not a run directory: ${join(stray, "spec.json")} missing or not JSON`,
    );
  });
});
