/** Dotted spec paths (`adapter.r`, `optimizer.lr`): read and write nested plain objects. */

export function splitPath(path: string): string[] {
  return path.split(".");
}

/** The value at `path`, or undefined when any part is missing. */
export function getPath(obj: unknown, path: string): unknown {
  let cur: unknown = obj;
  for (const key of splitPath(path)) {
    if (!cur || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return cur;
}

/**
 * A copy of `obj` with `value` at `path`. Missing objects on the way are created from `seed(prefix)` (or
 * `{}`), so `adapter.r` works on a base spec that leaves `adapter` to its default.
 */
export function setPath<T>(obj: T, path: string, value: unknown, seed?: (prefix: string) => unknown): T {
  const parts = splitPath(path);
  const root = structuredClone(obj) as Record<string, unknown>;
  let cur = root;
  parts.forEach((key, i) => {
    if (i === parts.length - 1) {
      cur[key] = structuredClone(value);
      return;
    }
    let next = cur[key];
    if (!next || typeof next !== "object" || Array.isArray(next)) {
      const seeded = seed?.(parts.slice(0, i + 1).join("."));
      next = seeded && typeof seeded === "object" ? structuredClone(seeded) : {};
      cur[key] = next;
    }
    cur = next as Record<string, unknown>;
  });
  return root as T;
}

/** A copy of `obj` without the key at `path` (unchanged when it is absent). */
export function deletePath<T>(obj: T, path: string): T {
  const parts = splitPath(path);
  const root = structuredClone(obj) as Record<string, unknown>;
  let cur: unknown = root;
  for (const key of parts.slice(0, -1)) {
    if (!cur || typeof cur !== "object") return root as T;
    cur = (cur as Record<string, unknown>)[key];
  }
  if (cur && typeof cur === "object")
    delete (cur as Record<string, unknown>)[parts[parts.length - 1] as string];
  return root as T;
}
