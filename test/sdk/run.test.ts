/** `run()` and `RunHandle`: the result.json the SDK writes when Python dies, and handle state. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { CancelledError, ProcessCrashedError, TrainingFailedError } from "../../sdk/errors.js";
import { RunResult } from "../../sdk/result.js";
import { run } from "../../sdk/run.js";
import { readEvents } from "../../sdk/run-dir.js";
import { FAKE_PYTHON, tempRunDir, VENV_PYTHON } from "./helpers.js";

const SPEC = { task: "matrix_factorization", device: "cpu" } as const;

describe("run", () => {
  it("Python SIGKILLed -> the SDK's crash result.json passes the RunResult schema, with the run's facts", async () => {
    const outDir = tempRunDir();
    const handle = run(SPEC, { outDir, python: FAKE_PYTHON, env: { FAKE_MODE: "sigkill" } });
    const err = await handle.result().catch((e) => e);
    expect(err).toBeInstanceOf(ProcessCrashedError);
    const raw = JSON.parse(readFileSync(join(outDir, "result.json"), "utf8"));
    const result = RunResult.parse(raw);
    expect(raw.written_by).toBe("sdk");
    expect(result.status).toBe("failed");
    expect(result.error?.type).toBe("ProcessCrashed");
    expect(result.error?.message).toContain("killed by SIGKILL");
    expect(result.device).toBe("cpu");
    expect(result.timing?.wall_s).toBeGreaterThanOrEqual(0);
    expect(handle.lastStep?.step).toBe(0);
    expect(handle.events[0]?.type).toBe("started");
  });

  it("Python SIGKILLed -> events.ndjson ends with a terminal error event (the SDK appends it)", async () => {
    const outDir = tempRunDir();
    const handle = run(SPEC, { outDir, python: FAKE_PYTHON, env: { FAKE_MODE: "sigkill" } });
    await handle.result().catch(() => undefined);
    const events = readEvents(outDir);
    const last = events.at(-1);
    expect(events[0]?.type).toBe("started");
    expect(last?.type).toBe("error");
    if (last?.type !== "error") return;
    expect(last.error.type).toBe("ProcessCrashed");
    expect(last.error.message).toContain("killed by SIGKILL");
    expect(last.seq).toBe(Math.max(...events.slice(0, -1).map((e) => e.seq)) + 1);
  });

  it("an already-aborted signal: nothing starts, the handle rejects with CancelledError", async () => {
    const controller = new AbortController();
    controller.abort();
    const handle = run(SPEC, { outDir: tempRunDir(), python: FAKE_PYTHON, signal: controller.signal });
    expect(handle.pid).toBeUndefined();
    await expect(handle.result()).rejects.toBeInstanceOf(CancelledError);
    await handle.done();
    expect(handle.events).toEqual([]);
  });

  it("a real MF run whose loss goes NaN -> TrainingFailedError of type TrainingDiverged naming step and lr", async () => {
    const outDir = tempRunDir();
    const spec = {
      ...SPEC,
      matrix: { rows: 8, cols: 6 },
      adapter: { kind: "lora", r: 2 },
      optimizer: { name: "sgd", lr: 1e6 },
      train: { steps: 30, log_every: 1 },
    } as const;
    const err = await run(spec, { outDir, python: VENV_PYTHON })
      .result()
      .catch((e) => e);
    expect(err).toBeInstanceOf(TrainingFailedError);
    expect(err.type).toBe("TrainingDiverged");
    expect(err.pythonMessage).toMatch(
      /^training diverged at step \d+: loss (nan|inf) with lr 1e\+06; lower optimizer\.lr/,
    );
    expect(err.result.status).toBe("failed");
  }, 60_000);
});
