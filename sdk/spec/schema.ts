/** The spec's JSON Schema, generated from the zod union: committed, checked for drift, read by Python. */
import { z } from "zod";
import { Spec } from "./index.js";

/** JSON Schema of what a user may write (defaults optional, recorded as `default`). */
export function specJsonSchema(): Record<string, unknown> {
  return z.toJSONSchema(Spec, { io: "input", target: "draft-2020-12" }) as Record<string, unknown>;
}

/** The committed file's text: stable key order and a trailing newline, so drift shows as a diff. */
export function specJsonSchemaText(): string {
  return `${JSON.stringify(specJsonSchema(), null, 2)}\n`;
}
