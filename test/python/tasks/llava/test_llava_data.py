"""LLaVA data: assistant-only labels, EOS insertion, padding to square, truncation, batches, targets."""

from __future__ import annotations

import pytest
import torch
from oplora.tasks.llava.data import IGNORE, DataError, Encoder, Record, collate, load_records, pad_to_square
from oplora.tasks.llava.train import batch_indices, masked_loss
from tiny_llava import build_tiny_llava, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def tiny_llava():
    return build_tiny_llava()


@pytest.fixture(scope="session")
def processor(tiny_llava):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_llava / "model")


@pytest.fixture(scope="session")
def records(tiny_llava):
    return load_records(tiny_llava / "data" / "train.json", tiny_llava / "data" / "images", "data.train_json")


def _labelled_tokens(processor, enc):
    toks = processor.tokenizer.convert_ids_to_tokens(enc["input_ids"])
    return [t for t, lab in zip(toks, enc["labels"].tolist(), strict=True) if lab != IGNORE]


def _two_turns(record):
    extra = [
        {"role": "user", "content": [{"type": "text", "text": "What shape is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "circle"}]},
    ]
    return Record("two", record.image, record.messages + extra, ["circle"])


def test_only_assistant_tokens_are_labelled(processor, records):
    enc = Encoder(processor, 128)
    r = records[0]
    answer = r.messages[-1]["content"][0]["text"]
    out = enc.encode(r)
    assert _labelled_tokens(processor, out) == [answer, "</s>"]
    assert int((out["input_ids"] == processor.image_token_id).sum()) == enc.n_image == 16
    # Several turns: every assistant turn is labelled, nothing else.
    assert _labelled_tokens(processor, enc.encode(_two_turns(r))) == [answer, "</s>", "circle", "</s>"]


def test_the_loss_counts_only_assistant_tokens(processor, records):
    """d loss / d logits is non-zero exactly at positions whose next token is an assistant token."""
    enc = Encoder(processor, 128)
    batch = collate([enc.encode(_two_turns(records[0])), enc.encode(records[1])], enc)
    vocab = len(processor.tokenizer)
    logits = torch.randn(*batch["input_ids"].shape, vocab, requires_grad=True)
    total, count = masked_loss(logits, batch["labels"])
    total.backward()
    assert logits.grad is not None
    touched = logits.grad.abs().sum(-1) > 0  # (B, T)
    expected = torch.zeros_like(touched)
    expected[:, :-1] = batch["labels"][:, 1:] != IGNORE
    assert torch.equal(touched, expected)
    assert int(count) == int((batch["labels"] != IGNORE).sum()) == 4 + 2


def test_eos_is_added_when_the_template_writes_none(processor, records):
    """llava-hf's own template ends assistant turns with a space, no EOS: we add a labelled one."""
    import copy

    p = copy.copy(processor)
    p.chat_template = processor.chat_template.replace("{{ eos_token }} ", " ")
    out = Encoder(p, 128).encode(records[0])
    assert _labelled_tokens(processor, out)[-1] == "</s>"
    assert out["input_ids"][-1] == processor.tokenizer.eos_token_id


def test_pad_to_square_centres_on_the_mean_colour(processor, records):
    from PIL import Image

    img = Image.new("RGB", (32, 24), (255, 0, 0))
    sq = pad_to_square(img, (1, 2, 3))
    assert sq.size == (32, 32)
    assert sq.getpixel((0, 0)) == (1, 2, 3) and sq.getpixel((16, 16)) == (255, 0, 0)
    enc = Encoder(processor, 128)
    wide = next(r for r in records if Image.open(r.image).size != (32, 32))
    assert enc.encode(wide)["image"].size == (32, 32)
    assert Encoder(processor, 128, square=False).encode(wide)["image"].size != (32, 32)


def test_truncation(processor, records):
    enc = Encoder(processor, 24)  # 16 image tokens + a few prompt tokens: the answer is cut
    out = enc.encode(records[0])
    assert len(out["input_ids"]) == 24 and len(out["labels"]) == 24
    with pytest.raises(DataError, match="data.max_length"):
        Encoder(processor, 10).encode(records[0])  # cuts into the image tokens


def test_collate_pads_right_for_training_and_left_for_generation(processor, records):
    enc = Encoder(processor, 128)
    items = [enc.encode(_two_turns(records[0])), enc.encode(records[1])]
    b = collate(items, enc)
    n = len(items[1]["input_ids"])
    assert b["attention_mask"][1, :n].all() and not b["attention_mask"][1, n:].any()
    assert (b["labels"][1, n:] == IGNORE).all()
    assert b["pixel_values"].shape == (2, 3, 32, 32)
    g = collate([enc.prompt(records[0]), enc.prompt(_two_turns(records[1]))], enc, left_pad=True)
    assert g["attention_mask"][:, -1].all() and "labels" not in g


def test_batches_are_a_pure_function_of_the_micro_step():
    first = [batch_indices(10, 3, seed=0, micro=m) for m in range(4)]
    assert first == [batch_indices(10, 3, seed=0, micro=m) for m in range(4)]
    assert sorted(sum(first, [])[:10]) == list(range(10))  # epoch 0 is a permutation
    # Two processes split each global batch.
    both = batch_indices(10, 2, 0, 1, rank=0, world=2) + batch_indices(10, 2, 0, 1, rank=1, world=2)
    assert both == batch_indices(10, 4, 0, 1)


def test_default_targets_are_the_language_model_linears(tiny_llava):
    from oplora.tasks.llava.model import base_parameter_count, lora_layer_shapes
    from peft import LoraConfig, get_peft_model
    from transformers import LlavaForConditionalGeneration

    spec = {"model": {"pretrained": str(tiny_llava / "model")}, "adapter": {"r": 4}}
    shapes = lora_layer_shapes(spec)
    assert len(shapes) == 2 * 7
    assert all(n.startswith("model.language_model.layers.") for n, _, _ in shapes)
    model = LlavaForConditionalGeneration.from_pretrained(tiny_llava / "model")
    assert base_parameter_count(spec) == sum(p.numel() for p in model.parameters())
    from oplora.tasks.llava.model import default_target_modules

    peft = get_peft_model(model, LoraConfig(r=4, target_modules=default_target_modules(model)))
    injected = {
        n.removeprefix("base_model.model.").removesuffix(".lora_A.default.weight"): tuple(p.shape)
        for n, p in peft.named_parameters()
        if "lora_A" in n
    }
    assert injected == {n: a for n, a, _ in shapes}


# llava-hf's own template style: images first, text after, `{% generation %}` around the assistant's text,
# no EOS after an assistant turn, "ASSISTANT:" as the generation prompt.
LLAVA_HF_STYLE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def test_masking_with_a_llava_hf_style_template(processor, records):
    import copy

    p = copy.copy(processor)
    p.chat_template = LLAVA_HF_STYLE
    enc = Encoder(p, 128)
    answer = records[0].messages[-1]["content"][0]["text"]
    assert _labelled_tokens(processor, enc.encode(_two_turns(records[0]))) == [
        answer,
        "</s>",
        "circle",
        "</s>",
    ]
    prompt = processor.tokenizer.convert_ids_to_tokens(enc.prompt(records[0])["input_ids"])
    assert prompt[-2:] == ["ASSISTANT", ":"] and answer not in prompt


def test_vqa_answers_come_from_the_record_or_the_last_answer(tiny_llava, tmp_path):
    import json

    base = {"image": "train_0000.png", "conversations": [
        {"from": "human", "value": "<image>\nWhat color?"}, {"from": "gpt", "value": "red"}]}  # fmt: skip
    path = tmp_path / "d.json"
    path.write_text(json.dumps([base, {**base, "id": "b", "answers": ["red", "dark red", "red"]}]))
    a, b = load_records(path, tiny_llava / "data" / "images", "data.eval_json")
    assert a.answers == ["red"] and b.answers == ["red", "dark red", "red"] and a.id == "0"
    path.write_text(json.dumps([{**base, "answers": "red"}]))
    with pytest.raises(DataError, match=r"data.eval_json: record 0 \(id '0'\): 'answers' must be"):
        load_records(path, tiny_llava / "data" / "images", "data.eval_json")
