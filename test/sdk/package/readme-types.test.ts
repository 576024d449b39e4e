/**
 * README's TypeScript examples compile in a strict consumer project against the packed package, and the
 * task's type survives from the spec literal to the result (a probe file whose @ts-expect-error lines
 * fail the check when a type is looser than promised).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { REPO } from "../helpers.js";
import { consumerProject, formatDiagnostic, typeCheck } from "./consumer.js";

interface Block {
  line: number;
  code: string;
}

/** Every ```ts block of README.md with the line of its fence. */
function readmeBlocks(): Block[] {
  const lines = readFileSync(join(REPO, "README.md"), "utf8").split("\n");
  const blocks: Block[] = [];
  let open: Block | null = null;
  lines.forEach((text, i) => {
    if (!open && /^```ts\s*$/.test(text)) open = { line: i + 1, code: "" };
    else if (open && /^```\s*$/.test(text)) {
      blocks.push(open);
      open = null;
    } else if (open) open.code += `${text}\n`;
  });
  return blocks;
}

/** Types the README examples rely on, checked both ways. */
const PROBE = `
import { defineSpec, run, sweep, validateSpec, type LlavaSpec, type MatrixFactorizationMetrics } from "oplora";

const mf = validateSpec({ task: "matrix_factorization", train: { steps: 10 } });
const task: "matrix_factorization" = mf.task;
const steps: number = mf.train.steps;
const result = await run(mf, { outDir: "runs/x" });
const loss: number = result.metrics.final_loss;
const metrics: MatrixFactorizationMetrics = result.metrics;
const direct = await run({ task: "matrix_factorization" }, { outDir: "runs/y" });
const status: "succeeded" = direct.status;

const llava: LlavaSpec = defineSpec({
  task: "llava",
  model: { pretrained: "llava-hf/llava-1.5-7b-hf" },
  data: { train_json: "train.json" },
});
// @ts-expect-error a llava spec has no matrix
llava.matrix;
// @ts-expect-error defineSpec checks the literal's shape
defineSpec({ task: "matrix_factorization", matrix: { rows: "many" } });
// @ts-expect-error a spec read from anywhere is the union: no task-specific field without narrowing
validateSpec(JSON.parse("{}") as unknown).matrix;

const table = await sweep({ task: "matrix_factorization" }, { outDir: "sweeps/x", seeds: [0] });
const first = table.rows[0];
// @ts-expect-error rows[0] may be missing under noUncheckedIndexedAccess
first.status;
console.log(task, steps, loss, metrics, status, llava, first?.metrics.final_loss);
`;

describe("README TypeScript in a strict consumer project (packed package)", () => {
  let dir = "";
  beforeAll(() => {
    dir = consumerProject();
  });

  it("type-checks every ```ts block and the typing probe", () => {
    const blocks = readmeBlocks();
    expect(blocks.length).toBeGreaterThanOrEqual(3);
    const files = blocks.map((b) => {
      const file = join(dir, `readme-line-${b.line}.ts`);
      // Each block is its own module (top-level await needs one); a block with no import is still one.
      writeFileSync(file, `${b.code}\nexport {};\n`);
      return file;
    });
    const probe = join(dir, "probe.ts");
    writeFileSync(probe, PROBE);
    const errors = typeCheck(dir, [...files, probe]).map((d) =>
      formatDiagnostic(d).replace(/^.*\/readme-line-(\d+)\.ts/, "README.md ```ts block at line $1, at"),
    );
    expect(errors, errors.join("\n")).toEqual([]);
  });
});
