/**
 * `dataSource`: a union of two data-block shapes told apart by which key is present (`folder` or
 * `train_json` vs `dataset_name`), so an error names the problem inside the shape the user chose rather
 * than zod's "Invalid input".
 */
import { z } from "zod";

/** Where a `datasets` split comes from (`datasets.load_dataset` / `load_from_disk`) and its image column;
 * named as diffusers' train_text_to_image_lora.py names them (`dataset_name`, `dataset_config_name`). */
export const datasetSplit = {
  dataset_name: z
    .string()
    .min(1)
    .describe(
      "datasets hub name, or a local path (a save_to_disk folder, or parquet/json/imagefolder files)",
    ),
  dataset_config_name: z
    .string()
    .min(1)
    .optional()
    .describe("the dataset's configuration (load_dataset name)"),
  split: z.string().min(1).default("train").describe("the training split"),
  revision: z.string().min(1).optional().describe("hub revision of the dataset (branch, tag or commit)"),
  image_column: z.string().min(1).default("image").describe("column holding the images"),
};

/** `z.union([a, b])`, each branch selected by its key (e.g. `["folder", FolderData]`). */
export function dataSource<A extends z.ZodObject, B extends z.ZodObject>(
  a: readonly [string, A],
  b: readonly [string, B],
): z.ZodUnion<[A, B]> {
  const branches = new Map<string, z.ZodObject>([a, b]);
  const keys = [...branches.keys()];
  return z.union([a[1], b[1]], {
    error: (issue) => {
      const input = issue.input;
      const given = input && typeof input === "object" ? keys.filter((k) => k in input) : [];
      if (given.length !== 1) return `expected exactly one of ${keys.map((k) => `'${k}'`).join(", ")}`;
      const key = given[0] as string;
      const parsed = branches.get(key)?.safeParse(input);
      const first = parsed && !parsed.success ? parsed.error.issues[0] : undefined;
      return first ? `${first.path.map(String).join(".") || key}: ${first.message}` : undefined;
    },
  });
}
