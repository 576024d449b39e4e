/**
 * Sweep progress for the terminal. On a TTY: one redrawn line per running trial (step/total, loss) under an
 * overall bar; otherwise plain lines as trials start and end (logs stay readable in CI).
 */
import { searchBests } from "../report/search.js";
import type { SearchResults } from "../sweep/search.js";
import type { SweepEvent } from "../sweep/sweep.js";
import { formatNumber as num } from "./format.js";

export interface ProgressOut {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export class SweepProgress {
  private total = 0;
  private done = 0;
  private failed = 0;
  private readonly running = new Map<string, { label: string; step: string }>();
  private drawn = 0;
  private readonly started = Date.now();

  constructor(private readonly out: ProgressOut = process.stderr) {}

  private get tty(): boolean {
    return Boolean(this.out.isTTY);
  }

  event(ev: SweepEvent): void {
    switch (ev.type) {
      case "sweep_started":
        this.total = ev.trials;
        this.done = ev.trials - ev.toRun;
        this.line(`sweep ${ev.dir}: ${ev.trials} trials, ${ev.toRun} to run, ${ev.slots} at a time`);
        break;
      case "trial_skipped":
        if (!this.tty) this.line(`skip   ${ev.trial.id} ${ev.trial.label} (succeeded before)`);
        break;
      case "trial_started":
        this.running.set(ev.trial.id, { label: ev.trial.label, step: "starting" });
        if (!this.tty)
          this.line(
            `start  ${ev.trial.id} ${ev.trial.label}${ev.device !== null ? ` [gpu ${ev.device}]` : ""}`,
          );
        break;
      case "trial_progress": {
        const r = this.running.get(ev.trial.id);
        if (r && ev.event.type === "step")
          r.step = `step ${ev.event.step}/${ev.event.total_steps} loss ${num(ev.event.loss)}`;
        if (ev.event.type === "warning")
          this.line(`warn   ${ev.trial.id} ${ev.trial.label}: ${ev.event.field}: ${ev.event.message}`);
        break;
      }
      case "trial_finished":
      case "trial_failed":
      case "trial_cancelled": {
        this.running.delete(ev.trial.id);
        this.done++;
        if (ev.type === "trial_failed") this.failed++;
        const word =
          ev.type === "trial_finished"
            ? "done  "
            : ev.type === "trial_failed"
              ? "FAILED"
              : ev.row.status === "pruned"
                ? "pruned"
                : "cancel";
        const extra =
          ev.type === "trial_failed" && ev.row.error
            ? `: ${ev.row.error.type}: ${ev.row.error.message.split("\n")[0]}`
            : ev.type === "trial_finished" && typeof ev.row.metrics.final_loss === "number"
              ? ` final_loss ${num(ev.row.metrics.final_loss)}`
              : "";
        this.line(`${word} ${ev.trial.id} ${ev.trial.label}${extra}`);
        break;
      }
      case "sweep_finished": {
        const c = ev.results.counts;
        this.line(
          `sweep ${ev.results.stopped ? "stopped" : "finished"} in ${ev.results.wallS.toFixed(1)} s: ${c.succeeded} succeeded, ${c.failed} failed, ${c.cancelled} cancelled, ${c.pruned} pruned, ${c.not_run} not run`,
        );
        if (ev.results.search) for (const l of searchLines(ev.results.search)) this.line(l);
        break;
      }
    }
    if (this.tty) this.redraw();
  }

  /** Print a line above the live block. */
  private line(text: string): void {
    this.clear();
    this.out.write(`${text}\n`);
  }

  private clear(): void {
    if (this.tty && this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[J`);
    this.drawn = 0;
  }

  private redraw(): void {
    this.clear();
    const width = Math.max(40, (this.out.columns ?? 100) - 1);
    const lines = [...this.running.entries()].map(([id, r]) =>
      `  ${id} ${r.label}  ${r.step}`.slice(0, width),
    );
    const barWidth = 30;
    const fill = this.total ? Math.round((barWidth * this.done) / this.total) : 0;
    const secs = Math.round((Date.now() - this.started) / 1000);
    lines.push(
      `[${"#".repeat(fill)}${"-".repeat(barWidth - fill)}] ${this.done}/${this.total} trials${this.failed ? `, ${this.failed} failed` : ""}, ${secs}s`.slice(
        0,
        width,
      ),
    );
    this.out.write(`${lines.join("\n")}\n`);
    this.drawn = lines.length;
  }
}

/** The search's results table: each arm's best params and objective, then the edge warnings. */
export function searchLines(s: SearchResults): string[] {
  const bests = searchBests(s);
  const width = Math.max(3, ...bests.map((b) => b.study.length));
  const lines = [`search: each arm's best ${s.objective} (${s.direction})`];
  for (const b of bests) {
    const params = Object.entries(b.params).map(([k, v]) => `${k}=${num(v)}`);
    const c = b.confirmed;
    lines.push(
      `  ${b.study.padEnd(width)}  ${params.join(" ") || "-"}  search ${num(b.searchBest)}  confirmed ${c ? `${num(c.mean)} ± ${num(c.std)} (n=${c.n})` : "-"}  trials ${b.trials.complete} complete, ${b.trials.pruned} pruned, ${b.trials.failed} failed`,
    );
  }
  for (const b of bests) for (const w of b.edgeWarnings) lines.push(`  warning: ${w}`);
  return lines;
}
