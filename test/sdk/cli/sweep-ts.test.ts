/**
 * `oplora sweep SWEEP.ts` through the built CLI (dist/, from `npm run build`): a TypeScript sweep file is
 * loaded with tsx, its trials run (tiny 16x16 matrix factorisation, 20 steps), and a bad axis is refused.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO } from "../helpers.js";

const MAIN = join(REPO, "dist", "sdk", "cli", "main.js");
const cli = (args: string[]) => execa("node", [MAIN, ...args], { reject: false, cwd: REPO, all: true });

/** A sweep config as a user writes it: TypeScript (type annotations tsx must strip), a default export. */
function sweepFile(dir: string, name: string, axis: string): string {
  const file = join(dir, name);
  writeFileSync(
    file,
    `type Kind = "lora" | "op-lora";
const kinds: Kind[] = ["lora", "op-lora"];
export default {
  base: {
    task: "matrix_factorization",
    device: "cpu",
    matrix: { rows: 16, cols: 16 },
    adapter: { kind: "op-lora", r: 2, generator: { embedding_dim: 8, hidden_dim: 8 } },
    train: { steps: 20, log_every: 10 },
  },
  axes: { ${JSON.stringify(axis)}: kinds },
  seeds: [0] as number[],
};
`,
  );
  return file;
}

describe("oplora sweep SWEEP.ts (built CLI)", () => {
  let dir: string;
  beforeAll(() => {
    if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: run \`npm run build\` first`);
    dir = mkdtempSync(join(tmpdir(), "oplora-sweep-ts-"));
  });

  it("loads the .ts file and runs its two trials", async () => {
    const out = join(dir, "out");
    const r = await cli(["sweep", sweepFile(dir, "sweep.ts", "adapter.kind"), "--out", out, "--no-report"]);
    expect(r.exitCode, r.all).toBe(0);
    const manifest = JSON.parse(readFileSync(join(out, "sweep.json"), "utf8"));
    expect(manifest.trials).toHaveLength(2);
    expect(manifest.trials.map((t: { status: string }) => t.status)).toEqual(["succeeded", "succeeded"]);
    expect(
      manifest.trials.map((t: { axes: Record<string, unknown> }) => t.axes["adapter.kind"]).sort(),
    ).toEqual(["lora", "op-lora"]);
    expect(r.all).toContain("2 succeeded, 0 failed");
  });

  it("an axis over a path the spec does not have -> exit 2, the path named, nothing run", async () => {
    const out = join(dir, "bad-out");
    const r = await cli([
      "sweep",
      sweepFile(dir, "bad.ts", "adapter.no_such_field"),
      "--out",
      out,
      "--no-report",
    ]);
    expect(r.exitCode, r.all).toBe(2);
    expect(r.stderr).toContain("invalid sweep");
    expect(r.stderr).toContain("adapter.no_such_field");
    expect(existsSync(join(out, "sweep.json"))).toBe(false);
  });
});
