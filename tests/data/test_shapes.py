"""Generated shapes are deterministic and their captions state exactly what the pixels show."""

import random

import numpy as np
import pytest

from unimm.data import shapes


def test_same_seed_same_images_and_scenes():
    a = [(np.asarray(img), scene) for img, scene in shapes.generate(20, seed=3)]
    b = [(np.asarray(img), scene) for img, scene in shapes.generate(20, seed=3)]
    c = [scene for _, scene in shapes.generate(20, seed=4)]
    assert all(np.array_equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b, strict=True))
    assert [s for _, s in a] != c


def test_caption_matches_meta_and_pixels():
    seen_relations, seen_counts = set(), set()
    for image, scene in shapes.generate(300, seed=0):
        pixels = np.asarray(image)
        assert pixels.shape == (32, 32, 3)
        meta_scene = shapes.ShapeScene.from_meta(scene.to_meta())
        assert meta_scene == scene
        stated, relation = shapes.parse_caption(scene.caption())
        assert stated == [(o.colour, o.shape) for o in meta_scene.objects]
        assert relation == meta_scene.relation
        if relation is not None:
            assert shapes.relation_holds(*meta_scene.objects, relation)
            seen_relations.add(relation)
        seen_counts.add(len(stated))
        for obj in meta_scene.objects:  # the centre pixel has the stated colour
            x, y = obj.centre
            assert tuple(pixels[y, x]) == shapes.COLOURS[obj.colour]
        detected = shapes.detect_objects(pixels)  # shapes and colours read back from pixels alone
        assert sorted((d.colour, d.shape, d.centre) for d in detected) == sorted(
            (o.colour, o.shape, o.centre) for o in meta_scene.objects
        )
    assert seen_relations == set(shapes.RELATIONS) and seen_counts == {1, 2}


def test_shape_corners_tell_shapes_apart():
    for shape, corner_coloured in [("square", True), ("circle", False), ("triangle", False)]:
        obj = shapes.ShapeObject(shape, "red", (16, 16), 8)
        pixels = np.asarray(shapes.render(shapes.ShapeScene((obj,))))
        assert (tuple(pixels[8, 8]) == shapes.COLOURS["red"]) == corner_coloured
        assert tuple(pixels[0, 0]) == shapes.BACKGROUND


def test_relation_holds():
    left = shapes.ShapeObject("circle", "red", (6, 16), 3)
    right = shapes.ShapeObject("square", "blue", (24, 14), 3)
    assert shapes.relation_holds(left, right, "left of")
    assert shapes.relation_holds(right, left, "right of")
    assert not shapes.relation_holds(left, right, "right of")
    assert not shapes.relation_holds(left, right, "above")


def test_labels_and_parse_errors():
    scene = shapes.sample_scene(random.Random(0), p_two=0.0)
    assert shapes.class_names()[shapes.scene_label(scene)] == scene.objects[0].name
    assert shapes.parse_caption("Two blue triangles.") == ([("blue", "triangle")] * 2, None)
    with pytest.raises(ValueError):
        shapes.parse_caption("a pink hexagon")
