"""Preparation FLOPs: fitting loops counted step by step with ``FitFlops`` (a new key counted, a seen key
priced) equal a count of the whole loop; every part's preparation reports what it spent; a shared tokenizer
records its fit in its directory."""

import json
import math

import pytest
import torch

from conftest import tiny_preset
from unimm.config import TokenizerConfig, load_config
from unimm.data import load_split
from unimm.flops import FitFlops, count_flops
from unimm.models import UnifiedModel
from unimm.models.contracts import PrepareData
from unimm.optim import pretrain
from unimm.tokenizers.fit import fit_image_tokenizer
from unimm.tokenizers.losses import PatchDiscriminator
from unimm.tokenizers.vqvae import VQVAE
from unimm.train.loop import build_tokenizer, resolve_data
from unimm.train.stream import one_caption_each


def _images(n: int = 40) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_a_fit_counted_on_its_first_step_of_each_phase_equals_counting_all_of_it():
    """Fixed-shape batches: the plain phase and the adversarial phase are each counted once and priced after."""
    fit = FitFlops()
    model, disc = VQVAE(1, 16, 8, 8, 2), PatchDiscriminator(1)
    with count_flops() as whole:
        fit_image_tokenizer(model, _images(), 6, 8, progress=False, discriminator=disc, adversarial_weight=0.1,
                            adversarial_start=2, flops=fit)  # fmt: skip
    assert fit.record() == {"flops": whole.get_total_flops(), "steps": 6, "per_step": fit.price[False], "counted": 2}
    assert fit.flops == 2 * fit.price[False] + 4 * fit.price[True] and fit.price[True] > fit.price[False] > 0


def test_pretraining_with_varying_shapes_counts_each_shape_once_and_is_exact():
    """A step's cost set by its batch (here its length): each length counted once, the total still exact."""
    layer = torch.nn.Linear(4, 4)
    lengths = iter([3, 5, 3, 3, 5, 7])
    fit = FitFlops()
    with count_flops() as whole:
        pretrain(list(layer.parameters()), lambda: next(lengths), lambda n: layer(torch.ones(n, 4)).sum(), 6, 0.1,
                 lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), progress=False, flops=fit,
                 key=lambda n: n)  # fmt: skip
    assert fit.flops == whole.get_total_flops() and sorted(fit.price) == [3, 5, 7]
    assert fit.price[5] == fit.price[3] * 5 // 3


@pytest.mark.parametrize("preset", ["quick", "connector"])
def test_every_preparation_item_is_counted_and_they_sum_to_the_whole(digits_dir, preset):
    """The VAE fit and its scale pass, the connector decoder's latents and pre-training: the items a part reports
    are counted like training, and together they are everything ``prepare`` ran."""
    cfg = tiny_preset(digits_dir, preset, **{"reader.pretrain_steps": 0} if preset == "connector" else {})
    data, templates = resolve_data(cfg)
    model = UnifiedModel(cfg, build_tokenizer(cfg, data, templates))
    with count_flops() as whole:
        stats = model.prepare(data.images, data.labels, 0, False, one_caption_each(data, templates, 0))
    items = {k.removeprefix("flops."): v for k, v in stats.items() if k.startswith("flops.")}
    expected = {"codec.steps", "codec.scale_pass"}
    expected |= {"writer.decoder_latents", "writer.pretrain_steps"} if preset == "connector" else set()
    assert set(items) == expected and all(v > 0 for v in items.values())
    assert sum(items.values()) == whole.get_total_flops()
    with torch.no_grad(), count_flops() as one:
        model.writer.codec.vae.encode(data.images[:1])
    assert items["codec.scale_pass"] == len(data) * one.get_total_flops()  # one encoder pass over the images
    assert items.get("writer.decoder_latents", items["codec.scale_pass"]) == items["codec.scale_pass"]


def test_vit_pretraining_is_counted_without_its_accuracy_probe(digits_dir):
    cfg = tiny_preset(digits_dir, "janus", **{"reader.pretrain_steps": 5})
    data, templates = resolve_data(cfg)
    reader = UnifiedModel(cfg, build_tokenizer(cfg, data, templates)).reader
    with count_flops() as whole:
        stats = reader.prepare(PrepareData(data.images, data.labels, progress=False))
    n, dim, classes = len(data), reader.vit.norm.weight.shape[0], int(data.labels.max()) + 1
    with torch.no_grad(), count_flops() as probe:
        reader.vit(data.images[:n])
    probe_flops = probe.get_total_flops() + 2 * n * dim * classes  # the ViT forward and the linear head
    assert stats["flops.reader.pretrain_steps"] == whole.get_total_flops() - probe_flops > 0


