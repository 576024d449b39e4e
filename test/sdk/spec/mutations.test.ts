/**
 * Property-style: a few hundred random mutations (seeded, so a failure reproduces) of a valid MF spec and of
 * a valid sweep file. Each mutation is either accepted or refused with the SDK's own error naming a field;
 * Python's validator agrees on every spec the SDK accepted (refusing one is a SpecError, never another
 * exception); and through the real CLI, refused specs and sweep files exit 2 with no traceback and nothing
 * written.
 */
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { parseSweepFile } from "../../../sdk/cli/commands/sweep.js";
import { OploraError, SpecInvalidError } from "../../../sdk/errors.js";
import { validateSpec } from "../../../sdk/spec/validate.js";
import { SweepInvalidError } from "../../../sdk/sweep/errors.js";
import { expandSweep } from "../../../sdk/sweep/expand.js";
import { planSearch } from "../../../sdk/sweep/search-block.js";
import { REPO, VENV_PYTHON } from "../helpers.js";

const SPEC = {
  task: "matrix_factorization",
  device: "cpu",
  matrix: { rows: 8, cols: 8, spectrum: "geometric" },
  adapter: { kind: "op-lora", r: 2, generator: { embedding_dim: 4, hidden_dim: 4 } },
  optimizer: { name: "adam", lr: 0.01 },
  train: { steps: 3, log_every: 1 },
  seed: 0,
};
const SWEEP = {
  base: SPEC,
  axes: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [0.01, 0.1] },
  seeds: [0, 1],
  concurrency: 2,
  search: undefined as unknown,
};

/** mulberry32: a small seeded PRNG. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const ODD_VALUES: unknown[] = [null, -1, 0, 0.5, 1e9, -1e-9, "", "x", "lora", true, [], [1], {}, { a: 1 }, 3];

/** Paths to every key of a JSON-like value (objects and arrays). */
function paths(v: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  if (v === null || typeof v !== "object") return [];
  const keys = Array.isArray(v) ? v.map((_, i) => i) : Object.keys(v);
  return keys.flatMap((k) => [[...prefix, k], ...paths((v as Record<string, unknown>)[k], [...prefix, k])]);
}

/** One mutation: drop a key, add an unknown key, or set a key to an odd value. */
function mutate<T>(value: T, next: () => number): { value: T; what: string } {
  const copy = structuredClone(value) as Record<string | number, unknown>;
  const all = paths(copy);
  const path = all[Math.floor(next() * all.length)] as (string | number)[];
  const parent = path
    .slice(0, -1)
    .reduce<Record<string | number, unknown>>((o, k) => o[k] as Record<string | number, unknown>, copy);
  const key = path[path.length - 1] as string | number;
  const op = Math.floor(next() * 3);
  if (op === 0 && !Array.isArray(parent)) {
    delete parent[key];
    return { value: copy as T, what: `drop ${path.join(".")}` };
  }
  if (op === 1 && !Array.isArray(parent)) {
    parent[`${String(key)}_typo`] = parent[key];
    return { value: copy as T, what: `add ${path.join(".")}_typo` };
  }
  const odd = ODD_VALUES[Math.floor(next() * ODD_VALUES.length)];
  parent[key] = odd;
  return { value: copy as T, what: `${path.join(".")} = ${JSON.stringify(odd)}` };
}

function specVerdict(spec: unknown): "ok" | string {
  try {
    validateSpec(spec);
    return "ok";
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(SpecInvalidError);
    return (e as Error).message;
  }
}

function sweepVerdict(file: unknown): "ok" | string {
  try {
    const f = parseSweepFile(file, "sweep.json");
    if (f.search !== undefined) planSearch(f.base, f, f.search);
    else expandSweep(f.base, f);
    return "ok";
  } catch (e) {
    expect(e, String(e)).toBeInstanceOf(OploraError);
    if (!(e instanceof SweepInvalidError)) expect((e as Error).name).toBe("UsageError");
    return (e as Error).message;
  }
}

const cli = (args: string[]) =>
  execa("node", [join(REPO, "dist", "sdk", "cli", "main.js"), ...args], { reject: false });

