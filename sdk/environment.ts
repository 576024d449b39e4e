/** `doctor()`: what the Python side runs on (versions, CUDA devices, missing packages), via the quick lane. */
import { z } from "zod";
import type { PythonOptions } from "./bridge/python.js";
import { type CallOptions, quickBridge } from "./bridge/quick.js";

export const DoctorReport = z.looseObject({
  ok: z.boolean(),
  python_executable: z.string(),
  platform: z.string(),
  oplora_path: z.string(),
  versions: z.record(z.string(), z.string().nullable()),
  missing: z.array(z.string()),
  cuda_available: z.boolean(),
  cuda_devices: z.array(z.looseObject({ index: z.int(), name: z.string(), total_memory_bytes: z.number() })),
});
export type DoctorReport = z.output<typeof DoctorReport>;

export function doctor(options: PythonOptions & CallOptions = {}): Promise<DoctorReport> {
  return quickBridge(options).call("doctor", {}, DoctorReport, options);
}
