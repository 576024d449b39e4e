/** Run progress for the terminal: a redrawn bar on a TTY (step/total, loss, rate, ETA), plain lines otherwise. */
import type { RunEvent } from "../events.js";
import type { RunResult } from "../result.js";
import { clock, formatNumber as num } from "./format.js";

export interface ProgressWriter {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export class Progress {
  private firstStep: { step: number; time: number } | undefined;
  private barShown = false;

  constructor(private readonly out: ProgressWriter = process.stderr) {}

  event(ev: RunEvent): void {
    switch (ev.type) {
      case "started":
        this.line(
          `started ${ev.task}${ev.device ? ` on ${ev.device}` : ""} (pid ${ev.pid}) -> ${ev.run_dir}`,
        );
        break;
      case "phase":
        this.line(
          ev.phase === "loading" ? "loading torch and the task..." : `running on ${ev.device ?? "?"}`,
        );
        break;
      case "step":
        this.step(ev.step, ev.total_steps, ev.loss, ev.time);
        break;
      case "eval":
        this.line(
          `eval @ ${ev.step}: ${Object.entries(ev.metrics)
            .map(([k, v]) => `${k}=${typeof v === "number" ? num(v) : JSON.stringify(v)}`)
            .join(" ")}`,
        );
        break;
      case "checkpoint":
        this.line(`checkpoint @ ${ev.step}: ${ev.path}`);
        break;
      case "artifact":
        this.line(`artifact ${ev.kind}: ${ev.path}${ev.label ? ` (${ev.label})` : ""}`);
        break;
      case "warning":
        this.line(`warning: ${ev.field}: ${ev.message}`);
        break;
      // "error" is left out: the command prints the error it ends with once, with the run dir
      case "cancelled":
        this.line(`cancelled${ev.step != null ? ` at step ${ev.step}` : ""}`);
        break;
      case "completed":
        this.line("completed");
        break;
    }
  }

  private step(step: number, total: number, loss: number | null, time: number): void {
    if (!this.firstStep) this.firstStep = { step, time };
    const dt = time - this.firstStep.time;
    const rate = dt > 0 ? (step - this.firstStep.step) / dt : Number.NaN;
    const eta = rate > 0 ? (total - step) / rate : Number.NaN;
    const rateText = Number.isFinite(rate) ? `${rate.toPrecision(3)} it/s` : "- it/s";
    const head = `step ${step}/${total}  loss ${num(loss)}`;
    const text = `${head}  ${rateText}  ETA ${clock(eta)}`;
    if (!this.out.isTTY) {
      this.out.write(`${text}\n`);
      return;
    }
    // Fit the terminal, one column spare (a full line would wrap on some terminals): drop the rate, then
    // shrink or drop the bar, so step/total, loss and ETA stay visible; cut the end only as a last resort.
    const room = Math.max(1, (this.out.columns || 120) - 1);
    const shown = text.length <= room ? text : `${head}  ETA ${clock(eta)}`;
    const width = Math.min(24, room - shown.length - 3);
    let line = shown;
    if (width >= 5) {
      const filled = total > 0 ? Math.min(width, Math.round((width * step) / total)) : 0;
      line = `[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${shown}`;
    }
    this.out.write(`\r\x1b[2K${line.slice(0, room)}`);
    this.barShown = true;
  }

  private line(text: string): void {
    if (this.barShown) this.out.write("\n");
    this.barShown = false;
    this.out.write(`${text}\n`);
  }

  end(): void {
    if (this.barShown) this.out.write("\n");
    this.barShown = false;
  }
}

/** A short summary of a finished run: status, scalar metrics, artifacts. */
export function summarize(result: RunResult): string {
  const lines = [`${result.status}: ${result.task} in ${result.run_dir}`];
  if (result.timing) lines.push(`  wall time ${clock(result.timing.wall_s)} on ${result.device ?? "?"}`);
  const metrics = (result.metrics ?? {}) as Record<string, unknown>;
  for (const [k, v] of Object.entries(metrics)) {
    if (typeof v === "number") lines.push(`  ${k}: ${num(v)}`);
    else if (
      v &&
      typeof v === "object" &&
      !Array.isArray(v) &&
      Object.values(v).every((x) => typeof x === "number" || x === null)
    )
      lines.push(
        `  ${k}: ${Object.entries(v)
          .map(([a, b]) => `${a}=${b === null ? "never" : num(b as number)}`)
          .join(" ")}`,
      );
  }
  for (const a of result.artifacts) lines.push(`  ${a.kind}: ${a.path}`);
  return `${lines.join("\n")}\n`;
}
