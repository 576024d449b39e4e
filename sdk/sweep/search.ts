/**
 * A sweep's search phase: one Optuna study per cell of the axes product, driven from here.
 *
 *   SearchProcess   `python -m oplora search` (run/search.py): open / ask / report / tell over stdin + fd 3
 *   runStudies      per study: ask for trials while fewer than `trials` are done, run each on a lane (the
 *                   sweep's Lane contract, any backend), report every step's `tailLoss` (the mean loss of
 *                   the last TAIL_STEPS steps), cancel a trial the pruner stops after the cell's
 *                   `warmupSteps` (recorded `pruned` with the steps it ran), tell the outcome
 *
 * The studies live in SWEEP/search.db (Optuna's RDB storage): a killed search resumes where it was. A trial
 * whose run directory already holds a succeeded result for the same spec is told from it, not re-run.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { PythonProcess } from "../bridge/process.js";
import type { RunEvent } from "../events.js";
import { TAIL_STEPS } from "../metrics.js";
import { type RunResult, scalarMetrics } from "../result.js";
import { writeFileAtomic } from "../run-dir.js";
import type { SpecInput } from "../spec/index.js";
import { type Trial, trialFor } from "./expand.js";
import type { Lane, TrialOutcome } from "./lanes.js";
import { atEdge, type SearchBlock, type SearchCell } from "./search-block.js";
import { clearTrialDir, reusableResult, trialDir } from "./store.js";
import type { TrialRow } from "./sweep.js";

export const SEARCH_DB = "search.db";
/** The search's results as JSON beside the database (what the report reads). */
export const SEARCH_JSON = "search.json";

export type SearchTrialState = "complete" | "pruned" | "fail" | "running" | "waiting";

/** One trial of a study, as the database holds it. */
export interface SearchTrial {
  number: number;
  state: SearchTrialState;
  params: Record<string, unknown>;
  /** The objective (complete trials), null otherwise. */
  objective: number | null;
  /** Optimizer steps the trial ran (the budget when it completed, fewer when pruned). */
  steps: number | null;
  /** The trial's run id (its directory under runs/), null for one never started here. */
  runId: string | null;
}

export interface StudyResult {
  name: string;
  axes: Record<string, unknown>;
  trials: SearchTrial[];
  best: { number: number; params: Record<string, unknown>; objective: number } | null;
  /** Searched params whose best value lies within 5% of an edge of its range. */
  edgeWarnings: string[];
}

interface RawTrial {
  number: number;
  state: string;
  params: Record<string, unknown>;
  value: number | null;
  attrs: Record<string, unknown>;
}

/** The `python -m oplora search` process: one request at a time, replies matched by id. */
export class SearchProcess {
  private readonly proc: PythonProcess;
  private seq = 0;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();
  private chain: Promise<unknown> = Promise.resolve();