describe("random mutations of valid specs and sweep files", () => {
  const next = rng(20261207);
  const specs = Array.from({ length: 300 }, () => mutate(SPEC, next));
  const sweeps = Array.from({ length: 200 }, (_, i) =>
    mutate(
      i % 2
        ? { ...SWEEP, search: undefined }
        : {
            ...SWEEP,
            axes: { "adapter.kind": ["lora", "op-lora"] },
            seeds: undefined,
            search: { space: { "optimizer.lr": { low: 1e-3, high: 1, log: true } }, trials: 4 },
          },
      next,
    ),
  );

  it("each spec is accepted or refused naming a field; Python agrees on every accepted one", async () => {
    const verdicts = specs.map((m) => ({ ...m, verdict: specVerdict(m.value) }));
    const refused = verdicts.filter((v) => v.verdict !== "ok");
    const accepted = verdicts.filter((v) => v.verdict === "ok");
    expect(refused.length).toBeGreaterThan(50);
    expect(accepted.length).toBeGreaterThan(20);
    for (const r of refused) expect(r.verdict, r.what).toMatch(/[a-z_]+(\.[a-z_0-9]+)*: |spec/);
    // Python's own validator on each spec the SDK accepted: the same answer, and never a traceback
    const code = `
import json, sys
from oplora.run.spec import SpecError, validate_spec
out = []
for spec in json.load(sys.stdin):
    try:
        validate_spec(spec)
        out.append("ok")
    except SpecError as e:
        out.append("SpecError: " + "; ".join(e.problems))
print(json.dumps(out))`;
    const r = await execa(VENV_PYTHON, ["-c", code], {
      input: JSON.stringify(accepted.map((a) => a.value)),
      env: { PYTHONPATH: join(REPO, "python") },
    });
    const py = JSON.parse(r.stdout) as string[];
    accepted.forEach((a, i) => {
      expect(py[i], a.what).toBe("ok");
    });
  }, 120_000);

  it("each sweep file is accepted or refused with the SDK's error", () => {
    const verdicts = sweeps.map((m) => ({ ...m, verdict: sweepVerdict(m.value) }));
    expect(verdicts.filter((v) => v.verdict !== "ok").length).toBeGreaterThan(40);
    expect(verdicts.filter((v) => v.verdict === "ok").length).toBeGreaterThan(20);
  });

  it("through the CLI, refused specs and sweep files exit 2, one clear message, nothing written", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-mutations-"));
    const badSpecs = specs.filter((m) => specVerdict(m.value) !== "ok").slice(0, 4);
    const badSweeps = sweeps.filter((m) => sweepVerdict(m.value) !== "ok").slice(0, 4);
    // accepted specs that stay small (a mutation may set steps or sizes to 1e9): they run to the end
    const small = (v: typeof SPEC) =>
      (v.train?.steps ?? 0) <= 10 && (v.matrix?.rows ?? 0) <= 16 && (v.matrix?.cols ?? 0) <= 16;
    const goodSpecs = specs.filter((m) => specVerdict(m.value) === "ok" && small(m.value)).slice(0, 2);
    expect(goodSpecs).toHaveLength(2);
    const good = await Promise.all(
      goodSpecs.map(async (m, i) => {
        const file = join(dir, `good-${i}.json`);
        writeFileSync(file, JSON.stringify(m.value));
        const out = join(dir, `good-out-${i}`);
        return { m, out, r: await cli(["run", file, "--out", out]) };
      }),
    );
    for (const { m, out, r } of good) {
      expect(r.exitCode, `${m.what}\n${r.stderr}`).toBe(0);
      expect(existsSync(join(out, "result.json")), m.what).toBe(true);
    }
    const cases = [
      ...badSpecs.map((m, i) => ({ m, args: (f: string, o: string) => ["run", f, "--out", o], i })),
      ...badSweeps.map((m, i) => ({
        m,
        args: (f: string, o: string) => ["sweep", f, "--out", o],
        i: i + 10,
      })),
    ];
    const runs = await Promise.all(
      cases.map(async ({ m, args, i }) => {
        const file = join(dir, `case-${i}.json`);
        writeFileSync(file, JSON.stringify(m.value));
        const out = join(dir, `out-${i}`);
        return { m, out, r: await cli(args(file, out)) };
      }),
    );
    for (const { m, out, r } of runs) {
      expect(r.exitCode, `${m.what}\n${r.stderr}`).toBe(2);
      expect(r.stderr, m.what).not.toMatch(/Traceback|at .*\.js:\d+/);
      expect(existsSync(out), m.what).toBe(false);
    }
  }, 120_000);
});
