import { describe, expect, it } from "vitest";
import { SpecInvalidError } from "../../../sdk/errors.js";
import { validateSpec } from "../../../sdk/spec/validate.js";

function issuesOf(input: unknown): string[] {
  try {
    validateSpec(input);
  } catch (e) {
    if (e instanceof SpecInvalidError) return e.issues;
    throw e;
  }
  throw new Error("expected SpecInvalidError");
}

const t2i = (data: unknown) => ({ task: "text_to_image", model: { pretrained: "sd" }, data });
const llava = (data: unknown) => ({ task: "llava", model: { pretrained: "llava" }, data });
/** The validated spec's data block (every spec shape here has one). */
const dataOf = (input: unknown): unknown => (validateSpec(input) as { data?: unknown }).data;

describe("data sources", () => {
  it("keeps the folder shapes and fills a datasets split's defaults", () => {
    expect(dataOf(t2i({ folder: "d" }))).toMatchObject({ folder: "d", image_column: "file_name" });
    expect(dataOf(t2i({ dataset_name: "lambdalabs/naruto-blip-captions" }))).toMatchObject({
      split: "train",
      image_column: "image",
      caption_column: "text",
    });
    expect(dataOf(llava({ dataset_name: "d", eval_split: "validation" }))).toMatchObject({
      split: "train",
      image_column: "image",
      question_column: "question",
      answer_column: "answer",
      eval_split: "validation",
    });
  });

  it("names the chosen shape's problem, or asks for exactly one source", () => {
    expect(issuesOf(t2i({ dataset_name: "d", split: 3 }))[0]).toMatch(/^data: split: .*expected string/);
    expect(issuesOf(t2i({ dataset_name: "d", caption_colum: "c" }))[0]).toMatch(
      /^data\.caption_colum: unknown key/,
    );
    expect(issuesOf(t2i({ folder: "a", dataset_name: "b" }))[0]).toMatch(
      /^data: expected exactly one of 'folder', 'dataset_name'/,
    );
    expect(issuesOf(llava({}))[0]).toMatch(/^data: expected exactly one of 'train_json', 'dataset_name'/);
  });
});
