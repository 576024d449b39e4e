/**
 * The report page: one self-contained HTML file (inline CSS, figures and sample grids embedded as base64
 * data URIs, no script, nothing fetched at view time).
 */
import { readFileSync } from "node:fs";
import { extname } from "node:path";
import type { ReportData } from "./data.js";
import type { FigureSpec } from "./figures.js";
import type { MfTable } from "./mf-table.js";
import type { ArmBest } from "./search.js";
import type { ArmSummary, Comparison, Stat } from "./summary.js";

export function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function dataUri(path: string): string {
  const ext = extname(path).toLowerCase();
  const mime =
    ext === ".png"
      ? "image/png"
      : ext === ".svg"
        ? "image/svg+xml"
        : ext === ".webp"
          ? "image/webp"
          : "image/jpeg";
  return `data:${mime};base64,${readFileSync(path).toString("base64")}`;
}

export function fmt(v: unknown): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v)) return String(v);
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : v.toPrecision(4);
  }
  return String(v);
}

function fmtStat(s: Stat | null): string {
  return s ? `${fmt(s.mean)} ± ${fmt(s.std)} (n=${s.n})` : "—";
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1100px;color:#1d232a;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2e8;padding-bottom:4px}
.meta{color:#5b6773;font-size:13px}table{border-collapse:collapse;font-size:12.5px;margin:6px 0;width:100%}
th,td{border:1px solid #dde2e8;padding:4px 7px;text-align:left;vertical-align:top}th{background:#f3f5f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}.ok{color:#1a7f37}.bad{color:#b42318}.dim{color:#8a949e}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:14px}
figure{margin:0;border:1px solid #dde2e8;border-radius:6px;padding:8px;background:#fff}
figure img{width:100%;height:auto;display:block}figcaption{font-size:12px;color:#5b6773;margin-top:4px}
.samples{grid-template-columns:repeat(auto-fill,minmax(220px,1fr))}.samples img{max-width:512px;image-rendering:pixelated}.wrap{overflow-x:auto}code{background:#f3f5f8;padding:1px 4px;border-radius:3px}`;

export interface HtmlInput {
  data: ReportData;
  figures: { spec: FigureSpec; path: string }[];
  comparisons: Comparison[];
  arms: ArmSummary[];
  /** Each arm's best, with a search (else empty). */
  bests: ArmBest[];
  /** Matrix factorisation: the MF vs OP-MF study table (else null). */
  mf: MfTable | null;
  generatedAt: string;
}

export function renderHtml({ data, figures, comparisons, arms, bests, mf, generatedAt }: HtmlInput): string {
  const e = escapeHtml;
  const rows = data.trials.map((t) => t.row);
  const counts = { succeeded: 0, failed: 0, cancelled: 0, pruned: 0, running: 0, pending: 0, not_run: 0 };
  for (const r of rows) counts[r.status]++;
  const countText = Object.entries(counts)
    .map(([status, n]) => `${n} ${status.replace("_", " ")}`)
    .join(", ");
  const compTable = comparisonTable(comparisons);

  const armTable = `<div class="wrap"><table><tr><th>arm</th><th>trials</th><th>succeeded</th><th>final ${e(data.primary ?? "metric")} (mean ± std)</th></tr>
${arms.map((a) => `<tr><td>${e(a.label)}</td><td class="num">${a.n}</td><td class="num">${a.succeeded}</td><td class="num">${fmtStat(a.final)}</td></tr>`).join("\n")}</table></div>`;

  const figHtml = figures.length
    ? `<div class="figs">${figures
        .map(
          (f) =>
            `<figure><img alt="${e(f.spec.title)}" src="${dataUri(f.path)}"><figcaption>${e(f.spec.title)}</figcaption></figure>`,
        )
        .join("\n")}</div>`
    : `<p class="dim">No figures (no succeeded trial with curves or metrics).</p>`;

  const grids = data.arms.flatMap((arm) => {
    const t = arm.trials.find((x) => x.images.length);
    const img = t?.images[t.images.length - 1];
    return img ? [{ arm: arm.label, img }] : [];
  });
  const gridHtml = grids.length
    ? `<h2>Samples</h2><div class="figs samples">${grids
        .map(
          (g) =>
            `<figure><img alt="${e(g.img.label)}" src="${dataUri(g.img.path)}"><figcaption>${e(g.arm)} — ${e(g.img.label)}${g.img.step !== null ? ` (step ${g.img.step})` : ""}</figcaption></figure>`,
        )
        .join("\n")}</div>`
    : "";

  const resultTable = trialTable(rows);

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<link rel="icon" href="data:,"><title>oplora report — ${e(data.task)}</title><style>${CSS}</style></head>
<body>
<h1>oplora sweep report — ${e(data.task)}</h1>
<p class="meta">${e(data.dir)} · ${rows.length} trials: ${e(countText)} · generated ${e(generatedAt)}</p>
${data.search ? searchSection(data.search.objective, bests) : ""}
<h2>LoRA vs OP-LoRA${data.search ? " (each arm at its best)" : ""}</h2>
${compTable}
${mf ? mfSection(mf) : ""}
<h2>Arms</h2>
${armTable}
<h2>Figures</h2>
${figHtml}
${gridHtml}
<h2>Trials</h2>
<p class="meta">Also as <a href="results.csv">results.csv</a> and <a href="results.json">results.json</a>; each trial's run directory is <code>runs/&lt;id&gt;</code>.</p>
${resultTable}
</body></html>
`;
}

/** The MF study table (its markdown: headings, pipe tables, bullets, paragraphs) or why there is none. */
function mfSection(mf: MfTable): string {
  const e = escapeHtml;
  if (!mf.markdown)
    return `<h2>MF vs OP-MF at each arm's best lr</h2><p class="dim">No table: ${e(mf.skipped ?? "")}</p>`;
  const out: string[] = [];
  let table: string[][] = [];
  const flush = () => {
    if (!table.length) return;
    const [head, ...body] = table;
    const cells = (r: string[], tag: string) => r.map((c) => `<${tag}>${e(c)}</${tag}>`).join("");
    out.push(
      `<div class="wrap"><table><tr>${cells(head ?? [], "th")}</tr>${body.map((r) => `<tr>${cells(r, "td")}</tr>`).join("")}</table></div>`,
    );
    table = [];
  };
  for (const line of mf.markdown.split("\n")) {
    if (line.startsWith("|")) {
      const row = line
        .slice(1, -1)
        .split("|")
        .map((c) => c.trim());
      if (!row.every((c) => /^-*$/.test(c))) table.push(row);
      continue;
    }
    flush();
    if (line.startsWith("# ")) out.push(`<h2>${e(line.slice(2))}</h2>`);
    else if (line.startsWith("## ")) out.push(`<h3>${e(line.slice(3))}</h3>`);
    else if (line.startsWith("- ")) out.push(`<p>• ${e(line.slice(2))}</p>`);
    else if (line.trim()) out.push(`<p class="meta">${e(line)}</p>`);
  }
  flush();
  return out.join("\n");
}

/** Each arm's best params and objective, and the edge-of-range warnings. */
function searchSection(objective: string, bests: ArmBest[]): string {
  const e = escapeHtml;
  const params = (p: Record<string, unknown>) =>
    Object.entries(p)
      .map(([k, v]) => `${k}=${fmt(v)}`)
      .join(" ") || "—";
  const warnings = bests.flatMap((b) => b.edgeWarnings);
  return `<h2>Search: each arm's best</h2>
<div class="wrap"><table><tr><th>arm</th><th>best params</th><th>${e(objective)} at the best (search trial)</th>
<th>${e(objective)} over the confirmation seeds (mean ± std)</th><th>trials: complete / pruned / failed</th></tr>
${bests
  .map(
    (b) => `<tr><td>${e(b.study)}</td><td>${e(params(b.params))}</td><td class="num">${fmt(b.searchBest)}</td>
<td class="num">${fmtStat(b.confirmed)}</td><td class="num">${b.trials.complete} / ${b.trials.pruned} / ${b.trials.failed}</td></tr>`,
  )
  .join("\n")}</table></div>
${warnings.map((w) => `<p class="bad edge-warning">Warning: ${e(w)}: widen the range, the optimum may lie outside it.</p>`).join("\n")}`;
}

/** The LoRA vs OP-LoRA table (one row per paired comparison). */
function comparisonTable(comparisons: Comparison[]): string {
  const e = escapeHtml;
  return comparisons.length
    ? `<div class="wrap"><table><tr><th>comparison</th><th>shared setting</th><th>LoRA arm</th><th>OP-LoRA arm</th>
<th>metric</th><th>LoRA final</th><th>OP-LoRA final</th><th>OP − LoRA (paired by seed)</th><th>OP / LoRA</th>
<th>steps to LoRA's final loss: LoRA / OP</th><th>speed-up</th></tr>
${comparisons
  .map(
    (c) => `<tr><td>${e(c.kind)}</td><td>${e(c.context)}</td><td>${e(c.lora)}</td><td>${e(c.opLora)}</td>
<td>${e(c.metric)}</td><td class="num">${fmtStat(c.loraFinal)}</td><td class="num">${fmtStat(c.opFinal)}</td><td class="num">${fmtStat(c.difference)}</td>
<td class="num">${fmt(c.ratio)}</td><td class="num">${fmt(c.stepsLora)} / ${fmt(c.stepsOp)}</td>
<td class="num">${c.speedup === null ? (c.stepsLora !== null ? "never reached" : "—") : `${fmt(c.speedup)}×`}</td></tr>`,
  )
  .join("\n")}</table></div>`
    : `<p class="dim">No LoRA vs OP-LoRA pairs (the sweep has no <code>adapter.kind</code> axis with both kinds).</p>`;
}

/** Every trial: its axes, status, numeric metrics, wall time and error. */
function trialTable(rows: HtmlInput["data"]["trials"][number]["row"][]): string {
  const e = escapeHtml;
  const metricKeys = [
    ...new Set(
      rows.flatMap((r) =>
        Object.entries(r.metrics)
          .filter(([, v]) => typeof v === "number")
          .map(([k]) => k),
      ),
    ),
  ].filter((k) => !["seed", "lr", "steps", "wall_s"].includes(k));
  const axisKeys = [...new Set(rows.flatMap((r) => Object.keys(r.axes)))];

  return `<div class="wrap"><table><tr><th>id</th>${axisKeys.map((k) => `<th>${e(k)}</th>`).join("")}<th>status</th>
${metricKeys.map((k) => `<th>${e(k)}</th>`).join("")}<th>wall s</th><th>error</th></tr>
${rows
  .map(
    (
      r,
    ) => `<tr><td><code>${e(r.id)}</code></td>${axisKeys.map((k) => `<td>${e(fmt(r.axes[k]))}</td>`).join("")}
<td class="${r.status === "succeeded" ? "ok" : "bad"}">${e(r.status)}${r.reused ? " (reused)" : ""}</td>
${metricKeys.map((k) => `<td class="num">${e(fmt(r.metrics[k]))}</td>`).join("")}<td class="num">${fmt(r.wallS)}</td>
<td>${r.error ? e(`${r.error.type}: ${r.error.message}`.slice(0, 300)) : ""}</td></tr>`,
  )
  .join("\n")}</table></div>`;
}
