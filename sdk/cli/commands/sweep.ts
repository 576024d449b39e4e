import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { writeReport } from "../../report/index.js";
import type { SpecInput } from "../../spec/index.js";
import { formatIssues } from "../../spec/validate.js";
import type { SweepPlan } from "../../sweep/expand.js";
import { SweepBackend } from "../../sweep/ray.js";
import type { SearchBlockInput } from "../../sweep/search-block.js";
import { type SweepOptions, sweep } from "../../sweep/sweep.js";
import { type Command, EXIT, parseCommandArgs, readJsonFile, UsageError } from "../command.js";
import { SweepProgress } from "../sweep-progress.js";

const HELP = `usage: oplora sweep SWEEP.json|SWEEP.ts [--out DIR] [--concurrency N] [--mode warm|cold]
                    [--devices 0,1,...] [--backend local|ray] [--ray-address HOST:PORT]
                    [--fail-fast] [--no-report]

Run a sweep: SWEEP.json is {"base": SPEC, "axes": {"adapter.kind": ["lora", "op-lora"], ...},
"zip": {...} | [{...}], "seeds": [0, 1], "outDir"?, "concurrency"?, "mode"?, "backend"?, "search"?}; a .ts file
default-exports the same object. --backend ray (or --ray-address, or "backend": {"kind": "ray", "address":
"HOST:PORT"} in the file) runs each trial as a Ray task on that cluster (needs the oplora[ray] extra;
check the cluster first with \`oplora doctor --ray HOST:PORT\`); the default runs trials on this machine. Trials already succeeded in DIR are skipped; failed ones run again. Ctrl-C cancels every
running trial and keeps the finished ones. With "search": {"space": {"optimizer.lr": {"low": 1e-4,
"high": 1, "log": true}}, "trials": 16, "objective": "final_loss", ...} each cell of the axes product is
tuned by an Optuna study (SQLite DIR/search.db; rerunning resumes it), then its best is re-run with
"confirmSeeds". Ends with a report in DIR/report/ (unless --no-report).
Exit 0 when every trial succeeded, 1 when some failed, 2 when the sweep file, an axis or a trial's spec is
invalid (nothing runs), 130 when cancelled.`;

const Axes = z.record(z.string(), z.array(z.unknown()).min(1));

/** Every key of a sweep file (and of the sweep flags): unknown keys refused, each field named. */
export const SweepFileSchema = z.strictObject({
  base: z.record(z.string(), z.unknown()),
  axes: Axes.optional(),
  zip: z.union([Axes, z.array(Axes)]).optional(),
  seeds: z.array(z.int().nonnegative()).min(1).optional(),
  outDir: z.string().min(1).optional(),
  concurrency: z.int().positive().optional(),
  mode: z.enum(["warm", "cold"]).optional(),
  devices: z.array(z.string().min(1)).optional(),
  failFast: z.boolean().optional(),
  backend: SweepBackend.optional(),
  // checked field by field when the sweep plans its search (sdk/sweep/search-block.ts)
  search: z.unknown().optional(),
});

export type SweepFile = z.infer<typeof SweepFileSchema> &
  SweepPlan & { base: SpecInput; search?: SearchBlockInput };

const SweepFlagsSchema = SweepFileSchema.pick({ concurrency: true, mode: true, devices: true });

/** Parse a sweep file's object strictly; problems -> UsageError naming `where` and each field. */
export function parseSweepFile(input: unknown, where: string): SweepFile {
  const parsed = SweepFileSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) {
    const lines = formatIssues(parsed.error.issues, SweepFileSchema, input);
    throw new UsageError(`${where}: invalid sweep file:\n${lines.map((l) => `  - ${l}`).join("\n")}`);
  }
  return parsed.data as SweepFile;
}

async function loadSweepFile(path: string): Promise<SweepFile> {
  if (/\.[cm]?ts$/.test(path)) {
    // .ts configs go through tsx (a dev dependency): without it, use JSON
    let mod: { default?: unknown };
    try {
      const api = (await import("tsx/esm/api")) as {
        tsImport: (p: string, parent: string) => Promise<{ default?: unknown }>;
      };
      mod = await api.tsImport(pathToFileURL(resolve(path)).href, import.meta.url);
    } catch (e) {
      throw new UsageError(`cannot load ${path}: ${(e as Error).message} (a .ts sweep needs tsx installed)`);
    }
    const cfg = (mod.default as { default?: unknown } | undefined)?.default ?? mod.default;
    if (!cfg || typeof cfg !== "object")
      throw new UsageError(`${path}: expected a default export {base, axes, ...}`);
    return parseSweepFile(cfg, path);
  }
  const cfg = readJsonFile(path, "SWEEP.json");
  if (!cfg || typeof cfg !== "object" || !("base" in cfg))
    throw new UsageError(`${path}: expected {"base": SPEC, "axes": {...}}`);
  return parseSweepFile(cfg, path);
}

