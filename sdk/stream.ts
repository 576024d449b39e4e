/**
 * `EventStream<E, R>`: one object that is both an async iterator of events `E` and a promise of the final
 * result `R` (like Anthropic's `MessageStream`). `RunHandle` and `SweepHandle` build on it.
 *
 *   for await (const ev of stream) ...   // every event, from the first, then ends (or throws R's error)
 *   const result = await stream;         // R, or the error the work ended with
 *
 * Leaving the loop early (`break`, `return`, a throw in its body) calls `cancel()`.
 */
export abstract class EventStream<E, R> implements AsyncIterable<E>, PromiseLike<R> {
  private readonly seen: E[] = [];
  private readonly waiters = new Set<() => void>();
  private ended = false;
  private outcome: Promise<R> = new Promise<R>(() => undefined);

  /** Stop the work; the stream then ends with its outcome. */
  abstract cancel(): Promise<unknown>;

  /** Events so far (all of them once the stream has ended). */
  get events(): readonly E[] {
    return this.seen;
  }

  /** The final result (rejects with the error the work ended with). */
  result(): Promise<R> {
    return this.outcome;
  }

  // biome-ignore lint/suspicious/noThenProperty: an EventStream is deliberately awaitable (like a MessageStream)
  then<A = R, B = never>(
    onfulfilled?: ((value: R) => A | PromiseLike<A>) | null,
    onrejected?: ((reason: unknown) => B | PromiseLike<B>) | null,
  ): Promise<A | B> {
    return this.outcome.then(onfulfilled, onrejected);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<E> {
    let i = 0;
    let finished = false;
    try {
      for (;;) {
        while (i < this.seen.length) yield this.seen[i++] as E;
        if (this.ended) break;
        await new Promise<void>((r) => this.waiters.add(r));
      }
      finished = true;
      await this.outcome; // work that failed ends the loop with its error
    } finally {
      if (!finished) await this.cancel().catch(() => undefined); // `break` / `return` / a throw in the loop body
    }
  }

  /** True once the outcome has settled. */
  protected get settled(): boolean {
    return this.ended;
  }

  /** Record one event and wake the iterators. */
  protected push(event: E): void {
    this.seen.push(event);
    this.wake();
  }

  /** Set the outcome (once, from the subclass constructor); the stream ends when it settles. */
  protected settleWith(outcome: Promise<R>): void {
    this.outcome = outcome;
    const end = () => {
      this.ended = true;
      this.wake();
    };
    outcome.then(end, end);
  }

  private wake(): void {
    for (const w of this.waiters) w();
    this.waiters.clear();
  }
}
