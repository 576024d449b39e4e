import { describe, expect, it } from "vitest";
import { Spec } from "../../../sdk/spec/index.js";
import { canonicalJson, specHash } from "../../../sdk/sweep/canonical.js";
import { SweepInvalidError } from "../../../sdk/sweep/errors.js";
import { axisPaths, combinations, expandSweep, type Trial } from "../../../sdk/sweep/expand.js";

const base = { task: "matrix_factorization" as const, matrix: { rows: 16, cols: 16 }, train: { steps: 20 } };

/** A trial's spec, narrowed to the MF task. */
function mf(t: Trial | undefined): Extract<Spec, { task: "matrix_factorization" }> {
  if (t?.spec.task !== "matrix_factorization") throw new Error("not an MF trial");
  return t.spec;
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(SweepInvalidError);
    return (e as SweepInvalidError).problems;
  }
  throw new Error("expected SweepInvalidError");
}

describe("expandSweep", () => {
  it("crosses grid axes, zipped groups and seeds (seeds fastest)", () => {
    const trials = expandSweep(base, {
      axes: { "adapter.r": [2, 4] },
      zip: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [1e-2, 3e-3] },
      seeds: [0, 1, 2],
    });
    expect(trials).toHaveLength(2 * 2 * 3);
    expect(trials[0]?.label).toBe("adapter.r=2 adapter.kind=lora optimizer.lr=0.01 seed=0");
    expect(trials[1]?.axes).toEqual({
      "adapter.r": 2,
      "adapter.kind": "lora",
      "optimizer.lr": 0.01,
      seed: 1,
    });
    expect(mf(trials[3]).adapter).toMatchObject({ kind: "op-lora", r: 2 });
    expect(mf(trials[3]).optimizer.lr).toBe(3e-3);
    expect(axisPaths({ axes: { "adapter.r": [1] }, seeds: [0] })).toEqual(["adapter.r", "seed"]);
  });

  it("ids are the short hash of the validated spec, stable across key order", () => {
    const [t] = expandSweep(base, { seeds: [3] });
    expect(t?.hash).toBe(specHash(Spec.parse({ ...base, seed: 3 })));
    expect(t?.id).toBe(t?.hash.slice(0, 12));
    expect(canonicalJson({ b: 1, a: { d: 2, c: [3, { f: 1, e: 0 }] } })).toBe(
      '{"a":{"c":[3,{"e":0,"f":1}],"d":2},"b":1}',
    );
    const [again] = expandSweep(
      { train: { steps: 20 }, matrix: { cols: 16, rows: 16 }, task: "matrix_factorization" },
      { seeds: [3] },
    );
    expect(again?.id).toBe(t?.id);
  });

  it("an axis over a path the spec lacks fails naming the trial and the path", () => {
    const p = problems(() => expandSweep(base, { axes: { "adapter.rank": [2, 4] } }));
    expect(p[0]).toMatch(
      /^trial 0 \(adapter\.rank=2\): axis 'adapter\.rank' is not a path of the matrix_factorization spec/,
    );
    expect(p).toHaveLength(2);
  });

  it("a value the schema rejects fails naming the trial and the path", () => {
    const p = problems(() => expandSweep(base, { axes: { "optimizer.lr": [1e-3, -1] }, seeds: [0] }));
    expect(p).toEqual([expect.stringMatching(/^trial 1 \(optimizer\.lr=-1 seed=0\): optimizer\.lr: /)]);
    // @ts-expect-error: axis values are typed by their spec path ("dora" is not an adapter kind)
    const k = problems(() => expandSweep(base, { axes: { "adapter.kind": ["lora", "dora"] } }));
    expect(k[0]).toMatch(/^trial 1 \(adapter\.kind=dora\): adapter\.kind: expected one of "lora", "op-lora"/);
  });

  it("checks the plan itself: zipped lengths, empty lists, repeated axes, duplicate trials", () => {
    expect(
      problems(() => combinations({ zip: { "adapter.kind": ["lora"], "optimizer.lr": [1, 2] } }))[0],
    ).toMatch(/equal lengths/);
    expect(problems(() => combinations({ axes: { "adapter.r": [] } }))[0]).toMatch(
      /axes\.adapter\.r: expected a non-empty list/,
    );
    expect(problems(() => combinations({ axes: { seed: [0] }, seeds: [1] }))[0]).toMatch(
      /'seed' is given more than once/,
    );
    expect(problems(() => expandSweep(base, { axes: { "adapter.r": [4, 4] } }))[0]).toMatch(
      /trial 1 .*same spec as trial 0/,
    );
  });

  it("an axis choosing the lora branch drops the base's op-lora-only keys", () => {
    const trials = expandSweep(
      { ...base, adapter: { kind: "op-lora", r: 2, generator: { hidden_dim: 8 } } },
      { axes: { "adapter.kind": ["lora", "op-lora"] } },
    );
    expect(mf(trials[0]).adapter).toEqual({ kind: "lora", r: 2, use_rslora: false, use_dora: false });
    expect(mf(trials[1]).adapter).toMatchObject({ kind: "op-lora", generator: { hidden_dim: 8 } });
  });

  it("an axis inside an object the base leaves to its default starts from the default's kind", () => {
    const trials = expandSweep({ task: "matrix_factorization" }, { axes: { "adapter.r": [2] } });
    expect(mf(trials[0]).adapter).toMatchObject({ kind: "op-lora", r: 2 });
  });
});
