import { describe, expect, it } from "vitest";
import { EventStream } from "../../sdk/stream.js";

/** A stream fed by hand: `emit` events, then `finish` or `fail`. */
class Manual extends EventStream<number, string> {
  cancelled = 0;
  private resolve!: (v: string) => void;
  private reject!: (e: Error) => void;
  constructor() {
    super();
    this.settleWith(
      new Promise<string>((res, rej) => {
        this.resolve = res;
        this.reject = rej;
      }),
    );
  }
  emit(n: number): void {
    this.push(n);
  }
  finish(v: string): void {
    this.resolve(v);
  }
  fail(e: Error): void {
    this.reject(e);
  }
  async cancel(): Promise<void> {
    this.cancelled++;
    this.finish("cancelled");
  }
}

describe("EventStream", () => {
  it("replays every event to each iterator, from the first, then ends; await gives the result", async () => {
    const s = new Manual();
    s.emit(1);
    const seen: number[] = [];
    const loop = (async () => {
      for await (const n of s) seen.push(n);
    })();
    s.emit(2);
    await new Promise((r) => setTimeout(r, 5));
    s.emit(3);
    s.finish("ok");
    await loop;
    expect(seen).toEqual([1, 2, 3]);
    expect(await s).toBe("ok");
    expect(s.events).toEqual([1, 2, 3]);
    const again: number[] = [];
    for await (const n of s) again.push(n);
    expect(again).toEqual([1, 2, 3]);
    expect(s.cancelled).toBe(0);
  });

  it("a failed outcome ends the loop with its error and rejects await", async () => {
    const s = new Manual();
    s.emit(1);
    s.fail(new Error("boom"));
    await expect(
      (async () => {
        for await (const _ of s);
      })(),
    ).rejects.toThrow("boom");
    await expect(s.result()).rejects.toThrow("boom");
  });

  it("break out of for-await cancels", async () => {
    const s = new Manual();
    s.emit(1);
    s.emit(2);
    for await (const n of s) if (n === 1) break;
    expect(s.cancelled).toBe(1);
    expect(await s).toBe("cancelled");
  });
});
