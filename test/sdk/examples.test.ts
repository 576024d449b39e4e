import { join } from "node:path";
import { execa } from "execa";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO, tempRunDir } from "./helpers.js";

// Examples import "oplora" (the package's own exports map -> dist/): build first.
beforeAll(async () => {
  await execa("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: REPO, reject: false });
}, 180_000);

const example = (file: string, args: string[] = []) =>
  execa("node", ["--import", "tsx", join(REPO, "examples", file), ...args], { cwd: REPO, reject: false });

describe("examples", () => {
  it("matrix-factorization.ts runs (LoRA, 30 steps)", async () => {
    const r = await example("matrix-factorization.ts", [tempRunDir(), "30", "lora"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain("relative excess");
  }, 120_000);

  it("sweep.ts runs a 2x2x2 sweep and writes its report", async () => {
    const dir = tempRunDir();
    const r = await example("sweep.ts", [dir, "30"]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.match(/succeeded/g)).toHaveLength(8);
    expect(r.stdout).toMatch(/report: .*index\.html/);
  }, 240_000);

  it("plan.ts runs", async () => {
    const r = await example("plan.ts");
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/r=4: \d+ LoRA params/);
  }, 120_000);
});
