import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { packageRoot, venvDir } from "../../bridge/python.js";
import { type Command, EXIT, parseCommandArgs } from "../command.js";

const HELP = `usage: oplora setup [--force]

Build (or update) the Python environment oplora runs on, with visible progress: a venv at env OPLORA_VENV
(default: the oplora package's own .venv), torch 2.13.0 (CPU) unless the venv has a torch already, then oplora
and its dependencies (about 1.5-2 GB on disk with the CPU build of torch). As a dependency of your project
it is a plain install; OPLORA_EXTRAS=ray,tracking adds the Ray backend and the trackers. OPLORA_PYTHON=PATH
uses that interpreter instead and builds nothing. --force reinstalls even when nothing changed.
npm install runs the same step (postinstall) unless install scripts are blocked.`;

export const setupCommand: Command = {
  name: "setup",
  summary: "build or update the Python environment (venv, torch, oplora)",
  async run(argv) {
    const args = parseCommandArgs(argv, { force: { type: "boolean" } }, HELP);
    if (!args) return EXIT.ok;
    process.stderr.write(`oplora setup: environment at ${process.env.OPLORA_PYTHON ?? venvDir()}\n`);
    const script = join(packageRoot(), "scripts", "setup-python.mjs");
    const r = spawnSync(process.execPath, [script, ...(args.values.force ? ["--force"] : [])], {
      stdio: "inherit",
    });
    return r.status === 0 ? EXIT.ok : EXIT.failed;
  },
};
