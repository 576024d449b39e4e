/**
 * `validateSpec`: the SDK's one boundary check. Every zod issue becomes a readable `path: message` line
 * naming what was expected and the value that was given, e.g. `adapter.r: expected a positive integer, got -1`.
 */
import type { z } from "zod";
import { SpecInvalidError } from "../errors.js";
import { Spec, type SpecInputOf, type SpecOf, type TaskName } from "./index.js";

/**
 * Check `input` against the spec union and return it with every default filled in. A literal `task`
 * types the result as that task's spec (`SpecOf<"llava">`); any other input gets the union.
 */
export function validateSpec<T extends TaskName>(input: {
  readonly task: T;
  readonly [key: string]: unknown;
}): SpecOf<T>;
export function validateSpec(input: unknown): Spec;
export function validateSpec(input: unknown): Spec {
  const parsed = Spec.safeParse(input, { reportInput: true });
  if (!parsed.success) throw new SpecInvalidError(formatIssues(parsed.error.issues, Spec, input));
  return parsed.data;
}

/** Like `validateSpec`, typed for literal specs: the compiler checks the input's shape too. */
export function defineSpec<T extends TaskName>(input: SpecInputOf<T> & { readonly task: T }): SpecOf<T> {
  return validateSpec(input as unknown) as SpecOf<T>;
}

type Issue = z.core.$ZodIssue & { input?: unknown };

/** One `path: message` line per problem (unknown keys: one line per key). */
export function formatIssues(issues: readonly z.core.$ZodIssue[], root: z.ZodType, input: unknown): string[] {
  const lines: string[] = [];
  for (const raw of issues) {
    const issue = raw as Issue;
    const path = issue.path.map(String);
    if (issue.code === "unrecognized_keys") {
      const known = objectKeys(schemaAt(root, issue.path, input));
      for (const key of issue.keys) {
        const hint = closest(key, known);
        lines.push(`${where([...path, key])}: unknown key${hint ? ` (did you mean '${hint}'?)` : ""}`);
      }
      continue;
    }
    lines.push(`${where(path)}: ${describeIssue(issue, schemaAt(root, issue.path, input))}`);
  }
  return lines;
}

function where(path: string[]): string {
  return path.length ? path.join(".") : "(spec)";
}

function describeIssue(issue: Issue, schema: z.ZodType | undefined): string {
  const got = "input" in issue ? `, got ${show(issue.input)}` : "";
  switch (issue.code) {
    case "invalid_type":
      if (issue.input === undefined) return `required (${article(issue.expected)})`;
      if (typeof issue.input === "number" && !Number.isFinite(issue.input)) return nonFinite(issue.input);
      return `expected ${article(issue.expected)}${got}`;
    case "too_small":
    case "too_big": {
      const small = issue.code === "too_small";
      const bound = small ? issue.minimum : issue.maximum;
      const inclusive = issue.inclusive ?? true;
      if (issue.origin === "array" || issue.origin === "set")
        return `expected ${small ? "at least" : "at most"} ${bound} item(s)${got}`;
      if (issue.origin === "string")
        return `expected ${small ? "at least" : "at most"} ${bound} character(s)${got}`;
      const noun = isInteger(schema) ? "integer" : "number";
      if (small && Number(bound) === 0)
        return `expected a ${inclusive ? "non-negative" : "positive"} ${noun}${got}`;
      const op = small ? (inclusive ? ">=" : ">") : inclusive ? "<=" : "<";
      return `expected ${article(noun)} ${op} ${String(bound)}${got}`;
    }
    case "invalid_value":
      return `expected ${issue.values.length === 1 ? show(issue.values[0]) : `one of ${issue.values.map(show).join(", ")}`}${got}`;
    case "invalid_union": {
      const options = (issue as { options?: unknown[] }).options;
      if (options)
        return `expected one of ${options.map(show).join(", ")}, got ${show(discriminatorValue(issue))}`;
      return `${issue.message}${got}`;
    }
    default:
      return `${lowerFirst(issue.message)}${got}`;
  }
}

/** JSON.parse turns a literal beyond a double's range (1e400) into ±Infinity; say so, not "null". */
function nonFinite(value: number): string {
  if (Number.isNaN(value)) return "NaN is not a finite number";
  return `${value > 0 ? "" : "-"}Infinity is not a finite number (a literal beyond ±1.8e308, e.g. 1e400, overflows a double)`;
}

