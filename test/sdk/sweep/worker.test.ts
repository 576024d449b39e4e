import { describe, expect, it } from "vitest";
import type { RunEvent } from "../../../sdk/events.js";
import { WorkerCrashedError } from "../../../sdk/sweep/errors.js";
import { Worker } from "../../../sdk/sweep/worker.js";
import { FAKE_PYTHON, isAlive, tempRunDir } from "../helpers.js";

const SPEC = { task: "matrix_factorization", device: "cpu" };

describe("Worker (fake task, real Python worker)", () => {
  it("runs trial after trial in one process; a worker killed mid-trial rejects it, a fresh one runs the next", async () => {
    const worker = new Worker({ python: FAKE_PYTHON, env: { FAKE_MODE: "ok" } });
    const types: RunEvent["type"][] = [];
    const first = await worker.run(SPEC, tempRunDir(), (e) => types.push(e.type));
    const second = await worker.run(SPEC, tempRunDir(), () => undefined);
    expect(first.code).toBe(0);
    expect(first.result?.status).toBe("succeeded");
    expect(second.result?.status).toBe("succeeded");
    expect(types).toContain("started");
    expect(worker.alive).toBe(true);

    const slow = new Worker({ python: FAKE_PYTHON, env: { FAKE_MODE: "slow" } });
    let stepped = false;
    const pending = slow.run(SPEC, tempRunDir(), (e) => {
      if (e.type === "step" && !stepped) {
        stepped = true;
        slow.kill("SIGKILL");
      }
    });
    const err = await pending.catch((e) => e);
    expect(err).toBeInstanceOf(WorkerCrashedError);
    expect(err.signal).toBe("SIGKILL");
    expect(slow.alive).toBe(false);
    await expect(slow.run(SPEC, tempRunDir(), () => undefined)).rejects.toBeInstanceOf(WorkerCrashedError);

    const fresh = new Worker({ python: FAKE_PYTHON, env: { FAKE_MODE: "ok" } });
    expect((await fresh.run(SPEC, tempRunDir(), () => undefined)).result?.status).toBe("succeeded");
    await Promise.all([worker.close(5_000), fresh.close(5_000)]);
    for (const w of [worker, slow, fresh]) expect(isAlive(w.pid)).toBe(false);
  });
});
