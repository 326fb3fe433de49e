"""``sample.edit_strength`` (latent writers): an edit's sampler starts part-way, from its source image's latent
noised to the first step it keeps (SDEdit), instead of from noise."""

import pytest
import torch

from conftest import tiny_preset
from unimm.config import ConfigError, load_config, with_sampling
from unimm.models import UnifiedModel
from unimm.tokenizers.text import TextTokenizer

TEXTS = ["make the circle blue", "remove the square", "a red circle"]


def _model(digits_dir, strength: float, residual: bool = False) -> UnifiedModel:
    over = {"writer.residual": str(residual).lower(), "sample.steps": 10, "sample.edit_strength": strength}
    cfg = tiny_preset(digits_dir, "quick", **over)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=[TEXTS[2]] * 32)
    return model.eval()


@pytest.mark.parametrize("residual", [False, True])
def test_the_sampler_starts_from_each_edits_source(digits_dir, residual):
    model = _model(digits_dir, 0.3, residual)
    w, seen = model.writer, {}
    run = w.objective.run_sampler
    w.objective.run_sampler = lambda *a, **k: seen.update(k) or run(*a, **k)
    sources = torch.rand(2, 1, 8, 8) * 2 - 1
    with torch.no_grad():
        edited = model.edit(sources, TEXTS[:2])
        latents = w.codec.encode(sources)
    assert edited.shape == sources.shape and torch.isfinite(edited).all() and seen["strength"] == 0.3
    torch.testing.assert_close(seen["init"], torch.zeros_like(latents) if residual else latents)


def test_a_low_strength_keeps_the_source(digits_dir):
    """One kept step from t = 0.1: an untrained model's edit stays near its source's round trip; from noise not."""
    sources = torch.rand(3, 1, 8, 8) * 2 - 1
    dist = {}
    for strength in (0.1, 1.0):
        model = _model(digits_dir, strength)
        with torch.no_grad():
            out = model.edit(sources, [TEXTS[0]] * 3, generator=torch.Generator().manual_seed(0))
            kept = model.writer.codec.decode(model.writer.codec.encode(sources)).clamp(-1, 1)
        dist[strength] = (out - kept).abs().mean().item()
    assert dist[0.1] < 0.5 * dist[1.0]


def test_text_to_image_has_no_source_to_start_from(digits_dir):
    model = _model(digits_dir, 0.5)
    with torch.no_grad(), pytest.raises(ValueError, match="2 of 2 prompts have none"):
        model.generate(TEXTS[:2])


def test_writers_that_cannot_start_from_a_source_refuse_it():
    with pytest.raises(ConfigError, match="writer kind 'ar-codes' cannot"):
        load_config("configs/chameleon.toml", ["sample.edit_strength=0.5"])
    with pytest.raises(ConfigError, match="writer kind 'ar-codes' cannot"):
        with_sampling(load_config("configs/chameleon.toml"), ["edit_strength=0.5"])
    assert with_sampling(load_config("configs/quick.toml"), ["edit_strength=0.5"]).sample.edit_strength == 0.5
