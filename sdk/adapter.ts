/** `readAdapter(dir)`: an exported adapter's adapter_config.json and its tensors' names, shapes and dtypes. */
import { z } from "zod";
import type { PythonOptions } from "./bridge/python.js";
import { type CallOptions, quickBridge } from "./bridge/quick.js";

export const AdapterTensor = z.looseObject({ name: z.string(), shape: z.array(z.int()), dtype: z.string() });
export const AdapterInfo = z.looseObject({
  dir: z.string(),
  config: z.record(z.string(), z.unknown()).nullable(),
  files: z.array(
    z.looseObject({
      file: z.string(),
      tensors: z.array(AdapterTensor),
      metadata: z.record(z.string(), z.string()).nullable(),
    }),
  ),
  parameter_count: z.int(),
});
export type AdapterInfo = z.output<typeof AdapterInfo>;

export function readAdapter(dir: string, options: PythonOptions & CallOptions = {}): Promise<AdapterInfo> {
  return quickBridge(options).call("read_adapter", { dir }, AdapterInfo, options);
}
