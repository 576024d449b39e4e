import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { pythonEnv } from "../../../sdk/bridge/python.js";
import { SpecInvalidError } from "../../../sdk/errors.js";
import type { SpecInput } from "../../../sdk/spec/index.js";
import { specJsonSchemaText } from "../../../sdk/spec/schema.js";
import { validateSpec } from "../../../sdk/spec/validate.js";
import { REPO, tempRunDir, VENV_PYTHON } from "../helpers.js";

function issuesOf(input: unknown): string[] {
  try {
    validateSpec(input);
  } catch (e) {
    if (e instanceof SpecInvalidError) return e.issues;
    throw e;
  }
  throw new Error("expected SpecInvalidError");
}

describe("validateSpec", () => {
  it("fills defaults", () => {
    const spec = validateSpec({ task: "matrix_factorization" });
    expect(spec.task).toBe("matrix_factorization");
    if (spec.task !== "matrix_factorization") return;
    expect(spec.adapter).toMatchObject({ kind: "op-lora", r: 8, generator: { hidden_dim: 32 } });
  });

  it("lists every problem as `path: message` with the expected and the given value", () => {
    const issues = issuesOf({
      task: "matrix_factorization",
      seed: -2,
      device: "gpu",
      matrix: { rows: 1.5, cols: 0 },
      adapter: { kind: "lora", r: -1, lora_alpah: 3 },
      thresholds: [],
    });
    expect(issues).toEqual([
      "seed: expected a non-negative integer, got -2",
      "device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', got \"gpu\"",
      "matrix.rows: expected an integer, got 1.5",
      "matrix.cols: expected a positive integer, got 0",
      "adapter.r: expected a positive integer, got -1",
      "adapter.lora_alpah: unknown key (did you mean 'lora_alpha'?)",
      "thresholds: expected at least 1 item(s), got []",
    ]);
  });

  it("names the discriminator's allowed values", () => {
    expect(issuesOf({ task: "nope" })).toEqual([
      expect.stringMatching(/^task: expected one of "matrix_factorization", .*got "nope"$/),
    ]);
    expect(issuesOf({ task: "matrix_factorization", adapter: { kind: "x" } })).toEqual([
      'adapter.kind: expected one of "lora", "op-lora", got "x"',
    ]);
    expect(issuesOf(5)).toEqual(["(spec): expected an object, got 5"]);
  });
});

describe("JSON Schema", () => {
  it("the committed python/oplora/schema/spec.schema.json matches the zod schemas (run `npm run schema`)", () => {
    const committed = readFileSync(join(REPO, "python", "oplora", "schema", "spec.schema.json"), "utf8");
    expect(committed === specJsonSchemaText(), "spec.schema.json is stale: run `npm run schema`").toBe(true);
  });

  it("Python's validator accepts the SDK's filled specs and fills the same defaults", async () => {
    const specs: SpecInput[] = [
      { task: "matrix_factorization" },
      {
        task: "matrix_factorization",
        adapter: { kind: "lora", r: 4, lora_alpha: 8 },
        optimizer: { name: "sgd" },
      },
      { task: "matrix_factorization_study", spectra: ["gaussian"], seeds: [3] },
    ];
    const dir = tempRunDir("specs");
    await execa("mkdir", ["-p", dir]);
    for (const [i, input] of specs.entries()) {
      const filled = validateSpec(input);
      for (const [name, spec] of [
        ["raw", input],
        ["filled", filled],
      ] as const) {
        const file = join(dir, `${i}-${name}.json`);
        writeFileSync(file, JSON.stringify(spec));
        const r = await execa(VENV_PYTHON, ["-m", "oplora", "validate", file], { env: pythonEnv() });
        expect(JSON.parse(r.stdout), `${name} spec ${i}`).toEqual(filled);
      }
    }
  }, 60_000);

  it("MF cross-field check: r > min(rows, cols) is refused with the field named", () => {
    expect(
      issuesOf({
        task: "matrix_factorization",
        matrix: { rows: 4, cols: 6 },
        adapter: { kind: "lora", r: 5 },
      }),
    ).toEqual(["adapter.r: rank 5 exceeds min(matrix.rows, matrix.cols) = 4, got 5"]);
    expect(
      validateSpec({
        task: "matrix_factorization",
        matrix: { rows: 4, cols: 6 },
        adapter: { kind: "lora", r: 4 },
      }),
    ).toMatchObject({ adapter: { r: 4 } });
    expect(issuesOf({ task: "matrix_factorization_study", matrix: { rows: 8, cols: 8 }, r: 9 })).toEqual([
      "r: rank 9 exceeds min(matrix.rows, matrix.cols) = 8, got 9",
    ]);
  });

  it("MF refuses DoRA with the reason, the same words as Python's validate", async () => {
    const spec = { task: "matrix_factorization", adapter: { kind: "op-lora", use_dora: true } };
    const issues = issuesOf(spec);
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(
      /^adapter\.use_dora: matrix factorisation cannot use DoRA: .*column norm.*, got true$/,
    );
    const file = tempRunDir("mf-dora.json");
    writeFileSync(file, JSON.stringify(spec));
    const r = await execa(VENV_PYTHON, ["-m", "oplora", "validate", file], {
      env: pythonEnv(),
      reject: false,
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain(issues[0]);
    expect(
      validateSpec({
        task: "text_to_image",
        model: { pretrained: "runwayml/stable-diffusion-v1-5" },
        data: { folder: "images" },
        adapter: { kind: "op-lora", use_dora: true },
      }),
    ).toMatchObject({ adapter: { use_dora: true, generator: { magnitude: "direct" } } });
  }, 60_000);

  it("a number too large for a double (1e400) is named as such, not 'got null'", () => {
    const issues = issuesOf(JSON.parse('{"task": "matrix_factorization", "optimizer": {"lr": 1e400}}'));
    expect(issues).toHaveLength(1);
    expect(issues[0]).toMatch(/^optimizer\.lr: Infinity is not a finite number .*1e400/);
    expect(issues[0]).not.toContain("null");
  });
});
