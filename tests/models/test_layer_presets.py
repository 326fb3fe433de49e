"""``[layers]``: the expert presets (ar-moe, moma, bagel) end to end at tiny size, and the layer kinds
inside any strategy."""

import json

import pytest
import torch

from conftest import tiny_overrides, tiny_preset
from unimm.config import ConfigError, load_config
from unimm.models import UnifiedModel
from unimm.nn.block import DenseBlock
from unimm.nn.moe import MoEFeedForward
from unimm.nn.mot import MoTBlock
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch, train

TINY = {"sample.max_new_tokens": 16, "sample.steps": 3}  # the parts: conftest.TINY_PARTS (4 experts)
EXTRA = {  # what each preset keeps of its own at tiny size
    "ar-moe": {"layers.top_k": 2},  # top-2 routing
    "moma": {},
    "bagel": {"reader.pretrain_steps": 3},  # the ViT's classification pre-training
}


def _is_moe(block) -> bool:
    """An MoE block is the dense block whose feed-forward is routed."""
    return type(block) is DenseBlock and isinstance(block.mlp, MoEFeedForward)


def _is_dense(block) -> bool:
    return type(block) is DenseBlock and not isinstance(block.mlp, MoEFeedForward)


BLOCKS = {"ar-moe": _is_moe, "moma": _is_moe, "bagel": lambda b: isinstance(b, MoTBlock)}


@pytest.mark.parametrize("preset", sorted(BLOCKS))
def test_expert_preset_trains_logs_routing_captions_and_generates(digits_dir, tmp_path, preset):
    cfg = tiny_preset(digits_dir, preset, **TINY, **EXTRA[preset])
    out = train(cfg, tmp_path / preset, progress=False)
    model = UnifiedModel.from_pretrained(out)
    assert all(BLOCKS[preset](b) for b in model.backbone.layers)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if BLOCKS[preset] is _is_moe:
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
    routed = ", experts = 4, top_k = 1" if kind.endswith("moe") else ""
    cfg = tiny_preset(digits_dir, preset, **{**TINY, "layers": f'{{kind = "{kind}"{routed}}}'})
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(["a handwritten seven", "seven"], 300))
    expected = {"dense": _is_dense, "moe": _is_moe, "modality-moe": _is_moe, "mot": lambda b: isinstance(b, MoTBlock)}
    assert all(expected[kind](b) for b in model.backbone.layers)
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
    with pytest.raises(ConfigError, match=r"layers.top_k \(3\) exceeds the 2 experts"):
        load_config(None, tiny_overrides(digits_dir, layers='{kind = "modality-moe", experts = 4, top_k = 3}'))
    with pytest.raises(ConfigError, match=r"layers.experts \(5\) must be even"):
        load_config(None, tiny_overrides(digits_dir, layers='{kind = "modality-moe", experts = 5, top_k = 1}'))
    with pytest.raises(ConfigError, match="unknown config key 'layers.experts' for layers kind 'dense'"):
        load_config(None, tiny_overrides(digits_dir, **{"layers.experts": 4}))


@pytest.mark.parametrize("route", ["modality", "role"])
def test_modality_moe_route_decides_the_expert_half_of_images_read(digits_dir, route):
    """Only images read (captioning): by modality their tokens use the image half of the experts (2-3), by role
    the text half (0-1), which then takes every token."""
    layers = f'{{kind = "modality-moe", experts = 4, top_k = 1, route = "{route}"}}'
    cfg = tiny_preset(digits_dir, "quick", **TINY, layers=layers)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(["a handwritten seven", "seven"], 300))
    batch = make_batch(model, torch.rand(2, 1, 8, 8) * 2 - 1, [Example("caption", "seven")] * 2)
    model(batch, torch.Generator().manual_seed(0))
    tokens = torch.tensor(model.routing_stats()["expert_tokens"])  # [layer, expert]
    image_half = int(tokens[:, 2:].sum())
    assert (image_half > 0) == (route == "modality")
