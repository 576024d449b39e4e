/**
 * The report of a sweep directory: built from a synthetic MF-shaped sweep (no training: spec.json and
 * result.json written by the test, curves chosen so OP-LoRA wins), its figures drawn by matplotlib, its
 * HTML opened in headless Chromium (Debian's /usr/bin/chromium through playwright-core); and a sweep.json
 * alone, its trials pending, running and not run.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { describe, expect, it } from "vitest";
import { loadReportData } from "../../../sdk/report/data.js";
import { writeReport } from "../../../sdk/report/index.js";
import { comparisons } from "../../../sdk/report/summary.js";
import { expandSweep } from "../../../sdk/sweep/expand.js";
import { LOCK } from "../../../sdk/sweep/store.js";
import { manifestTrial, writeSweepManifest } from "../helpers.js";

const CHROMIUM = "/usr/bin/chromium";
// a 2x2 red/blue PNG, as a task's sample grid
const PNG = Buffer.from(
  "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DAwMDAxMDAwMDAAAANHQEDasKb6QAAAABJRU5ErkJggg==",
  "base64",
);

/** A finished sweep: kind x lr x r x 2 seeds; loss(t) = a * exp(-t / tau), OP-LoRA faster and lower. */
function fixture(): string {
  const dir = mkdtempSync(join(tmpdir(), "oplora-report-"));
  const plan = {
    axes: { "adapter.kind": ["lora", "op-lora"], "optimizer.lr": [1e-3, 1e-2], "adapter.r": [2, 4] },
    seeds: [0, 1],
  } as const;
  const trials = expandSweep({ task: "matrix_factorization", train: { steps: 100 } }, plan);
  const manifest = {
    version: 1,
    created_at: "",
    updated_at: "",
    base: { task: "matrix_factorization" },
    plan,
    mode: "warm",
    trials: [] as unknown[],
  };
  for (const t of trials) {
    const op = t.axes["adapter.kind"] === "op-lora";
    const seed = t.axes.seed as number;
    const floor = (op ? 0.01 : 0.05) / (t.axes["adapter.r"] as number) + 0.002 * seed;
    const tau = op ? 10 : 30;
    const steps = Array.from({ length: 11 }, (_, i) => i * 10);
    const loss = steps.map((s) => floor + Math.exp(-s / tau));
    const runDir = join(dir, "runs", t.id);
    mkdirSync(runDir, { recursive: true });
    writeFileSync(join(runDir, "spec.json"), JSON.stringify(t.spec));
    writeFileSync(join(runDir, "grid.png"), PNG);
    writeFileSync(
      join(runDir, "events.ndjson"),
      `${steps.map((s, i) => JSON.stringify({ type: "eval", seq: i, time: 0, step: s, metrics: { cmmd: 50 - s / 10 } })).join("\n")}\n`,
    );
    const metrics = {
      final_loss: loss.at(-1),
      optimal_loss: 0, // so excess_loss (the report's primary metric) is final_loss
      excess_loss: loss.at(-1),
      relative_excess: loss.at(-1),
      seed, // the MF task reports these too: the CSV must not repeat the axis / timing columns
      wall_s: 1.2,
      steps_to_excess: { "0.01": op ? 40 : null },
      loss_curve: steps.map((s, i) => ({ step: s, loss: loss[i] })),
      effective_rank_curve: steps.map((s) => ({ step: s, effective_rank: 1 + s / (op ? 20 : 40) })),
    };
    const result = {
      status: "succeeded",
      task: "matrix_factorization",
      run_dir: runDir,
      metrics,
      artifacts: [{ kind: "grid", path: "grid.png", step: 100, label: "samples" }],
      error: null,
      versions: {},
      device: "cpu",
      timing: { started_at: "", finished_at: "", wall_s: 1.5 },
    };
    writeFileSync(join(runDir, "result.json"), JSON.stringify(result));
    manifest.trials.push(manifestTrial(t, "succeeded"));
  }
  writeFileSync(join(dir, "sweep.json"), JSON.stringify(manifest));
  return dir;
}

