"""Interleaved training examples (``train/interleaved.py``): each answers its task correctly by the interleaved
scorers, the stream mixes them in by ``data.interleaved_fraction``, and a preset trains on them and answers
a prompt with images."""

import random

import numpy as np
import torch

from conftest import tiny_preset
from unimm.data import load_split
from unimm.data.shapes import detect_objects
from unimm.eval.interleaved import NUMBER_WORDS, score_task
from unimm.io import to_uint8
from unimm.models import UnifiedModel
from unimm.train.interleaved import InterleavedExamples, paint_out
from unimm.train.loop import resolve_data, train
from unimm.train.stream import ExampleStream


def test_digit_conversations_show_each_slot_s_digit_after_its_word(digits_dir):
    data = load_split(digits_dir, "train")
    source = InterleavedExamples(data)
    rng = random.Random(0)
    kinds = set()
    for _ in range(40):
        user, assistant = source.example(rng)
        assert user.role == "user" and assistant.role == "assistant"
        prompt, words, images = user.parts[0], assistant.parts[0::2], assistant.parts[1::2]
        digits = [NUMBER_WORDS.index(w) for w in words]
        if prompt.startswith("write the digits of "):
            kinds.add("digits")
            assert "".join(map(str, digits)) == prompt.split()[4].rstrip(",")
        else:
            kinds.add("count")
            assert prompt.startswith(NUMBER_WORDS[digits[0]]) and digits == list(range(digits[0], digits[-1] + 1))
        for image, digit in zip(images, digits, strict=True):
            same = (data.images == image).flatten(1).all(1)
            assert same.any() and (data.labels[same] == digit).all()
    assert kinds == {"count", "digits"}
    assert set(NUMBER_WORDS) <= set(source.texts())


def test_shapes_conversations_score_as_correct_and_consistent(shapes_dir):
    data = load_split(shapes_dir, "train")
    source = InterleavedExamples(data)
    assert source.kind == "shapes" and source.scenes
    rng = random.Random(0)
    for _ in range(20):
        user, assistant = source.example(rng)
        task = next(t for _, t in source.scenes if t.prompt == user.parts[0])
        images = list(to_uint8(torch.stack(assistant.parts[1::2])))
        assert assistant.parts[0::2] == task.slots
        result = score_task(task, images)
        assert all(result.slots) and result.consistency, (task, result)


def test_paint_out_removes_one_colour_and_keeps_the_other():
    image = torch.ones(3, 4, 4)
    image[:, 0, 0] = torch.tensor([220, 30, 30]) / 127.5 - 1  # red
    image[:, 3, 3] = torch.tensor([30, 70, 220]) / 127.5 - 1  # blue
    out = paint_out(image, "red", "blue")
    assert torch.equal(out[:, 0, 0], torch.ones(3)) and torch.equal(out[:, 3, 3], image[:, 3, 3])
    assert torch.equal(out[:, 1:3], image[:, 1:3])


def test_the_stream_mixes_interleaved_conversations_in_only_when_asked(digits_dir):
    cfg = tiny_preset(digits_dir, "chameleon", **{"data.interleaved_fraction": 0.5})
    data, templates = resolve_data(cfg)
    stream = ExampleStream(data, templates, cfg.data, 32, 0)
    tasks = [ex.task for ex in stream.batch(0)[1]]
    assert 0 < tasks.count("conversation") < len(tasks)
    plain = tiny_preset(digits_dir, "chameleon")
    assert plain.data.interleaved_fraction == 0
    assert "conversation" not in [ex.task for ex in ExampleStream(data, templates, plain.data, 32, 0).batch(0)[1]]


def test_a_preset_trains_on_interleaved_examples_and_answers_with_images(digits_dir, tmp_path):
    cfg = tiny_preset(digits_dir, "chameleon", **{"data.interleaved_fraction": 0.5, "model.max_seq_len": 160})
    out = train(cfg, tmp_path / "run", progress=False)
    model = UnifiedModel.from_pretrained(out)
    assert model.tokenizer.encode("then the next") and len(model.tokenizer.encode("then the next")) <= 4
    reply = model.interleave("write the digits of 7, one image each", max_new_tokens=6, max_images=2)
    assert reply.stop in ("eos", "max_new_tokens", "max_images", "max_seq_len")
    for image in reply.images:
        assert image.shape == (1, 8, 8) and np.isfinite(image.numpy()).all()


def orders(turns) -> str:
    """'task', 'task+question' or 'question+task': where a template question sits in a conversation."""
    if len(turns) == 2:
        return "task"
    return "question+task" if isinstance(turns[0].parts[0], torch.Tensor) else "task+question"


def test_with_templates_digit_conversations_ask_about_an_image_after_or_before_the_request(digits_dir):
    data = load_split(digits_dir, "train")
    from unimm.data import templates_for

    source = InterleavedExamples(data, templates_for(data))
    rng = random.Random(1)
    seen = []
    for _ in range(60):
        turns = source.example(rng)
        seen.append(orders(turns))
        if seen[-1] == "task":
            continue
        if seen[-1] == "task+question":
            drawn, (image, question), (answer,) = turns[1].parts[1::2], turns[2].parts, turns[3].parts
            slot = next(i for i, im in enumerate(drawn) if im is image)
            digit = NUMBER_WORDS.index(turns[1].parts[2 * slot])
        else:  # a question about an attached training image, then the request and its answer
            (image, question), (answer,), request = turns[0].parts, turns[1].parts, turns[2]
            same = (data.images == image).flatten(1).all(1)
            (digit,) = set(data.labels[same].tolist())
            assert request.role == "user" and request.parts[0].startswith(("write the digits", *NUMBER_WORDS))
            assert turns[3].role == "assistant" and turns[3].parts[0] in NUMBER_WORDS
        assert question.endswith("?") and answer in (str(digit), NUMBER_WORDS[digit])
    assert all(12 < seen.count(kind) < 30 for kind in ("task", "task+question", "question+task")), seen


def test_with_templates_shapes_conversations_ask_about_a_drawn_or_attached_object(shapes_dir):
    data = load_split(shapes_dir, "train")
    from unimm.data import templates_for

    templates = templates_for(data)
    source = InterleavedExamples(data, templates)
    rng = random.Random(2)
    seen = []
    for _ in range(60):
        turns = source.example(rng)
        seen.append(orders(turns))
        if seen[-1] == "task":
            continue
        ask, reply = (turns[2], turns[3]) if seen[-1] == "task+question" else (turns[0], turns[1])
        image, question = ask.parts
        (answer,) = reply.parts
        (found,) = detect_objects(to_uint8(image[None])[0])  # one object, and the answer names it
        assert question.endswith("?") and found.name in answer, (found.name, answer)
        if seen[-1] == "task+question":
            assert image is turns[1].parts[1]  # the first drawn scene
    assert all(12 < seen.count(kind) < 30 for kind in ("task", "task+question", "question+task")), seen