  constructor(python: string, env: Record<string, string | undefined> | undefined) {
    this.proc = new PythonProcess({
      python,
      args: ["-m", "oplora", "search"],
      env: { ...env, OPLORA_SEARCH_FD: "3" },
      detached: true,
      onMessage: (m) => {
        const msg = m as Record<string, unknown>;
        const reply = this.waiting.get(msg.reply as number);
        if (reply) reply(msg);
      },
    });
    void this.proc.exit.then(() => {
      for (const r of this.waiting.values()) r({ error: `search process exited: ${this.proc.stderr}` });
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  /** Send one command; requests are serialised (the process answers in order). */
  request<T>(cmd: string, body: Record<string, unknown>): Promise<T> {
    const next = this.chain.then(
      () =>
        new Promise<T>((resolve, reject) => {
          if (!this.proc.alive) return reject(new Error(`search process is gone: ${this.proc.stderr}`));
          const id = this.seq++;
          this.waiting.set(id, (msg) => {
            this.waiting.delete(id);
            if (typeof msg.error === "string") reject(new Error(`search ${cmd}: ${msg.error}`));
            else resolve(msg as T);
          });
          this.proc.stdin.write(`${JSON.stringify({ id, cmd, ...body })}\n`);
        }),
    );
    this.chain = next.catch(() => undefined);
    return next;
  }

  async close(): Promise<void> {
    this.proc.stdin.end();
    await this.proc.waitOrKill(5_000);
  }
}

export interface StudyContext {
  base: SpecInput;
  block: SearchBlock;
  dir: string;
  lanes: Lane[];
  signal: AbortSignal;
  search: SearchProcess;
  /** A trial is about to run (or be reused): returns the sweep's own record of it. */
  onStart: (trial: Trial) => Trial;
  onEvent: (trial: Trial, event: RunEvent) => void;
  onDone: (
    trial: Trial,
    status: "succeeded" | "failed" | "pruned" | "cancelled",
    outcome: TrialOutcome,
    reused: boolean,
  ) => Promise<void>;
}

/**
 * The value a trial reports at each step: the mean of the losses logged in the last TAIL_STEPS steps (with
 * `log_every` 1, the trial's `tail_loss` were it to end there), steadier than one batch's loss.
 * Returns a function taking each step's (step, loss) and giving that mean.
 */
export function tailLoss(): (step: number, loss: number) => number {
  const recent: { step: number; loss: number }[] = [];
  return (step, loss) => {
    recent.push({ step, loss });
    while ((recent[0]?.step ?? step) <= step - TAIL_STEPS) recent.shift();
    return recent.reduce((a, r) => a + r.loss, 0) / recent.length;
  };
}

/** Run one trial of a study on `lane`: reuse a finished run, else run it, pruning on the study's word. */
async function runOne(ctx: StudyContext, cell: SearchCell, lane: Lane): Promise<void> {
  const { number, params } = await ctx.search.request<{ number: number; params: Record<string, unknown> }>(
    "ask",
    { study: cell.name },
  );
  const trial = ctx.onStart(trialFor(ctx.base, { ...cell.axes, ...params }));
  const dir = trialDir(ctx.dir, trial.id);
  let outcome: TrialOutcome | undefined;
  let steps = 0;
  const reused = await reusableResult(dir, trial.spec);
  if (reused) outcome = { status: "succeeded", result: reused, error: null };
  else {
    await clearTrialDir(ctx.dir, dir, trial.id);
    const prune = new AbortController();
    const stop = () => prune.abort();
    ctx.signal.addEventListener("abort", stop, { once: true });
    let reports = Promise.resolve();
    let broken: unknown;
    const tail = tailLoss();
    const onEvent = (ev: RunEvent) => {
      ctx.onEvent(trial, ev);
      if (ev.type !== "step" || ev.loss === null || prune.signal.aborted) return;
      steps = ev.step;
      const loss = tail(ev.step, ev.loss);
      if (ev.step >= cell.maxSteps) return; // the last step: nothing left to save by pruning
      const value = ctx.block.direction === "minimize" ? loss : -loss;
      reports = reports
        .then(async () => {
          const r = await ctx.search.request<{ prune: boolean }>("report", {
            study: cell.name,
            number,
            step: ev.step,
            value,
          });
          if (r.prune && steps < cell.maxSteps) prune.abort(); // at the last step: let it finish
        })
        .catch((e: unknown) => {
          broken ??= e;
          prune.abort();
        });
    };
    outcome = await lane.run(trial, dir, onEvent, prune.signal);
    ctx.signal.removeEventListener("abort", stop);
    await reports;
    if (broken !== undefined) throw broken; // the search process is gone: the sweep cannot go on
    if (ctx.signal.aborted && outcome.status !== "succeeded") {
      // interrupted: the study keeps it RUNNING, the next `open` asks its params again
      await ctx.onDone(trial, "cancelled", outcome, false);
      return;
    }
  }
  const result: RunResult | null = outcome.result;
  const metric = scalarMetrics(result?.metrics)[ctx.block.objective];
  const objective = typeof metric === "number" && Number.isFinite(metric) ? metric : null;
  const state = outcome.status === "cancelled" ? "pruned" : objective === null ? "fail" : "complete";
  const ran = state === "complete" ? cell.maxSteps : steps;
  const attrs = {
    steps: ran,
    run_id: trial.id,
    ...(state === "fail" && { error: outcome.error?.message ?? `no finite ${ctx.block.objective}` }),
  };
  await ctx.search.request("tell", { study: cell.name, number, state, value: objective, attrs });
  const status = state === "complete" ? "succeeded" : state === "pruned" ? "pruned" : "failed";
  await ctx.onDone(trial, status, outcome, reused !== undefined);
}

/** Run a study to `trials` done trials on every lane; returns its trials and best. */
export async function runStudy(ctx: StudyContext, cell: SearchCell): Promise<StudyResult> {
  const b = ctx.block;
  const opened = await ctx.search.request<{ done: number }>("open", {
    study: cell.name,
    storage: join(ctx.dir, SEARCH_DB),
    sampler: b.sampler,
    pruner: b.pruner,
    direction: b.direction,
    space: b.space,
    startup_trials: b.startupTrials,
    max_steps: cell.maxSteps,
    warmup_steps: cell.warmupSteps,
    ...(b.seed !== undefined && { seed: b.seed }),
  });
  let claimed = opened.done;
  await Promise.all(
    ctx.lanes.map(async (lane) => {
      while (!ctx.signal.aborted && claimed < b.trials) {
        claimed++;
        await runOne(ctx, cell, lane);
      }
    }),
  );
  return studyResult(ctx, cell);
}

/** The stored study, read back: trials, best, edge warnings. */
export async function studyResult(ctx: StudyContext, cell: SearchCell): Promise<StudyResult> {
  const { trials: raw } = await ctx.search.request<{ trials: RawTrial[] }>("trials", { study: cell.name });
  const trials = raw
    .filter((t) => !(t.state === "fail" && !("error" in t.attrs)))
    .map(
      (t): SearchTrial => ({
        number: t.number,
        state: t.state as SearchTrialState,
        params: t.params,
        objective: t.state === "complete" ? t.value : null,
        steps: typeof t.attrs.steps === "number" ? t.attrs.steps : null,
        runId: typeof t.attrs.run_id === "string" ? t.attrs.run_id : null,
      }),
    );
  const sign = ctx.block.direction === "minimize" ? 1 : -1;
  let best: StudyResult["best"] = null;
  for (const t of trials)
    if (t.objective !== null && (best === null || sign * t.objective < sign * best.objective))
      best = { number: t.number, params: t.params, objective: t.objective };
  const edgeWarnings = best
    ? Object.entries(ctx.block.space)
        .filter(([path, p]) => atEdge(p, best?.params[path]))
        .map(([path, p]) =>
          "low" in p
            ? `${cell.name}: best ${path} = ${String(best?.params[path])} lies at the edge of [${p.low}, ${p.high}]`
            : "",
        )
    : [];
  return { name: cell.name, axes: cell.axes, trials, best, edgeWarnings };
}

/** The best params of a study re-run with the confirmation seeds: the rows and their objective. */
export interface Confirmation {
  study: string;
  params: Record<string, unknown>;
  rows: TrialRow[];
  /** Mean and sample standard deviation of the objective over the succeeded rows (null: none). */
  mean: number | null;
  std: number | null;
}

export interface SearchResults {
  objective: string;
  direction: "minimize" | "maximize";
  /** The searched space (each param's range or choices). */
  space: SearchBlock["space"];
  studies: StudyResult[];
  confirmations: Confirmation[];
}

/** Group the confirmation rows by study and summarise the objective over them. */
export function summarizeConfirmations(
  studies: StudyResult[],
  block: SearchBlock,
  confirmRows: (study: StudyResult) => TrialRow[],
): SearchResults {
  const confirmations = studies.flatMap((st): Confirmation[] => {
    if (!st.best) return [];
    const rows = confirmRows(st);
    const values = rows
      .filter((r) => r.status === "succeeded")
      .map((r) => r.metrics[block.objective])
      .filter((v): v is number => typeof v === "number" && Number.isFinite(v));
    const mean = values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
    const std =
      mean === null || values.length < 2
        ? null
        : Math.sqrt(values.reduce((a, v) => a + (v - mean) ** 2, 0) / (values.length - 1));
    return [{ study: st.name, params: st.best.params, rows, mean, std }];
  });
  return {
    objective: block.objective,
    direction: block.direction,
    space: block.space,
    studies,
    confirmations,
  };
}

/** DIR/search.json, written whole (temp file + rename): a killed sweep never leaves half of it. */
export function saveSearchResults(dir: string, results: SearchResults): void {
  writeFileAtomic(join(dir, SEARCH_JSON), `${JSON.stringify(results, null, 1)}\n`);
}

/** DIR/search.json, or null when the sweep holds no search; a file that is not JSON is an error naming it. */
export async function readSearchResults(dir: string): Promise<SearchResults | null> {
  const path = join(dir, SEARCH_JSON);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw e;
  }
  try {
    return JSON.parse(text) as SearchResults;
  } catch (e) {
    throw new Error(`${path} is not valid JSON (${(e as Error).message}); delete it and run the sweep again`);
  }
}