describe("report", () => {
  it("a truncated result.json or events.ndjson shows the trial as corrupt (failed), the file and problem named", async () => {
    const dir = fixture();
    const before = await loadReportData(dir);
    expect(before.trials.every((t) => t.row.status === "succeeded")).toBe(true);
    const [a, b] = before.trials.map((t) => t.row.runDir);
    const cut = (path: string) => writeFileSync(path, readFileSync(path, "utf8").slice(0, 40));
    cut(join(a as string, "result.json"));
    cut(join(b as string, "events.ndjson"));
    const after = await loadReportData(dir);
    const [ta, tb] = after.trials;
    expect(ta?.row.status).toBe("failed");
    expect(ta?.row.error?.type).toBe("CorruptRunDir");
    expect(ta?.row.error?.message).toContain(`${join(a as string, "result.json")}: not valid JSON`);
    expect(ta?.row.metrics).toEqual({});
    expect(tb?.row.status).toBe("failed");
    expect(tb?.row.error?.message).toContain(`${join(b as string, "events.ndjson")}:1: not valid JSON`);
    expect(after.trials.slice(2).every((t) => t.row.status === "succeeded")).toBe(true);
  });

  it("pending and running trials keep the store's words while the sweep is live, not_run once none is", async () => {
    const dir = mkdtempSync(join(tmpdir(), "oplora-report-"));
    const statuses = ["pending", "running", "not_run"] as const;
    const plan = { axes: { "adapter.r": [2, 4, 8] } };
    writeSweepManifest(dir, { task: "matrix_factorization" }, plan, [...statuses], true);
    const live = await loadReportData(dir);
    expect(live.trials.map((t) => t.row.status)).toEqual(statuses);
    const report = await writeReport(dir);
    expect(readFileSync(report.html, "utf8")).toContain(
      "3 trials: 0 succeeded, 0 failed, 0 cancelled, 0 pruned, 1 running, 1 pending, 1 not run ·",
    );
    const csv = readFileSync(report.csv, "utf8").trim().split("\n");
    expect(csv.slice(1).map((l) => l.split(",")[2])).toEqual(statuses);
    expect(JSON.parse(readFileSync(report.json, "utf8")).map((r: { status: string }) => r.status)).toEqual(
      statuses,
    );
    // the sweep was killed (no live sweep.lock): what it never ran is not_run, as `oplora runs` says
    rmSync(join(dir, LOCK));
    const dead = await loadReportData(dir);
    expect(dead.trials.map((t) => t.row.status)).toEqual(["not_run", "not_run", "not_run"]);
  });

  const dir = fixture();

  it("pairs LoRA and OP-LoRA arms (same setting, and half rank) with the ratios users care about", async () => {
    const data = await loadReportData(dir);
    expect(data.arms).toHaveLength(8);
    expect(data.primary).toBe("excess_loss"); // = final_loss here (the fixture sets optimal_loss 0)
    const comps = comparisons(data);
    expect(comps.filter((c) => c.kind === "same setting")).toHaveLength(4);
    const half = comps.filter((c) => c.kind === "half rank");
    expect(half).toHaveLength(2); // OP r=2 vs LoRA r=4, per lr
    const c = comps.find(
      (x) => x.kind === "same setting" && x.context.includes("adapter.r=2"),
    ) as (typeof comps)[number];
    expect(c.difference?.n).toBe(2);
    expect(c.difference?.mean).toBeCloseTo(0.01 / 2 + Math.exp(-10) - (0.05 / 2 + Math.exp(-100 / 30)), 9);
    expect(c.speedup).toBeGreaterThan(1);
    expect(c.stepsLora).toBe(100);
  });

  it("writes figures, CSV/JSON tables and a self-contained HTML page that renders in headless Chromium", async () => {
    const report = await writeReport(dir);
    // the trials differ in adapter.r (not only in lr), so they make no MF vs OP-MF study table: it says so
    expect(report.mf?.skipped).toMatch(/differ in|lack/);
    expect(readFileSync(report.html, "utf8")).toContain("No table: ");
    const names = report.figures.map((f) => f.split("/").at(-1));
    expect(names).toEqual(
      expect.arrayContaining([
        "curve-loss.png",
        "curve-effective-rank.png",
        "curve-eval-cmmd.png",
        "vs-optimizer-lr.png",
        "vs-adapter-r.png",
      ]),
    );
    for (const f of report.figures) expect(readFileSync(f).subarray(1, 4).toString()).toBe("PNG");
    const csv = readFileSync(report.csv, "utf8").trim().split("\n");
    expect(csv).toHaveLength(17);
    expect(csv[0]).toMatch(
      /^id,adapter\.kind,optimizer\.lr,adapter\.r,seed,status,reused,metrics\.final_loss/,
    );
    const header = (csv[0] ?? "").split(",");
    expect(new Set(header).size).toBe(header.length); // no column twice (metrics may repeat seed, wall_s)
    expect(JSON.parse(readFileSync(report.json, "utf8"))).toHaveLength(16);
    const html = readFileSync(report.html, "utf8");
    expect(html).not.toMatch(/(src|href)="https?:/);
    expect(html).not.toMatch(/<script/);

    expect(
      existsSync(CHROMIUM),
      `${CHROMIUM} missing: apt-get install -y --no-install-recommends chromium`,
    ).toBe(true);
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
      const errors: string[] = [];
      const requests: string[] = [];
      page.on("console", (m) => {
        if (m.type() === "error") errors.push(m.text());
      });
      page.on("pageerror", (e) => errors.push(String(e)));
      page.on("request", (r) => {
        if (!r.url().startsWith("data:") && !r.url().startsWith("file:")) requests.push(r.url());
      });
      await page.goto(pathToFileURL(report.html).href, { waitUntil: "load" });
      const images = await page.$$eval("img", (imgs) =>
        imgs.map((i) => ({ alt: i.alt, complete: i.complete, width: i.naturalWidth })),
      );
      expect(images.length).toBe(report.figures.length + 8); // figures + one sample grid per arm
      for (const img of images) expect(img, img.alt).toMatchObject({ complete: true });
      for (const img of images) expect(img.width, img.alt).toBeGreaterThan(0);
      expect(await page.textContent("h1")).toContain("matrix_factorization");
      expect(await page.locator("table").count()).toBeGreaterThanOrEqual(3);
      const out = resolve("test-output");
      mkdirSync(out, { recursive: true });
      await page.screenshot({ path: join(out, "report.png"), fullPage: true });
      expect(existsSync(join(out, "report.png"))).toBe(true);
      expect(errors).toEqual([]);
      expect(requests).toEqual([]);
    } finally {
      await browser.close();
    }
  });
});
