import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { RunResult } from "../../../sdk/result.js";
import type { Trial } from "../../../sdk/sweep/expand.js";
import { ColdLane, WarmLane } from "../../../sdk/sweep/lanes.js";
import { FAKE_PYTHON, isAlive, tempRunDir } from "../helpers.js";

const trial = {
  id: "t0",
  index: 0,
  label: "t0",
  axes: {},
  hash: "h",
  spec: { task: "matrix_factorization", device: "cpu" },
} as unknown as Trial;
const options = (mode: string) => ({ python: FAKE_PYTHON, env: { FAKE_MODE: mode }, killGraceMs: 2_000 });

describe("lanes (fake task)", () => {
  it("warm: a worker that dies mid-trial -> failed, with a schema-valid crash result.json written by the SDK", async () => {
    const lane = new WarmLane(options("sigkill"));
    const dir = tempRunDir();
    const out = await lane.run(trial, dir, () => undefined, new AbortController().signal);
    expect(out.status).toBe("failed");
    expect(out.error?.type).toBe("WorkerCrashedError");
    const raw = JSON.parse(readFileSync(join(dir, "result.json"), "utf8"));
    expect(raw.written_by).toBe("sdk");
    expect(RunResult.parse(raw).status).toBe("failed");
    await lane.close();
    for (const pid of lane.pids) expect(isAlive(pid)).toBe(false);
  });

  it("warm: cancelling mid-trial -> cancelled; cold: a successful trial -> succeeded", async () => {
    const lane = new WarmLane(options("slow"));
    const controller = new AbortController();
    const out = await lane.run(
      trial,
      tempRunDir(),
      (e) => {
        if (e.type === "step") controller.abort();
      },
      controller.signal,
    );
    expect(out.status).toBe("cancelled");
    expect(out.result?.status).toBe("cancelled");
    await lane.close();

    const cold = new ColdLane(options("ok"));
    const ok = await cold.run(trial, tempRunDir(), () => undefined, new AbortController().signal);
    expect(ok.status).toBe("succeeded");
    expect(ok.result?.metrics).toMatchObject({ final_loss: 0.5 });
  });
});