def test_shared_tokenizer_records_its_fit_flops(digits_dir, tmp_path):
    from unimm.atlas.side import tokenizer_step_price
    from unimm.tokenizers.train import train_tokenizer

    over = [f'data.path="{digits_dir}"', "train.steps=7", "tokenizer.hidden=8", "tokenizer.code_dim=8",
            "tokenizer.codebook_size=16", "tokenizer.downsample=2", "train.batch_size=16"]  # fmt: skip
    cfg = load_config("configs/tok/vq.toml", over, schema=TokenizerConfig)
    train_tokenizer(cfg, tmp_path / "tok", progress=False)
    ledger = json.loads((tmp_path / "tok" / "ledger.json").read_text())
    price = tokenizer_step_price(cfg)  # one step priced apart, on the first images
    assert ledger["steps"] == 7 and ledger["flops_per_step"] == price > 0
    assert ledger["total"] == ledger["preparation"]["tokenizer.steps"] == 7 * price and ledger["wall_s"] > 0


def test_a_loaded_tokenizer_is_a_shared_item_not_the_runs_own(digits_dir, tmp_path):
    from unimm.tokenizers.train import train_tokenizer

    over = [f'data.path="{digits_dir}"', "train.steps=3", "tokenizer.hidden=8", "tokenizer.code_dim=8",
            "tokenizer.codebook_size=16", "tokenizer.downsample=2"]  # fmt: skip
    train_tokenizer(load_config("configs/tok/vq.toml", over, schema=TokenizerConfig), tmp_path / "tok", progress=False)
    cfg = tiny_preset(digits_dir, "chameleon", **{"codec.tokenizer": f'"{tmp_path / "tok"}"'})
    from unimm.train.loop import resolve_image_tokenizer

    resolve_image_tokenizer(cfg)
    data = load_split(digits_dir, "train")
    model = UnifiedModel(cfg, build_tokenizer(cfg, *resolve_data(cfg)))
    stats = model.prepare(data.images, data.labels, progress=False)
    total = json.loads((tmp_path / "tok" / "ledger.json").read_text())["total"]
    assert stats["shared_flops.codec.tokenizer"] == total and not any(k.startswith("flops.") for k in stats)
    assert math.isfinite(total) and total > 0


def test_a_loaded_vae_tokenizer_serves_the_latent_codec(digits_dir, tmp_path):
    """``codec.tokenizer`` on a ``vae`` codec: the run takes the trained KL-VAE's geometry and weights (its round
    trip is the tokenizer's), fits nothing, and counts the tokenizer's FLOPs as shared."""
    from unimm.tokenizers.train import load_image_tokenizer, train_tokenizer
    from unimm.train.loop import resolve_image_tokenizer

    over = [f'data.path="{digits_dir}"', "train.steps=3", "tokenizer.hidden=8", "tokenizer.code_dim=3",
            "tokenizer.downsample=2"]  # fmt: skip
    train_tokenizer(load_config("configs/tok/vae.toml", over, schema=TokenizerConfig), tmp_path / "tok", progress=False)
    cfg = tiny_preset(digits_dir, "quick", **{"codec.tokenizer": f'"{tmp_path / "tok"}"', "codec.channels": 5})
    resolve_image_tokenizer(cfg)
    assert (cfg.codec.channels, cfg.codec.hidden, cfg.codec.downsample) == (3, 8, 2)
    data = load_split(digits_dir, "train")
    model = UnifiedModel(cfg, build_tokenizer(cfg, *resolve_data(cfg)))
    assert model.writer.codec.preparation() == []
    stats = model.prepare(data.images, data.labels, progress=False)
    assert stats["shared_flops.codec.tokenizer"] == json.loads((tmp_path / "tok" / "ledger.json").read_text())["total"]
    assert not any(k.startswith("flops.codec.steps") for k in stats)
    tok, images = load_image_tokenizer(tmp_path / "tok"), data.images[:4]
    codec = model.writer.codec
    assert torch.allclose(codec.decode(codec.encode(images)), tok.reconstruct(images)[0], atol=1e-5)
    with pytest.raises(ValueError, match="cannot serve codec.kind"):
        resolve_image_tokenizer(tiny_preset(digits_dir, "chameleon", **{"codec.tokenizer": f'"{tmp_path / "tok"}"'}))
