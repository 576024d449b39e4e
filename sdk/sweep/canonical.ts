/**
 * Stable identity for specs: canonical JSON (object keys sorted, no whitespace) hashed with sha256.
 * A trial's run directory is named by the first `ID_LENGTH` hex digits of its validated spec's hash, so the
 * same spec always lands in the same directory and two different specs never share one.
 */
import { createHash } from "node:crypto";

export const ID_LENGTH = 12;

/** JSON with object keys sorted at every depth (arrays keep their order). */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/** sha256 (hex) of the canonical JSON of `value`. */
export function specHash(value: unknown): string {
  return createHash("sha256").update(canonicalJson(value)).digest("hex");
}

/** Deep equality through canonical JSON (key order does not matter). */
export function sameJson(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}
