/**
 * llava from the SDK, end to end on a tiny LLaVA built offline: plan() before the run, then run() with
 * OP-LoRA (train, evaluate, export), typed events and a typed result. The fresh-process PEFT reload of the
 * adapter is checked in test/python/test_llava.py.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  answer,
  closePython,
  generate,
  InputError,
  plan,
  type RunEvent,
  run,
  type SpecInput,
} from "../../sdk/index.js";
import { REPO, tempRunDir, VENV_PYTHON } from "./helpers.js";

let root = "";
let spec: SpecInput;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "oplora-tiny-llava-"));
  const built = spawnSync(
    VENV_PYTHON,
    [join(REPO, "scripts", "make_tiny_llava.py"), root, "--train", "8", "--eval", "4"],
    { encoding: "utf8", env: { ...process.env, OMP_NUM_THREADS: "1" } },
  );
  expect(built.status, built.stderr).toBe(0);
  spec = {
    task: "llava",
    device: "cpu",
    model: { pretrained: join(root, "model") },
    adapter: { kind: "op-lora", r: 4, generator: { embedding_dim: 16, hidden_dim: 8 } },
    data: {
      train_json: join(root, "data", "train.json"),
      image_folder: join(root, "data", "images"),
      eval_json: join(root, "data", "eval.json"),
      max_length: 64,
    },
    optimizer: { lr: 3e-3 },
    train: { steps: 2, batch_size: 2 },
    eval: { batch_size: 4, max_new_tokens: 2 },
  };
});

afterAll(() => closePython());

describe("llava through the SDK", () => {
  it("plans, runs OP-LoRA, and returns typed metrics and a PEFT adapter", async () => {
    const p = await plan(spec);
    expect(p.task).toBe("llava");
    expect(p.layers).toBe(14); // 2 layers x 7 linears of the language model
    expect(p.fits).toBe(true);

    const outDir = tempRunDir();
    // One torch thread: the model is tiny and the CI machine has 2 shared cores.
    const handle = run(spec, { outDir, env: { OMP_NUM_THREADS: "1" } });
    const seen: RunEvent["type"][] = [];
    for await (const ev of handle) seen.push(ev.type);
    const result = await handle;

    expect(result.status).toBe("succeeded");
    expect(seen).toContain("step");
    expect(seen).toContain("eval");
    expect(seen).toContain("artifact");
    if (result.task !== "llava" || result.metrics === null) throw new Error("expected llava metrics");
    const m = result.metrics;
    expect(m.loss_curve.map((x) => x.step)).toEqual([1, 2]);
    expect(m.lora_parameters).toBe(p.lora_parameters);
    expect(m.generator_parameters).toBe(p.generator_parameters);
    expect(m.vqa_accuracy).toBeGreaterThanOrEqual(0);
    expect(m.eval_loss).toBeGreaterThan(0);
    expect(m.tokens_per_second).toBeGreaterThan(0);
    expect(result.artifacts.map((a) => a.kind)).toEqual(expect.arrayContaining(["adapter", "predictions"]));
    const adapterConfig = JSON.parse(
      readFileSync(join(outDir, m.adapter_path, "adapter_config.json"), "utf8"),
    );
    expect(adapterConfig.peft_type).toBe("LORA");
    expect(existsSync(join(outDir, m.predictions_path ?? "missing"))).toBe(true);

    // answer(): the stock PEFT loader on the run's adapter dir gives the final eval's first answer
    const pred = JSON.parse(
      readFileSync(join(outDir, m.predictions_path ?? ""), "utf8").split("\n")[0] as string,
    );
    const record = JSON.parse(readFileSync(join(root, "data", "eval.json"), "utf8"))[0];
    const image = join(root, "data", "images", record.image);
    const a = await answer(outDir, { image, question: pred.question, maxNewTokens: 2 });
    expect(a.answer).toBe(pred.prediction);
    await expect(generate(outDir, { prompt: "x", out: join(outDir, "..", "x.png") })).rejects.toThrow(
      InputError,
    );
  }, 240_000);
});
