/** The CLI's run progress, rendered into fake streams: a redrawn bar on a TTY, plain lines otherwise. */
import { describe, expect, it } from "vitest";
import { Progress, type ProgressWriter } from "../../../sdk/cli/progress.js";
import { RunEvent } from "../../../sdk/events.js";

function stream(isTTY: boolean, columns = 0): ProgressWriter & { text: string; writes: string[] } {
  const s = {
    isTTY,
    columns,
    text: "",
    writes: [] as string[],
    write(chunk: string) {
      s.text += chunk;
      s.writes.push(chunk);
      return true;
    },
  };
  return s;
}

const t0 = 1_700_000_000;
// 4 steps, one every 2 s: after step 2 the rate is 0.5 it/s and 2 steps are left -> ETA 0:04
const step = (n: number): RunEvent => ({
  type: "step",
  seq: n,
  time: t0 + 2 * n,
  step: n,
  total_steps: 4,
  loss: 1 / n,
});
const checkpoint: RunEvent = {
  type: "checkpoint",
  seq: 9,
  time: t0 + 9,
  step: 4,
  path: "checkpoints/step-4",
};

/** What a terminal shows of the current line after `text`: the part after the last \r or \n. */
const visible = (text: string) =>
  text
    .split(/[\r\n]/)
    .at(-1)
    ?.replace("\x1b[2K", "") ?? "";

describe("Progress", () => {
  it("draws one bar on a TTY, redrawn in place with step/total, loss and ETA", () => {
    const out = stream(true, 100);
    const p = new Progress(out);
    p.event(step(1));
    p.event(step(2));
    expect(out.writes).toHaveLength(2);
    for (const w of out.writes) {
      expect(w.startsWith("\r\x1b[2K")).toBe(true); // back to column 0, clear the line, redraw
      expect(w).not.toContain("\n");
    }
    expect(out.writes[0]).toContain("ETA --:--"); // no rate after one step
    const bar = visible(out.text);
    expect(bar).toMatch(/^\[#{12} {12}\] step 2\/4 {2}loss 0\.5000 {2}0\.500 it\/s {2}ETA 0:04$/);
    p.event(step(4));
    expect(visible(out.text)).toMatch(/^\[#{24}\] step 4\/4 {2}loss 0\.2500 .* ETA 0:00$/);
    // another event ends the bar's line first; end() adds nothing more
    p.event(checkpoint);
    expect(out.text.endsWith("ETA 0:00\ncheckpoint @ 4: checkpoints/step-4\n")).toBe(true);
    p.end();
    expect(out.text.endsWith("checkpoints/step-4\n")).toBe(true);
  });

  it("end() closes a bar still on screen", () => {
    const out = stream(true, 100);
    const p = new Progress(out);
    p.event(step(1));
    p.end();
    expect(out.text.endsWith("\n")).toBe(true);
    expect(out.text.match(/\n/g)).toHaveLength(1);
  });

  it("fits a narrow TTY: a shorter bar, step/total, loss and ETA still shown, never wider than the terminal", () => {
    for (const columns of [40, 60, 80, 0]) {
      const out = stream(true, columns);
      const p = new Progress(out);
      p.event(step(1));
      p.event(step(2));
      const line = visible(out.text);
      expect(line.length).toBeLessThan(columns || 120); // 0: size unknown, 120 assumed
      expect(line).toContain("step 2/4");
      expect(line).toContain("loss 0.5000");
      expect(line).toContain("ETA 0:04");
      if (columns === 0 || columns >= 60) expect(line).toMatch(/^\[#+ +\] /);
    }
  });

  it("writes plain lines, no carriage returns or escapes, when the stream is not a TTY", () => {
    const out = stream(false);
    const p = new Progress(out);
    for (const n of [1, 2, 3, 4]) p.event(step(n));
    p.event(checkpoint);
    // a warning as Python writes it (runner.RunContext.warn), through the event schema the SDK parses with
    p.event(
      RunEvent.parse({
        type: "warning",
        seq: 10,
        time: t0 + 10,
        field: "train.lr_warmup_steps",
        message: "5 >= train.steps 4: the lr never reaches optimizer.lr",
      }),
    );
    p.end();
    expect(out.text).not.toContain("\r");
    expect(out.text).not.toContain("\x1b");
    expect(out.text.split("\n")).toEqual([
      "step 1/4  loss 1  - it/s  ETA --:--",
      "step 2/4  loss 0.5000  0.500 it/s  ETA 0:04",
      "step 3/4  loss 0.3333  0.500 it/s  ETA 0:02",
      "step 4/4  loss 0.2500  0.500 it/s  ETA 0:00",
      "checkpoint @ 4: checkpoints/step-4",
      "warning: train.lr_warmup_steps: 5 >= train.steps 4: the lr never reaches optimizer.lr",
      "",
    ]);
  });
});
