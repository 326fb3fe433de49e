"""GenEval-style checks on the shapes data: the renderer is a perfect generator, wrong pictures fail."""

import random

import numpy as np
import torch

from unimm.data.shapes import ShapeObject, ShapeScene, render, sample_scene
from unimm.eval.geneval import check_image, geneval_scores


def _tensor(images: list) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).float() / 127.5 - 1


def test_rendered_scenes_score_100_percent_on_every_check():
    rng = random.Random(0)
    scenes = [sample_scene(rng) for _ in range(60)]
    scores = geneval_scores(_tensor([render(s) for s in scenes]), [s.caption() for s in scenes])
    for check in ("object", "count", "colour", "overall"):
        assert scores[check] == 1.0 and scores[f"{check}_n"] == 60
    assert scores["position"] == 1.0 and 0 < scores["position_n"] < 60  # only relation prompts have a position


def test_each_check_fails_on_the_mistake_it_is_about():
    a = ShapeObject("circle", "red", (8, 16), 4)
    b = ShapeObject("square", "blue", (24, 16), 4)
    image = np.asarray(render(ShapeScene((a, b), "left of")))
    assert check_image(image, "a red circle left of a blue square")["overall"]
    swapped = check_image(image, "a red circle right of a blue square")
    assert swapped["object"] and swapped["count"] and not swapped["position"] and not swapped["overall"]
    wrong_shape = check_image(image, "a red triangle left of a blue square")
    assert wrong_shape["colour"] and not wrong_shape["object"]
    assert not check_image(image, "a green circle")["colour"]
    assert not check_image(image, "a red circle")["count"]  # one asked for, two drawn
    blank = np.full((32, 32, 3), 255, np.uint8)
    assert check_image(blank, "two red circles") == {
        "object": False, "count": False, "colour": False, "position": None, "overall": False
    }  # fmt: skip
