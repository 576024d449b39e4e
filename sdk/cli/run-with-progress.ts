/** Shared by `oplora run` and `oplora demo`: run a spec, draw progress, cancel on Ctrl-C, map the outcome. */

import type { RunResult } from "../result.js";
import { type RunHandle, run } from "../run.js";
import type { SpecInput } from "../spec/index.js";
import { EXIT, reportError } from "./command.js";
import { Progress, summarize } from "./progress.js";

export async function runWithProgress(
  spec: SpecInput,
  outDir: string,
  options: { resume?: boolean; quiet?: boolean } = {},
): Promise<{ code: number; result: RunResult | undefined; handle: RunHandle | undefined }> {
  let handle: RunHandle;
  try {
    handle = run(spec, { outDir, resume: options.resume, onStderr: (c) => process.stderr.write(c) });
  } catch (e) {
    return { code: reportError(e), result: undefined, handle: undefined };
  }
  const progress = new Progress(process.stderr);
  let interrupts = 0;
  const onSigint = () => {
    interrupts += 1;
    if (interrupts === 1) {
      process.stderr.write("\noplora: cancelling (Ctrl-C again to stop at once)\n");
      void handle.cancel();
    } else {
      process.exit(EXIT.cancelled);
    }
  };
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", onSigint);
  try {
    for await (const ev of handle) if (!options.quiet) progress.event(ev);
    const result = await handle;
    progress.end();
    process.stdout.write(summarize(result));
    return { code: EXIT.ok, result, handle };
  } catch (e) {
    progress.end();
    return { code: reportError(e), result: undefined, handle };
  } finally {
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", onSigint);
  }
}
