import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PythonProcess, Tail } from "../../../sdk/bridge/process.js";
import { FIXTURES, isAlive } from "../helpers.js";

const CHILD = join(FIXTURES, "child.mjs");

function child(mode: string, extra: { detached?: boolean } = {}) {
  const messages: unknown[] = [];
  const malformed: string[] = [];
  const proc = new PythonProcess({
    python: process.execPath,
    args: [CHILD],
    env: { CHILD_MODE: mode },
    onMessage: (m) => messages.push(m),
    onMalformed: (line) => malformed.push(line),
    ...extra,
  });
  return { proc, messages, malformed };
}

describe("PythonProcess (the one process layer)", () => {
  it("reads fd-3 NDJSON: one parsed message per line, blank lines skipped, malformed lines reported", async () => {
    const { proc, messages, malformed } = child("lines");
    const exit = await proc.exit;
    await proc.channelClosed;
    expect(exit).toEqual({ exitCode: 0, signal: undefined, spawnError: undefined });
    expect(messages).toEqual([{ n: 1 }, { n: 2 }]);
    expect(malformed).toEqual(["not json"]);
  });

  it("keeps a bounded stderr tail and the exit code", async () => {
    const { proc } = child("chatter");
    const exit = await proc.exit;
    expect(exit.exitCode).toBe(3);
    const tail = proc.stderr.toString();
    expect(tail.endsWith("END")).toBe(true);
    expect(tail.length).toBe(16_384);
  });

  it("terminate: SIGKILL after the grace when SIGTERM is ignored (as a group when detached)", async () => {
    for (const detached of [false, true]) {
      const { proc, messages } = child("ignore_term", { detached });
      while (messages.length === 0) await new Promise((r) => setTimeout(r, 20));
      const t0 = Date.now();
      const exit = await proc.terminate(300);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(250);
      expect(exit.signal).toBe("SIGKILL");
      expect(isAlive(proc.pid as number)).toBe(false);
      expect(proc.alive).toBe(false);
    }
  });

  it("stdin requests and fd-3 replies (the worker protocol); closing stdin ends the child", async () => {
    const { proc, messages } = child("echo", { detached: true });
    proc.stdin.write("a\nb\n");
    proc.stdin.end();
    const exit = await proc.waitOrKill(5_000);
    await proc.channelClosed;
    expect(exit.exitCode).toBe(0);
    expect(messages).toEqual([{ echo: "a" }, { echo: "b" }]);
  });

  it("a missing executable is a spawn error, not a crash", async () => {
    const proc = new PythonProcess({ python: "/nowhere/python", args: [], onMessage: () => undefined });
    const exit = await proc.exit;
    expect(exit.exitCode).toBeUndefined();
    expect(exit.spawnError).toContain("ENOENT");
  });

  it("Tail keeps only the last N characters", () => {
    const t = new Tail(5);
    t.push("abc");
    t.push("defg");
    expect(t.toString()).toBe("cdefg");
  });
});
