"""Frozen encoders in the ledger: a training step is counted without the frozen codec's encoder, which is charged
once per distinct input; the run's ``ledger.json`` adds up what was counted."""

import hashlib
import json

import pytest
import torch

from conftest import tiny_preset
from unimm.flops import count_flops
from unimm.models import UnifiedModel
from unimm.train import train
from unimm.train.frozen import EncoderInputs, StepFlops, codec_inputs
from unimm.train.loop import build_tokenizer, make_batch, resolve_data
from unimm.train.stream import ExampleStream

# chameleon-like: a VQ tokenizer read and written through (shared reader), images shifted when read;
# transfusion-like: a VAE latent, shared reader, no shift; janus-like: VQ for generation, a ViT reads
LIKE = {"chameleon": {}, "quick": {"codec.patch_size": 1}, "janus": {}}


def _model(digits_dir, preset: str, **extra):
    cfg = tiny_preset(digits_dir, preset, **{**LIKE[preset], **extra})
    data, templates = resolve_data(cfg)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, build_tokenizer(cfg, data, templates))
    model.freeze_fixed()
    stream = ExampleStream(data, templates, cfg.data, cfg.train.batch_size, cfg.train.seed)
    return model, stream


@pytest.mark.parametrize("preset", list(LIKE))
def test_a_step_is_counted_without_the_frozen_encoder(digits_dir, preset):
    model, stream = _model(digits_dir, preset)
    images, examples = stream.batch(0)
    batch = make_batch(model, images, examples)
    meter = StepFlops(model.writer.codec)
    with meter.count():
        loss, _ = model(batch, torch.Generator().manual_seed(0))
        loss.backward()
    with count_flops() as whole:  # the same step counted as before the ledger
        loss, _ = model(batch, torch.Generator().manual_seed(0))
        loss.backward()
    with torch.no_grad(), count_flops() as one:
        model.writer.codec.encode(images[:1])
    encoded = sum(len(codec_inputs(model.reader.shared)(*sample)) for sample in stream.samples(0))
    assert meter.encoder_inputs == encoded > 0 and meter.per_input == one.get_total_flops() > 0
    assert meter.flops == whole.get_total_flops() - encoded * one.get_total_flops()
    assert "encode" not in vars(model.writer.codec)  # the codec's own method again


def test_distinct_inputs_are_image_and_shift_and_capped_by_the_dataset(digits_dir):
    """Without augmentation the distinct inputs stop at the dataset size; with shifts each shifted copy is an input
    of its own: the count equals the distinct pixel contents the encoder is given."""
    quick, stream = _model(digits_dir, "quick", **{"data.shift": 0})  # the demo's layout, unaugmented
    n = len(stream.data)
    steps = n // stream.batch_size + 5  # past one epoch
    plain = EncoderInputs(stream, 1, codec_inputs(quick.reader.shared)).advance(steps)
    assert plain.inputs == steps * stream.batch_size and plain.distinct == n
    chameleon, stream = _model(digits_dir, "chameleon")
    shifted = EncoderInputs(stream, 1, codec_inputs(chameleon.reader.shared)).advance(steps)
    rule = codec_inputs(chameleon.reader.shared)
    contents = set()
    for k in range(steps):
        images, _ = stream.batch(k)
        encoded = [im for im, sample in zip(images, stream.samples(k), strict=True) if rule(*sample)]
        contents |= {hashlib.sha1(im.numpy().tobytes()).hexdigest() for im in encoded}
    assert shifted.distinct == len(contents) > n  # shifted copies are inputs of their own
    again = EncoderInputs(stream, 1, rule).advance(3).advance(steps)  # taken in piecewise: the same
    assert (again.distinct, again.inputs) == (shifted.distinct, shifted.inputs)


# (preset, data, extra settings): edits under a shared reader (the source is encoded too) and under a ViT reader (the
# target only); conversations (their images are in the turns, not the example's image), read and generated
MIXES = {
    "quick-edits": ("quick", "edits", {"model.max_seq_len": 160}),
    "janus-edits": ("janus", "edits", {"model.max_seq_len": 160}),
    "chameleon-conversations": ("chameleon", "digits", {"data.interleaved_fraction": 0.5, "model.max_seq_len": 160}),
    "janus-conversations": ("janus", "digits", {"data.interleaved_fraction": 0.5, "model.max_seq_len": 160}),
}