/** Run a sweep in the terminal with progress and Ctrl-C handling; returns the exit code. */
export async function runSweepCli(
  base: SpecInput,
  options: Omit<SweepOptions, "signal">,
  report: boolean,
): Promise<number> {
  const controller = new AbortController();
  const onSigint = () => {
    process.stderr.write("\noplora: cancelling the sweep (finished trials are kept)...\n");
    controller.abort();
  };
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", onSigint);
  try {
    const handle = sweep(base, { ...options, signal: controller.signal });
    const progress = new SweepProgress(process.stderr);
    for await (const ev of handle) progress.event(ev);
    const results = await handle;
    if (report && results.counts.succeeded > 0) {
      const r = await writeReport(results.dir, { python: options.python });
      process.stdout.write(`report: ${r.html}\n`);
    }
    if (results.stopped && controller.signal.aborted) return EXIT.cancelled;
    return results.counts.failed > 0 || results.counts.not_run > 0 ? EXIT.failed : EXIT.ok;
  } finally {
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigint);
  }
}

/** The sweep flags, through the sweep file's own schema (so a flag and a file key refuse the same values). */
export function parseSweepFlags(values: Record<string, string | boolean | undefined>) {
  const input = {
    ...(values.concurrency !== undefined && { concurrency: Number(values.concurrency) }),
    ...(values.mode !== undefined && { mode: values.mode }),
    ...(typeof values.devices === "string" && { devices: values.devices.split(",").map((s) => s.trim()) }),
  };
  const parsed = SweepFlagsSchema.safeParse(input, { reportInput: true });
  if (!parsed.success) {
    const lines = formatIssues(parsed.error.issues, SweepFlagsSchema, input);
    throw new UsageError(lines.map((l) => `--${l}`).join("\n"));
  }
  const kind = values.backend ?? (values["ray-address"] !== undefined ? "ray" : undefined);
  if (kind !== undefined && kind !== "local" && kind !== "ray")
    throw new UsageError(`--backend: expected local or ray, got ${kind}`);
  const address = values["ray-address"] ?? (kind === "ray" ? process.env.RAY_ADDRESS : undefined);
  if (kind === "local" && address !== undefined)
    throw new UsageError("--ray-address: only with --backend ray");
  if (kind === "ray" && (typeof address !== "string" || !address))
    throw new UsageError(
      '--backend ray: needs --ray-address HOST:PORT (or env RAY_ADDRESS; "auto" on a node of the cluster)',
    );
  const backend: SweepBackend | undefined =
    kind === "ray" ? { kind, address: address as string } : kind === "local" ? { kind } : undefined;
  return { ...parsed.data, backend };
}

export const SWEEP_FLAGS = {
  out: { type: "string", short: "o" },
  concurrency: { type: "string", short: "j" },
  mode: { type: "string" },
  devices: { type: "string" },
  backend: { type: "string" },
  "ray-address": { type: "string" },
  "fail-fast": { type: "boolean" },
  "no-report": { type: "boolean" },
} as const;

export const sweepCommand: Command = {
  name: "sweep",
  summary: "run a sweep (axes over spec paths x seeds) into a run store, then report",
  async run(argv) {
    const args = parseCommandArgs(argv, SWEEP_FLAGS, HELP);
    if (!args) return EXIT.ok;
    const [file] = args.positionals;
    if (!file) throw new UsageError(`missing SWEEP.json\n\n${HELP}`);
    const cfg = await loadSweepFile(file);
    const flags = parseSweepFlags(args.values);
    const outDir = (args.values.out as string | undefined) ?? cfg.outDir;
    if (!outDir) throw new UsageError("missing --out DIR (or outDir in the sweep file)");
    return runSweepCli(
      cfg.base,
      {
        ...(cfg.axes && { axes: cfg.axes }),
        ...(cfg.zip && { zip: cfg.zip }),
        ...(cfg.seeds && { seeds: cfg.seeds }),
        outDir,
        concurrency: flags.concurrency ?? cfg.concurrency,
        mode: flags.mode ?? cfg.mode,
        devices: flags.devices ?? cfg.devices,
        failFast: Boolean(args.values["fail-fast"]) || cfg.failFast,
        backend: flags.backend ?? cfg.backend,
        search: cfg.search,
      },
      !args.values["no-report"],
    );
  },
};
