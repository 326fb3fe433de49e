"""Video through the same parts: an image is the one-frame clip (bit-identical to the image path), autoregressive
codes over time decode the same with and without a KV cache, and the ViT reader reads a clip across its frames."""

import pytest
import torch

from conftest import tiny_preset
from unimm.models import UnifiedModel
from unimm.tasks import Example
from unimm.tokenizers.text import TextTokenizer
from unimm.train.loop import make_batch

FRAMES, SIDE = 3, 8  # conftest's clips_dir
EXAMPLES = [
    Example("t2i", "a 3 moving up"),
    Example("t2i", "a 3 moving up", drop_condition=True),
    Example("caption", "a 3 moving up"),
    Example("vqa", "which way does the digit move?", "up"),
]
TEXTS = ["a 3 moving up", "which way does the digit move?", "up"]


def _tiny(data_path, preset: str, **extra):
    extra = {"text.answer_len": 24, **extra} if preset == "unidisc" else extra  # clip captions are longer
    return tiny_preset(data_path, preset, **{"sample.max_new_tokens": 6, "sample.steps": 3, **extra})


def _model(cfg, seed: int = 0) -> UnifiedModel:
    torch.manual_seed(seed)
    return UnifiedModel(cfg, TextTokenizer.train(TEXTS, 300))


# one preset per writer kind and reader kind
ONE_EACH = ["transfusion", "chameleon", "show-o", "mar", "janus", "connector", "unidisc"]


@pytest.mark.parametrize("preset", ONE_EACH)
def test_image_is_the_one_frame_clip(digits_dir, preset):
    """The same weights as an image model and as a video model of one-frame clips give the same training loss and
    the same samples, bit for bit: the image path is the T = 1 case of the clip path."""
    image_cfg = _tiny(digits_dir, preset)
    clip_cfg = image_cfg.model_copy(deep=True)
    clip_cfg.data.frames = 1
    image_model, clip_model = _model(image_cfg), _model(clip_cfg, seed=1)
    clip_model.load_state_dict(image_model.state_dict())
    assert clip_model.writer.grid == image_model.writer.grid and clip_model.reader.grid == image_model.reader.grid
    images = torch.rand(4, 1, SIDE, SIDE) * 2 - 1
    losses = [
        model(make_batch(model, x, EXAMPLES), torch.Generator().manual_seed(0))[1]
        for model, x in ((image_model, images), (clip_model, images[:, None]))
    ]
    assert all(torch.equal(losses[0][k], losses[1][k]) for k in ("loss", "text_loss", "image_loss"))
    prompts = ["a 3 moving up", "up"]
    image_out = image_model.eval().generate(prompts, generator=torch.Generator().manual_seed(0))
    clip_out = clip_model.eval().generate(prompts, generator=torch.Generator().manual_seed(0))
    assert clip_out.shape == (2, 1, 1, SIDE, SIDE) and torch.equal(clip_out[:, 0], image_out)
    question = "which way does the digit move?"
    assert image_model.caption(images, question) == clip_model.caption(images[:, None], question)


@pytest.mark.parametrize("preset", ["chameleon", "janus"])
def test_ar_codes_over_time_cached_equals_uncached(digits_dir, preset):
    """Codes sampled frame after frame with a KV cache are the codes of re-running the whole sequence each step."""
    model = _model(_tiny(digits_dir, preset, **{"data.frames": FRAMES, "sample.image_temperature": 1.0})).eval()
    a = model.generate(["a 3 moving up", "up"], generator=torch.Generator().manual_seed(0))
    b = model.generate(["a 3 moving up", "up"], generator=torch.Generator().manual_seed(0), use_cache=False)
    assert a.shape == (2, FRAMES, 1, SIDE, SIDE)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("connector", "grid"), [("mlp", (FRAMES, 2, 2)), ("resampler", (1, 2, 3))])
def test_vit_reader_reads_across_frames(digits_dir, connector, grid):
    """Tokens per frame (a per-token connector) or the clip pooled into its queries (a pooling one); either way
    the ViT attends across frames, so a frame's features change when another frame does."""
    extra = {"reader.connector": f'{{kind = "{connector}"{", queries = 6" if connector == "resampler" else ""}}}'}
    cfg = _tiny(digits_dir, "janus", **{"data.frames": FRAMES, **extra})
    model = _model(cfg)
    assert model.reader.grid == grid == model.layout.read_grid
    clips = torch.rand(2, FRAMES, 1, SIDE, SIDE) * 2 - 1
    assert model.reader.read(model.ctx, clips).shape == (2, grid[0] * grid[1] * grid[2], cfg.model.dim)
    changed = clips.clone()
    changed[:, -1] = -1.0
    first_frame = model.reader.vit(clips)[:, :4]
    assert not torch.allclose(first_frame, model.reader.vit(changed)[:, :4])
