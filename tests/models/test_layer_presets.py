"""``model.layers``: the expert presets (ar-moe, moma, bagel) end to end at tiny size, and the layer kinds
inside any strategy."""

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_overrides
from unimm.config import ConfigError, load_config
from unimm.models import UnifiedModel
from unimm.nn.block import DenseBlock
from unimm.nn.moe import MoEBlock
from unimm.nn.mot import MoTBlock
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch, train

CONFIGS = Path(__file__).parents[2] / "configs"
TINY = {
    "image.vq_hidden": 8,
    "image.vq_dim": 8,
    "image.vq_codebook": 16,
    "image.vq_downsample": 2,
    "image.vq_steps": 5,
    "image.vae_steps": 5,
    "image.vae_hidden": 8,
    "image.vae_downsample": 2,
    "image.patch_size": 1,
    "image.vit_dim": 32,
    "image.vit_depth": 1,
    "image.vit_heads": 2,
    "image.vit_pretrain_steps": 3,
    "model.experts": 4,
    "sample.max_new_tokens": 16,
    "sample.steps": 3,
}
BLOCKS = {"ar-moe": MoEBlock, "moma": MoEBlock, "bagel": MoTBlock}


@pytest.mark.parametrize("preset", sorted(BLOCKS))
def test_expert_preset_trains_logs_routing_captions_and_generates(digits_dir, tmp_path, preset):
    cfg = load_config(CONFIGS / f"{preset}.toml", tiny_overrides(digits_dir, **TINY))
    cfg.image.latent = "vae"
    out = train(cfg, tmp_path / preset, progress=False)
    model = UnifiedModel.from_pretrained(out)
    assert all(isinstance(b, BLOCKS[preset]) for b in model.backbone.layers)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if BLOCKS[preset] is MoEBlock:
        last = rows[-1]
        assert "moe_aux_loss" in last and "moe_z_loss" in last
        assert len(last["expert_tokens"]) == cfg.model.depth and len(last["expert_tokens"][0]) == 4
        text, image = last["expert_tokens_by_modality"]
        if preset == "moma":  # text tokens only in experts 0-1, image tokens only in experts 2-3
            assert sum(text[2:]) == 0 and sum(image[:2]) == 0 and sum(image) > 0
    images = torch.rand(2, 1, 8, 8) * 2 - 1
    assert len(model.caption(images)) == 2
    assert model.generate(["a seven"], generator=torch.Generator().manual_seed(0)).shape == (1, 1, 8, 8)


@pytest.mark.parametrize("kind", ["dense", "moe", "modality-moe", "mot"])
@pytest.mark.parametrize("preset", ["quick", "show-o"])
def test_every_layer_kind_works_in_any_strategy(digits_dir, preset, kind):
    sets = tiny_overrides(digits_dir, **{**TINY, "model.layers": f'"{kind}"', "data.image_size": 8, "data.channels": 1})
    cfg = load_config(CONFIGS / f"{preset}.toml", sets)
    cfg.image.latent = "pixels"
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(["a handwritten seven", "seven"], 300))
    expected = {"dense": DenseBlock, "moe": MoEBlock, "modality-moe": MoEBlock, "mot": MoTBlock}[kind]
    assert all(isinstance(b, expected) for b in model.backbone.layers)
    examples = [Example("t2i", "a handwritten seven"), Example("caption", "seven")]
    batch = make_batch(model, torch.rand(2, 1, 8, 8) * 2 - 1, examples)
    loss, metrics = model(batch, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss)
    if kind in ("moe", "modality-moe"):
        assert metrics["moe_aux_loss"] > 0 and model.routing_stats()["dropped_tokens"] == 0
    loss.backward()
    model.eval()
    a = model.caption(torch.rand(2, 1, 8, 8) * 2 - 1, max_new_tokens=4)
    assert len(a) == 2


def test_bad_expert_settings_are_named(digits_dir):
    with pytest.raises(ConfigError, match="model.top_k"):
        load_config(
            None, tiny_overrides(digits_dir, **{"model.layers": '"modality-moe"', "model.experts": 4, "model.top_k": 3})
        )
    with pytest.raises(ConfigError, match="must be even"):
        load_config(
            None, tiny_overrides(digits_dir, **{"model.layers": '"modality-moe"', "model.experts": 5, "model.top_k": 1})
        )
