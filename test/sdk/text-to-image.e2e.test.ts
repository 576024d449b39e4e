/**
 * text_to_image from the SDK, end to end on a tiny SD pipeline built offline (scripts/make_tiny_sd.py):
 * run() with OP-LoRA (train, evaluate with CMMD on a tiny CLIP, export), typed events, a typed result.
 * The fresh-process diffusers reload and SDXL are checked in test/python/test_text_to_image.py.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { answer, closePython, generate, type RunEvent, run, type SpecInput } from "../../sdk/index.js";
import { REPO, tempRunDir, VENV_PYTHON } from "./helpers.js";

let root = "";
let spec: SpecInput;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "oplora-tiny-sd-"));
  const built = spawnSync(VENV_PYTHON, [join(REPO, "scripts", "make_tiny_sd.py"), root], {
    encoding: "utf8",
    env: { ...process.env, OMP_NUM_THREADS: "1" },
  });
  expect(built.status, built.stderr).toBe(0);
  spec = {
    task: "text_to_image",
    device: "cpu",
    model: { pretrained: join(root, "sd") },
    adapter: { kind: "op-lora", r: 4 },
    data: { folder: join(root, "data", "train"), resolution: 32 },
    optimizer: { lr: 1e-2 },
    train: { steps: 2, batch_size: 1 },
    eval: {
      prompts: ["a red circle painting"],
      num_inference_steps: 2,
      guidance_scale: 0,
      reference_folder: join(root, "data", "reference"),
      cmmd_num_images: 2,
      clip_model: join(root, "clip"),
    },
  };
});

afterAll(() => closePython());

describe("text_to_image through the SDK", () => {
  it("runs OP-LoRA on tiny SD and returns metrics, sample images and a diffusers LoRA file", async () => {
    const outDir = tempRunDir();
    const handle = run(spec, { outDir, env: { OMP_NUM_THREADS: "1" } });
    const seen: RunEvent["type"][] = [];
    for await (const ev of handle) seen.push(ev.type);
    const result = await handle;

    expect(result.status, JSON.stringify(result.error)).toBe("succeeded");
    expect(seen).toContain("step");
    expect(seen).toContain("artifact");
    // run() validated the metrics against TextToImageMetrics: typed access, no casts
    if (result.task !== "text_to_image" || !result.metrics) throw new Error("expected text_to_image metrics");
    const m = result.metrics;
    expect(m.model_kind).toBe("sd");
    expect(m.loss_curve.map((p) => p.step)).toEqual([1, 2]);
    expect(m.tail_loss).toBeCloseTo(((m.loss_curve[0]?.loss ?? 0) + (m.loss_curve[1]?.loss ?? 0)) / 2, 6);
    expect(m.cmmd_num_generated).toBe(2);
    expect(m.cmmd_curve.length).toBeGreaterThan(0);
    expect(m.generator_parameters).toBeGreaterThan(m.lora_parameters);
    expect(existsSync(join(outDir, m.diffusers_lora))).toBe(true);
    expect(existsSync(join(outDir, m.adapter_dirs.unet ?? "missing"))).toBe(true);
    expect(result.artifacts.some((a) => a.kind === "image")).toBe(true);

    // generate(): the stock diffusers loader on the run's file; the CLI prints the PNG it wrote
    const img = join(outDir, "..", "cmp.png");
    const g = await generate(outDir, { prompt: "a red circle", out: img, seed: 1, compare: true });
    expect(g).toEqual({ image: img, compare: true, prompt: "a red circle", seed: 1 });
    expect(readFileSync(img).subarray(1, 4).toString()).toBe("PNG");
    await expect(answer(outDir, { image: img, question: "what?" })).rejects.toThrow(
      /a text_to_image run; this needs a llava run/,
    );
  }, 300_000);
});
