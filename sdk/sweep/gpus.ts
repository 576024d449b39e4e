/** The GPUs a sweep can pin, one per slot, through CUDA_VISIBLE_DEVICES. */
import { execFileSync } from "node:child_process";

/** GPUs nvidia-smi lists (indices as strings); none when it is missing. */
export function detectGpus(): string[] {
  try {
    const out = execFileSync("nvidia-smi", ["--query-gpu=index", "--format=csv,noheader"], {
      timeout: 5000,
      stdio: ["ignore", "pipe", "ignore"],
    });
    return out
      .toString()
      .split("\n")
      .map((s) => s.trim())
      .filter(Boolean);
  } catch {
    return [];
  }
}
