/**
 * A matrix-factorisation sweep's MF vs OP-MF table: each arm at its best lr, both arms at every shared lr,
 * steps to each threshold with their bounds. The aggregation has one owner, the study task's Python code
 * (`python -m oplora.tasks.matrix_factorization.study OUT RUN...`): `npm run demo`'s table and a sweep's
 * report are computed by the same functions. The task-generic arm statistics stay in summary.ts.
 *
 * Written to `<report>/mf-study/table.{md,json}`; `skipped` says why a sweep's runs make no such table
 * (e.g. they differ in r, not only in lr, or one arm is missing).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type PythonOptions, runModule } from "../bridge/python.js";
import type { ReportData } from "./data.js";

export interface MfTable {
  dir: string;
  /** table.md, null when skipped. */
  markdown: string | null;
  skipped: string | null;
}

/** The table for a matrix-factorisation grid sweep (null for other tasks, searches, or no succeeded run). */
export async function mfTable(
  data: ReportData,
  outDir: string,
  options: PythonOptions = {},
): Promise<MfTable | null> {
  if (data.task !== "matrix_factorization" || data.search) return null;
  const runs = data.trials.filter((t) => t.row.status === "succeeded").map((t) => t.row.runDir);
  if (!runs.length) return null;
  const dir = join(outDir, "mf-study");
  await runModule("oplora.tasks.matrix_factorization.study", [dir, ...runs], options);
  const out = JSON.parse(readFileSync(join(dir, "table.json"), "utf8")) as { skipped?: string };
  if (out.skipped) return { dir, markdown: null, skipped: out.skipped };
  return { dir, markdown: readFileSync(join(dir, "table.md"), "utf8"), skipped: null };
}
