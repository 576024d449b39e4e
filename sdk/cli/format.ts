/** Numbers and durations as the terminal progress shows them (runs and sweeps alike). */

/** An integer as is; other numbers with 4 significant digits, exponent form when very small or large. */
export function formatNumber(x: unknown): string {
  if (typeof x !== "number") return "-";
  if (Number.isInteger(x)) return String(x);
  return Math.abs(x) >= 1e-3 && Math.abs(x) < 1e4 ? x.toPrecision(4) : x.toExponential(3);
}

/** Seconds as m:ss or h:mm:ss ("--:--" when unknown). */
export function clock(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--:--";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}
