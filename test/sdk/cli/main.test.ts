import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { execa } from "execa";
import { describe, expect, it } from "vitest";
import { specJsonSchemaText } from "../../../sdk/spec/schema.js";
import { REPO, tempRunDir } from "../helpers.js";

const MAIN = join(REPO, "sdk", "cli", "main.ts");
const cli = (args: string[]) =>
  execa("node", ["--import", "tsx", MAIN, ...args], { reject: false, cwd: REPO });

function specFile(spec: unknown): string {
  const dir = tempRunDir("spec");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "spec.json");
  writeFileSync(file, JSON.stringify(spec));
  return file;
}

describe("oplora CLI", () => {
  it("--help lists the commands; each command has --help", async () => {
    const r = await cli(["--help"]);
    expect(r.exitCode).toBe(0);
    for (const name of ["run", "validate", "plan", "schema", "doctor", "demo"])
      expect(r.stdout).toContain(name);
    const run = await cli(["run", "--help"]);
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toContain("--out DIR");
  });

  it("unknown command or option -> exit 2", async () => {
    expect((await cli(["frobnicate"])).exitCode).toBe(2);
    expect((await cli(["run", "--bogus"])).exitCode).toBe(2);
    expect((await cli(["run", "x.json"])).exitCode).toBe(2); // --out missing
  });

  it("schema prints the committed JSON Schema", async () => {
    const r = await cli(["schema"]);
    expect(r.exitCode).toBe(0);
    expect(`${r.stdout}\n`).toBe(specJsonSchemaText());
  });

  it("validate: filled spec (0) or every problem (2)", async () => {
    const ok = await cli(["validate", specFile({ task: "matrix_factorization" })]);
    expect(ok.exitCode).toBe(0);
    expect(JSON.parse(ok.stdout).adapter.kind).toBe("op-lora");
    const bad = await cli([
      "validate",
      specFile({ task: "matrix_factorization", adapter: { kind: "lora", r: -1 } }),
    ]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain("adapter.r: expected a positive integer, got -1");
  });

  it("plan prints each memory term with its formula", async () => {
    const spec = { task: "matrix_factorization", matrix: { rows: 24, cols: 40 }, device: "cpu" };
    const r = await cli(["plan", specFile(spec)]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/trainable_state +\S+ \S+ +trainable parameters x 16/);
    expect(r.stdout).toMatch(/target_matrix +11\.3 KiB +rows x cols x 12/); // 24*40*12 B
    // 24*40*6*4 B of step temporaries, less the (larger) generator gradients' share, then the total
    expect(r.stdout).toMatch(
      /loss_transient +22\.5 KiB +rows x cols x 6.*\n {2}gradients_after_peak +-22\.5 KiB +-min.*\n {2}total /,
    );
    const json = JSON.parse((await cli(["plan", specFile(spec), "--json"])).stdout);
    expect(Object.keys(json.memory_formula).sort()).toEqual(Object.keys(json.memory_bytes).sort());
  }, 60_000);

  it("run with an invalid spec -> exit 2 and no run dir", async () => {
    const out = tempRunDir();
    const r = await cli([
      "run",
      specFile({ task: "matrix_factorization", train: { steps: 0 } }),
      "--out",
      out,
    ]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("train.steps");
    expect(existsSync(out)).toBe(false);
  });

  it("run, end to end (real MF task, LoRA, 32x32, 50 steps): progress lines, summary, exit 0", async () => {
    const out = tempRunDir();
    const spec = {
      task: "matrix_factorization",
      device: "cpu",
      matrix: { rows: 32, cols: 32 },
      adapter: { kind: "lora", r: 4 },
      train: { steps: 50, log_every: 10 },
    };
    const r = await cli(["run", specFile(spec), "--out", out]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain("step 50/50");
    expect(r.stdout).toContain("succeeded: matrix_factorization");
    expect(JSON.parse(readFileSync(join(out, "result.json"), "utf8")).status).toBe("succeeded");
  }, 120_000);

  it("run: r > min(rows, cols) -> exit 2 before anything is written", async () => {
    const out = tempRunDir();
    const spec = {
      task: "matrix_factorization",
      matrix: { rows: 4, cols: 4 },
      adapter: { kind: "lora", r: 6 },
    };
    const r = await cli(["run", specFile(spec), "--out", out]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("adapter.r: rank 6 exceeds min(matrix.rows, matrix.cols) = 4");
    expect(existsSync(out)).toBe(false);
  });

  it("run: --out naming a file, or a path under a file -> exit 2, one line, no traceback", async () => {
    const dir = tempRunDir("out-file");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "a-file");
    writeFileSync(file, "x");
    const spec = specFile({ task: "matrix_factorization", train: { steps: 1 } });
    for (const [out, says] of [
      [file, "is an existing file"],
      [join(file, "sub", "run"), `is under the file ${file}`],
    ] as const) {
      const r = await cli(["run", spec, "--out", out]);
      expect(r.exitCode, out).toBe(2);
      expect(r.stderr.trim().split("\n"), out).toEqual([expect.stringContaining(says)]);
      expect(r.stderr).not.toContain("Traceback");
    }
    expect(readFileSync(file, "utf8")).toBe("x");
  });

  it("sweep: file keys are strict (typo, bad values) and the flags share the schema; exit 2, the field named", async () => {
    const out = tempRunDir();
    const base = { task: "matrix_factorization", matrix: { rows: 8, cols: 8 }, train: { steps: 1 } };
    const cases: [unknown, string][] = [
      [{ base, seed: [5, 6, 7] }, "seed: unknown key (did you mean 'seeds'?)"],
      [{ base, concurrency: 0 }, "concurrency: expected a positive integer, got 0"],
      [{ base, concurrency: -3 }, "concurrency: expected a positive integer, got -3"],
      [{ base, mode: "hot" }, 'mode: expected one of "warm", "cold", got "hot"'],
      [{ base, seeds: "0" }, 'seeds: expected an array, got "0"'],
      [{ base, backend: { kind: "rey" } }, 'backend.kind: expected one of "local", "ray", got "rey"'],
      [{ base, backend: { kind: "ray" } }, "backend.address: required"],
    ];
    for (const [file, says] of cases) {
      const r = await cli(["sweep", specFile(file), "--out", out]);
      expect(r.exitCode, says).toBe(2);
      expect(r.stderr, says).toContain(says);
    }
    const flag = await cli(["sweep", specFile({ base }), "--out", out, "--concurrency", "0"]);
    expect(flag.exitCode).toBe(2);
    expect(flag.stderr).toContain("--concurrency: expected a positive integer, got 0");
    expect(existsSync(out)).toBe(false);
  }, 60_000);
});