function discriminatorValue(issue: Issue): unknown {
  const key = (issue as { discriminator?: string }).discriminator;
  const input = issue.input;
  return key && input && typeof input === "object" ? (input as Record<string, unknown>)[key] : input;
}

function article(noun: string): string {
  const word = noun === "int" ? "integer" : noun;
  return `${/^[aeiou]/.test(word) ? "an" : "a"} ${word}`;
}

function lowerFirst(s: string): string {
  return s.charAt(0).toLowerCase() + s.slice(1);
}

/** A value as a short, readable literal. */
export function show(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "number" && !Number.isFinite(value)) return String(value);
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

// --- walking the schema to the issue's path (for "integer" vs "number" and unknown-key hints) -----------

type Def = {
  type: string;
  innerType?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  options?: z.ZodType[];
  discriminator?: string;
  element?: z.ZodType;
  in?: z.ZodType;
  format?: string;
};

function defOf(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  for (;;) {
    const def = defOf(s);
    if (
      def.innerType &&
      ["default", "prefault", "optional", "nullable", "readonly", "catch"].includes(def.type)
    ) {
      s = def.innerType;
    } else if (def.type === "pipe" && def.in) {
      s = def.in;
    } else {
      return s;
    }
  }
}

/** The (unwrapped) schema at `path`, choosing union branches by the input's discriminator values. */
export function schemaAt(
  root: z.ZodType,
  path: readonly PropertyKey[],
  input: unknown,
): z.ZodType | undefined {
  let schema: z.ZodType | undefined = unwrap(root);
  let value = input;
  for (const key of [...path, null]) {
    if (!schema) return undefined;
    schema = unwrap(schema);
    const def = defOf(schema);
    if (def.type === "union" && def.options) {
      schema = pickBranch(def, value);
      if (!schema) return undefined;
      schema = unwrap(schema);
    }
    if (key === null) return schema;
    const d = defOf(schema);
    value = value && typeof value === "object" ? (value as Record<PropertyKey, unknown>)[key] : undefined;
    if (d.type === "object" && d.shape) schema = d.shape[key as string];
    else if (d.type === "array" && d.element) schema = d.element;
    else if (d.type === "record" && (d as { valueType?: z.ZodType }).valueType)
      schema = (d as { valueType?: z.ZodType }).valueType;
    else return undefined;
  }
  return schema;
}

function pickBranch(def: Def, value: unknown): z.ZodType | undefined {
  const options = def.options ?? [];
  if (!def.discriminator || !value || typeof value !== "object")
    return options.length === 1 ? options[0] : undefined;
  const tag = (value as Record<string, unknown>)[def.discriminator];
  return options.find((o) => {
    const prop = objectShape(o)?.[def.discriminator as string];
    const values = prop
      ? (unwrap(prop) as unknown as { _zod: { values?: Set<unknown> } })._zod.values
      : undefined;
    return values?.has(tag) ?? false;
  });
}

function objectShape(schema: z.ZodType | undefined): Record<string, z.ZodType> | undefined {
  if (!schema) return undefined;
  const def = defOf(unwrap(schema));
  return def.type === "object" ? def.shape : undefined;
}

function objectKeys(schema: z.ZodType | undefined): string[] {
  return Object.keys(objectShape(schema) ?? {});
}

function isInteger(schema: z.ZodType | undefined): boolean {
  if (!schema) return false;
  const def = defOf(unwrap(schema));
  return (
    def.type === "number" && (def.format === "safeint" || def.format === "int32" || def.format === "int64")
  );
}

/** The known key nearest to `key` (edit distance <= 2, or a prefix), for "did you mean" hints. */
function closest(key: string, known: string[]): string | undefined {
  let best: { k: string; d: number } | undefined;
  for (const k of known) {
    const d = k.startsWith(key) || key.startsWith(k) ? 1 : editDistance(key, k);
    if (d <= 2 && (!best || d < best.d)) best = { k, d };
  }
  return best?.k;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0] as number;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const tmp = row[j] as number;
      row[j] = Math.min(
        (row[j] as number) + 1,
        (row[j - 1] as number) + 1,
        prev + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      prev = tmp;
    }
  }
  return row[b.length] as number;
}
