// Writes the spec's JSON Schema (generated from zod) where the Python package reads it.
// `npm run schema` after changing a schema; the drift test fails until you do.
import { writeFileSync } from "node:fs";
import { specJsonSchemaText } from "../sdk/spec/schema.js";
import { SCHEMA_PATH } from "./schema-path.js";

writeFileSync(SCHEMA_PATH, specJsonSchemaText());
console.log(`wrote ${SCHEMA_PATH}`);
