import { relative } from "node:path";
import {
  listRuns,
  RUN_LIST_STATUSES,
  type RunArm,
  type RunDetails,
  type RunEntry,
  type RunListStatus,
  showRun,
} from "../../runs.js";
import { type Command, EXIT, parseCommandArgs, UsageError } from "../command.js";
import { clock, formatNumber } from "../format.js";

const RUNS_HELP = `usage: oplora runs DIR [--task TASK] [--status STATUS] [--json]

Every run under DIR (plain runs and sweep trials, any depth), newest first: task, arm, status, key
metrics, wall time, age, path; a failed run's error (type and first line) on the line below. STATUS: ${RUN_LIST_STATUSES.join(", ")}. A folder with run files but no
spec.json (not_a_run) or with an unreadable or invalid result.json (corrupt) is listed with its problem.
A sweep trial that has not started is listed from the sweep's manifest: pending while the sweep runs,
not_run once it ended without running it. --json prints the listRuns() array. Exit 2 when DIR is not a
directory.`;

const SHOW_HELP = `usage: oplora show RUN [--json]

One run: its status, key and scalar metrics, error (when it failed), artifacts (kind, path, size, whether
the file exists) and spec. A sweep trial that has not started (no spec.json yet) shows its sweep label and
axes, its status from the manifest (pending while the sweep runs, else not_run) and the spec it will run.
--json prints the showRun() object. Exit 2 when RUN is not a run directory; exit 1 when its result.json or
events.ndjson is corrupt (what can be read is printed, the problem goes to stderr).`;

/** `lora r=4`, `op-lora r=8 alpha=16 rslora dora`; `-` without an adapter. */
export function armText(arm: RunArm | null): string {
  if (!arm) return "-";
  const parts = [arm.kind];
  if (arm.r !== null) parts.push(`r=${arm.r}`);
  if (arm.lora_alpha !== null) parts.push(`alpha=${arm.lora_alpha}`);
  if (arm.use_rslora) parts.push("rslora");
  if (arm.use_dora) parts.push("dora");
  return parts.join(" ");
}

/** Seconds as `45s`, `12m`, `5h`, `3d`. */
function ageText(seconds: number): string {
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

function pathText(path: string): string {
  const rel = relative(process.cwd(), path);
  return rel && !rel.startsWith("..") ? rel : path;
}

function metricsText(metrics: Record<string, unknown>): string {
  const parts = Object.entries(metrics).map(([k, v]) => `${k}=${formatNumber(v)}`);
  return parts.join(" ") || "-";
}

/** The table: one row per run, its problem or a failed run's error (if any) on the line below. */
function runsTable(entries: RunEntry[]): string {
  const header = ["TASK", "ARM", "STATUS", "METRICS", "WALL", "AGE", "TRIAL", "PATH"];
  const rows = entries.map((e) => [
    e.task ?? "-",
    armText(e.arm),
    e.status,
    metricsText(e.metrics),
    e.wallS === null ? "-" : clock(e.wallS),
    ageText(e.ageS),
    e.sweep ? `${e.sweep.name}: ${e.sweep.label ?? e.runId}` : "-",
    pathText(e.path),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] as string).length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] as number)))
      .join("  ")
      .trimEnd();
  const out = [line(header)];
  rows.forEach((r, i) => {
    out.push(line(r));
    const e = entries[i] as RunEntry;
    if (e.problem) out.push(`  ! ${e.problem}`);
    if (e.error) out.push(`  ! ${e.error.type}: ${e.error.message.split("\n")[0]}`);
  });
  return `${out.join("\n")}\n`;
}

function statusFlag(v: unknown): RunListStatus | undefined {
  if (v === undefined) return undefined;
  if (!(RUN_LIST_STATUSES as readonly unknown[]).includes(v))
    throw new UsageError(`--status: expected one of ${RUN_LIST_STATUSES.join(", ")}, got ${String(v)}`);
  return v as RunListStatus;
}

export const runsCommand: Command = {
  name: "runs",
  summary: "list the runs and sweep trials under a folder, newest first",
  async run(argv) {
    const flags = {
      task: { type: "string" },
      status: { type: "string" },
      json: { type: "boolean" },
    } as const;
    const args = parseCommandArgs(argv, flags, RUNS_HELP);
    if (!args) return EXIT.ok;
    const [dir, ...extra] = args.positionals;
    if (!dir || extra.length) throw new UsageError(`expected one DIR\n\n${RUNS_HELP}`);
    const entries = listRuns(dir, {
      task: args.values.task as string | undefined,
      status: statusFlag(args.values.status),
    });
    if (args.values.json) process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
    else if (!entries.length) process.stdout.write(`no runs under ${dir}\n`);
    else process.stdout.write(runsTable(entries));
    return EXIT.ok;
  },
};

function bytesText(n: number | null): string {
  if (n === null) return "missing";
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB"];
  let x = n / 1024;
  let u = 0;
  while (x >= 1024 && u < units.length - 1) {
    x /= 1024;
    u++;
  }
  return `${x.toFixed(1)} ${units[u]}`;
}

function keyValues(metrics: Record<string, unknown>): string[] {
  const width = Math.max(0, ...Object.keys(metrics).map((k) => k.length));
  const lines = Object.entries(metrics).map(
    ([k, v]) => `  ${k.padEnd(width)}  ${typeof v === "number" ? formatNumber(v) : String(v)}`,
  );
  return lines.length ? lines : ["  -"];
}

export const showCommand: Command = {
  name: "show",
  summary: "one run: status, metrics, error, artifacts and spec",
  async run(argv) {
    const args = parseCommandArgs(argv, { json: { type: "boolean" } }, SHOW_HELP);
    if (!args) return EXIT.ok;
    const [dir, ...extra] = args.positionals;
    if (!dir || extra.length) throw new UsageError(`expected one RUN\n\n${SHOW_HELP}`);
    const d = showRun(dir);
    process.stdout.write(args.values.json ? `${JSON.stringify(d, null, 2)}\n` : showText(d));
    // a corrupt run is printed (spec, status) but is not a good answer: a script must see it failed
    if (d.entry.status !== "corrupt") return EXIT.ok;
    process.stderr.write(`oplora: ${d.entry.problem}\n`);
    return EXIT.failed;
  },
};

function showText(d: RunDetails): string {
  const e = d.entry;
  const lines = [
    `run      ${e.path}`,
    `task     ${e.task ?? "-"}`,
    `arm      ${armText(e.arm)}`,
    `status   ${e.status}`,
    ...(e.problem ? [`problem  ${e.problem}`] : []),
    ...(d.error ? [`error    ${d.error.type}: ${d.error.message}`] : []),
    ...(e.sweep ? [`sweep    ${e.sweep.name}: ${e.sweep.label ?? e.runId}`] : []),
    `wall     ${e.wallS === null ? "-" : clock(e.wallS)}`,
    `age      ${ageText(e.ageS)} (${e.modifiedAt})`,
    "",
    "metrics",
    ...keyValues(d.metrics),
    "",
    "artifacts",
    ...d.artifacts.map(
      (a) => `  ${a.kind.padEnd(14)}  ${a.path}${a.label ? ` (${a.label})` : ""}  ${bytesText(a.bytes)}`,
    ),
    ...(d.artifacts.length ? [] : ["  -"]),
    "",
    "spec",
    JSON.stringify(d.spec, null, 2),
  ];
  return `${lines.join("\n")}\n`;
}
