import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Where the committed JSON Schema lives: inside the Python package, which validates against it. */
export const SCHEMA_PATH = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "python",
  "oplora",
  "schema",
  "spec.schema.json",
);
