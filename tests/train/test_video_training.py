"""Training on a video dataset: ``data.path`` at Moving MNIST clips trains every preset (text-to-video, video
captioning and video QA from each clip's own questions) and the run reads and writes clips."""

import pytest
import torch

from conftest import PRESETS, tiny_preset
from unimm.config import load_config
from unimm.data import load_split
from unimm.models import UnifiedModel
from unimm.train.loop import resolve_data, train
from unimm.train.stream import ExampleStream

FRAMES, SIDE = 3, 8  # conftest's clips_dir


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_on_clips_and_generates_them(clips_dir, tmp_path, preset):
    """``data.path`` at a video dataset and nothing else: the run takes the frames from the data, trains, and the
    reloaded model generates clips [B, T, C, H, W], captions / answers about clips, scores answers after a clip
    and gives a held-out loss of clips after their prompts."""
    extra = {"text.answer_len": 24} if preset == "unidisc" else {}  # clip captions are longer than digit ones
    cfg = tiny_preset(clips_dir, preset, **{"sample.max_new_tokens": 6, "sample.steps": 3, **extra})
    out = train(cfg, tmp_path / preset, progress=False)
    model = UnifiedModel.from_pretrained(out)
    assert model.cfg.data.frames == FRAMES and model.writer.codec.grid[0] == FRAMES
    clips = model.generate(["a 3 moving up", "a 5 moving to the left"], generator=torch.Generator().manual_seed(0))
    assert clips.shape == (2, FRAMES, 1, SIDE, SIDE) and clips.min() >= -1 and clips.max() <= 1
    read = load_split(clips_dir, "test").images[:2]
    answers = model.caption(read, question="which way does the digit move?")
    assert len(model.caption(read)) == len(answers) == 2 and all(isinstance(a, str) for a in answers)
    with pytest.raises(ValueError, match=r"clips \[B, 3, 1, 8, 8\]"):
        model.caption(read[:, 0])  # a video model reads clips, not single images
    scores = model.score_texts(read, ["up", "down"], question="which way does the digit move?")
    assert scores.shape == (2, 2) and bool(torch.isfinite(scores).all())
    held_out = model.image_loss(read, ["a 3 moving up", "a 5 moving to the left"])  # every writer defines it
    assert held_out.shape == (2,) and bool((held_out > 0).all())


def test_video_training_data_asks_each_clips_own_questions(clips_dir):
    """A video dataset trains text-to-video, captioning and video QA: VQA examples are the clip's own questions."""
    cfg = load_config(None, [f'data.path="{clips_dir}"', "data.vqa_fraction=1.0", "data.understand_fraction=0.5"])
    data, templates = resolve_data(cfg)
    assert cfg.data.frames == FRAMES and data.images.shape[1:] == (FRAMES, 1, SIDE, SIDE)
    stream = ExampleStream(data, templates, cfg.data, 64, 0)
    samples = stream.samples(0)
    vqa = [(i, ex) for i, ex, _ in samples if ex.task == "vqa"]
    assert vqa and {ex.task for _, ex, _ in samples} == {"vqa", "t2i"}
    assert all((ex.text, ex.answer) in data.qa[i] for i, ex in vqa)
    assert any(ex.text == "which way does the digit move?" for _, ex in vqa)


def test_frames_must_match_the_dataset(clips_dir, digits_dir):
    with pytest.raises(ValueError, match="holds clips of 3 frames"):
        resolve_data(load_config(None, [f'data.path="{clips_dir}"', "data.frames=8"]))
    with pytest.raises(ValueError, match="holds images, not clips"):
        resolve_data(load_config(None, [f'data.path="{digits_dir}"', "data.frames=1"]))
