"""configs/recipes/video.toml is configs/quick.toml with the overrides of the best recipe run recorded in
docs/recipes/video-levers.json (its data path aside: the runs read clips written outside the repository)."""

import json
from pathlib import Path

from unimm.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def test_video_recipe_is_the_recorded_best_run():
    runs = json.loads((ROOT / "docs" / "recipes" / "video-levers.json").read_text())["runs"]
    best = max((r for r in runs if r.get("eval")), key=lambda r: r["eval"]["frame_prompt_accuracy"])
    overrides = [o for o in best["overrides"] if not o.startswith("data.path=")]
    expected = load_config(ROOT / "configs" / "quick.toml", [*overrides, 'data.path="data/moving_mnist_16"'])
    recipe = load_config(ROOT / "configs" / "recipes" / "video.toml")
    assert recipe.model == expected.model and recipe.codec == expected.codec and recipe.data == expected.data
    assert recipe.train == expected.train and recipe.train.threads == 1
    assert recipe.sample == expected.sample and recipe.writer == expected.writer
    assert recipe.codec.channels == 8 and recipe.data.understand_fraction == 0.25