@pytest.mark.parametrize("mix", list(MIXES))
def test_the_rule_names_every_image_the_codec_encodes(digits_dir, edits_dir, mix):
    """Over a few micro-batches the codec encodes as many images as the rule names, and as many distinct contents as
    it names distinct inputs (an edit's source and a conversation's images included)."""
    preset, data, extra = MIXES[mix]
    model, stream = _model(edits_dir if data == "edits" else digits_dir, preset, **extra)
    rule = codec_inputs(model.reader.shared)
    meter, contents, real = StepFlops(model.writer.codec), [], type(model.writer.codec).encode

    def seen(codec, images, *args, **kwargs):
        contents.extend(hashlib.sha1(im.contiguous().numpy().tobytes()).hexdigest() for im in images)
        return real(codec, images, *args, **kwargs)

    type(model.writer.codec).encode = seen
    try:
        for k in range(3):
            images, examples = stream.batch(k)
            with meter.count():
                model(make_batch(model, images, examples), torch.Generator().manual_seed(k))[0].backward()
    finally:
        type(model.writer.codec).encode = real
    named = EncoderInputs(stream, 1, rule).advance(3)
    names = [name for k in range(3) for sample in stream.samples(k) for name in rule(*sample)]
    assert meter.encoder_inputs == named.inputs == len(names) == len(contents) > 0
    content_of = dict(zip(names, contents, strict=True))
    assert all(content_of[name] == c for name, c in zip(names, contents, strict=True)), "one name, two images"
    assert named.distinct == len(content_of) >= len(set(contents))  # equal images of two scenes: two inputs
    if data == "edits" and model.reader.shared:  # every edit's source and target
        assert named.inputs == 2 * 3 * stream.batch_size


@pytest.mark.parametrize("preset", ["chameleon", "quick"])
def test_the_run_ledger_charges_the_encoder_once_and_adds_up(digits_dir, tmp_path, preset):
    cfg = tiny_preset(digits_dir, preset, **{**LIKE[preset], "train.flops_every": 1, "train.steps": 3})
    out = train(cfg, tmp_path / "run", progress=False)
    ledger = json.loads((out / "ledger.json").read_text())
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    model, stream = _model(digits_dir, preset)
    encoded = EncoderInputs(stream, 1, codec_inputs(model.reader.shared)).advance(3)
    with torch.no_grad(), count_flops() as one:
        model.writer.codec.encode(stream.data.images[:1])
    e = ledger["frozen_encoders"]
    assert e["flops_per_input"] == one.get_total_flops() and e["distinct_inputs"] == encoded.distinct
    assert e["flops"] == row["encoder_flops"] == encoded.distinct * one.get_total_flops()
    assert ledger["training_steps"] == {"steps": 3, "flops": row["train_flops"]}
    prep = json.loads((out / "codec.json").read_text())
    assert ledger["preparation"] == {k.removeprefix("flops."): v for k, v in prep.items() if k.startswith("flops.")}
    assert ledger["total"] == sum(ledger["preparation"].values()) + e["flops"] + row["train_flops"]
    assert ledger["total_with_shared"] == ledger["total"] and ledger["shared"] == {}


def test_a_resumed_run_keeps_its_ledger(digits_dir, tmp_path):
    from conftest import train_until

    cfg = tiny_preset(digits_dir, "quick", **{**LIKE["quick"], "train.flops_every": 2, "train.steps": 4})
    full = train(cfg, tmp_path / "full", progress=False)
    half = tmp_path / "half"
    train_until(tiny_preset(digits_dir, "quick", **{**LIKE["quick"], "train.flops_every": 2, "train.steps": 4}),
                half, stop_after=2)  # fmt: skip
    train(cfg, half, resume=True, progress=False)
    a, b = (json.loads((d / "ledger.json").read_text()) for d in (full, half))
    assert a == b and a["frozen_encoders"]["distinct_inputs"] == 4 * 8
