/**
 * Bad search blocks are refused before anything runs (SweepInvalidError naming the field; the CLI exits 2
 * and writes nothing). No Python starts here except the CLI case's node process.
 */
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import type { SpecInput } from "../../../sdk/spec/index.js";
import { SweepInvalidError } from "../../../sdk/sweep/errors.js";
import { atEdge, planSearch } from "../../../sdk/sweep/search-block.js";
import { sweep } from "../../../sdk/sweep/sweep.js";
import { REPO } from "../helpers.js";

const base: SpecInput = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 16, cols: 16 },
  adapter: { kind: "lora", r: 2 },
  train: { steps: 30, log_every: 5 },
};
const axes = { "adapter.kind": ["lora", "op-lora"] } as const;
const good = {
  space: { "optimizer.lr": { low: 1e-3, high: 1, log: true } },
  trials: 4,
  objective: "final_loss",
};

function problems(search: unknown, plan: object = { axes }): string[] {
  const dir = mkdtempSync(join(tmpdir(), "oplora-search-bad-"));
  try {
    sweep(base, { ...plan, outDir: join(dir, "s"), search: search as typeof good });
  } catch (e) {
    expect(e).toBeInstanceOf(SweepInvalidError);
    expect(existsSync(join(dir, "s"))).toBe(false);
    return (e as SweepInvalidError).problems;
  }
  throw new Error("expected the search block to be refused");
}

describe("search block validation", () => {
  it("accepts a good block: one study per cell, the budget from the spec", () => {
    const { block, cells } = planSearch(base, { axes }, good);
    expect(cells.map((c) => c.name)).toEqual(["adapter.kind=lora", "adapter.kind=op-lora"]);
    expect(cells.every((c) => c.maxSteps === 30)).toBe(true);
    expect(block).toMatchObject({ sampler: "tpe", pruner: "median", direction: "minimize" });
  });

  it("warmupSteps: a quarter of each cell's steps by default, as given otherwise", () => {
    const stepsAxis = { axes: { "train.steps": [8, 30] } };
    expect(planSearch(base, stepsAxis, good).cells.map((c) => c.warmupSteps)).toEqual([2, 7]);
    const given = planSearch(base, stepsAxis, { ...good, warmupSteps: 5 });
    expect(given.cells.map((c) => c.warmupSteps)).toEqual([5, 5]);
  });

  it.each([
    [
      "unknown path",
      { ...good, space: { "optimizer.lrr": { low: 0.1, high: 1 } } },
      /search\.space\.optimizer\.lrr/,
    ],
    [
      "a value the schema refuses",
      { ...good, space: { "adapter.r": { low: -3, high: 4, int: true } } },
      /search\.space\.adapter\.r: -3 refused/,
    ],
    [
      "low >= high",
      { ...good, space: { "optimizer.lr": { low: 1, high: 1 } } },
      /search\.space\.optimizer\.lr: low \(1\) must be below high \(1\)/,
    ],
    [
      "log with a non-positive bound",
      { ...good, space: { "optimizer.lr": { low: 0, high: 1, log: true } } },
      /search\.space\.optimizer\.lr: log scale needs positive bounds/,
    ],
    [
      "objective the task does not report",
      { ...good, objective: "vqa_accuracy" },
      /search\.objective: 'vqa_accuracy' is not a scalar metric of matrix_factorization \(expected one of .*final_loss/,
    ],
    ["unknown sampler", { ...good, sampler: "cmaes" }, /search\.sampler: /],
    ["unknown pruner", { ...good, pruner: "asha" }, /search\.pruner: /],
    ["unknown key", { ...good, trails: 3 }, /search: .*trails/],
    [
      "warmupSteps not below the trial's steps",
      { ...good, warmupSteps: 30 },
      /search\.warmupSteps: 30 must be below the trial's steps \(train\.steps = 30 in adapter\.kind=lora\)/,
    ],
    ["a negative warmupSteps", { ...good, warmupSteps: -1 }, /search\.warmupSteps: /],
    [
      "a searched path that is also an axis",
      { ...good, space: { "adapter.kind": { choices: ["lora"] } } },
      /search\.space\.adapter\.kind: also an axis/,
    ],
  ])("refuses %s, naming the field", (_what, search, pattern) => {
    expect(problems(search).join("\n")).toMatch(pattern);
  });

  it("refuses seeds beside a search (confirmSeeds are the seeds)", () => {
    expect(problems(good, { axes, seeds: [0, 1] }).join("\n")).toMatch(
      /seeds: a search sweep takes its seeds/,
    );
  });

  it("atEdge: within 5% of the (log) range of a bound", () => {
    const p = { low: 1e-4, high: 1, log: true, int: false, points: 5 };
    expect(atEdge(p, 1.2e-4)).toBe(true);
    expect(atEdge(p, 0.9)).toBe(true);
    expect(atEdge(p, 1e-2)).toBe(false);
  });

  it("the CLI exits 2 for a bad search block in the sweep file and writes nothing", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-search-cli-"));
    const file = join(dir, "sweep.json");
    writeFileSync(file, JSON.stringify({ base, axes, search: { ...good, pruner: "asha" } }));
    const out = join(dir, "out");
    const r = await execa(
      "node",
      [join(REPO, "dist", "sdk", "cli", "main.js"), "sweep", file, "--out", out],
      {
        reject: false,
        all: true,
      },
    );
    expect(r.exitCode).toBe(2);
    expect(r.all).toMatch(/search\.pruner/);
    expect(existsSync(out)).toBe(false);
  });
});
