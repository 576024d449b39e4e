#!/usr/bin/env node
// Runs pytest with the project's Python (OPLORA_PYTHON or .venv), forwarding arguments.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const python = process.env.OPLORA_PYTHON ?? join(root, ".venv", "bin", "python");
const r = spawnSync(python, ["-m", "pytest", ...process.argv.slice(2)], { stdio: "inherit", cwd: root });
process.exit(r.status ?? 1);
