"""The reports the docs quote: one target per committed report folder, in the order `make reports` runs them.

A target is a preset at its own (quick) size, run by ``unimm demo`` and evaluated by ``unimm eval --suite
quick``; the demo is also rerun with training seeds 1 and 2 (``demo-seed1``, ``demo-seed2``: demo report only) so
that its table shows the spread over seeds; ``vq`` targets read images through the one VQ tokenizer that
``unimm tokenizer train configs/tok/vq.toml`` fits first, so that their differences are the strategy's, not the
tokenizer's.
"""

from __future__ import annotations

from dataclasses import dataclass

TOKENIZER_CONFIG = "configs/tok/vq.toml"


@dataclass(frozen=True)
class Target:
    name: str
    config: str  # preset, relative to the repository root
    docs: str  # folder that receives report/ (and eval/), relative to the repository root
    about: str  # how it reads and writes images: the tables' description column
    vq: bool = False  # trains on the shared VQ tokenizer (--set codec.tokenizer=...)
    overrides: tuple[str, ...] = ()  # --set items on top of the preset (the demo's other seeds)
    evaluate: bool = True  # also `unimm eval --suite quick` into docs/.../eval/ (the seed reruns skip it)


TARGETS: tuple[Target, ...] = (
    Target("demo", "configs/quick.toml", "docs/demo", "transfusion layout: next-token text, flow-matched VAE latents"),
    Target("demo-seed1", "configs/quick.toml", "docs/demo/seeds/seed1", "the demo with train.seed = 1",
           overrides=("train.seed=1",), evaluate=False),
    Target("demo-seed2", "configs/quick.toml", "docs/demo/seeds/seed2", "the demo with train.seed = 2",
           overrides=("train.seed=2",), evaluate=False),
    Target("chameleon", "configs/chameleon.toml", "docs/strategies/chameleon",
           "VQ codes in the text vocabulary, next-token both ways", vq=True),
    Target("janus", "configs/janus.toml", "docs/strategies/janus",
           "reads pixels via ViT + MLP connector; writes VQ codes next-token", vq=True),
    Target("show-o", "configs/show-o.toml", "docs/strategies/show-o",
           "VQ codes; text next-token, image MaskGIT (12 steps)", vq=True),
    Target("unidisc", "configs/unidisc.toml", "docs/strategies/unidisc",
           "VQ codes; text and image both masked diffusion", vq=True),
    Target("ar-moe", "configs/ar-moe.toml", "docs/strategies/ar-moe",
           "chameleon with top-2-of-8 routed experts of half width", vq=True),
    Target("moma", "configs/moma.toml", "docs/strategies/moma",
           "chameleon with modality-grouped experts (top-1 of 4 per modality)", vq=True),
    Target("bagel", "configs/bagel.toml", "docs/strategies/bagel",
           "next-token text, flow-matched VAE latents, Mixture-of-Transformers, ViT reader"),
    Target("mar", "configs/mar.toml", "docs/strategies/mar",
           "VAE latents in 16 random-order groups, each cell drawn by an MLP diffusion head"),
    Target("connector", "configs/connector.toml", "docs/strategies/connector",
           "ViT reader; 16 queries + MLP connector drive a frozen, pre-trained DiT decoder"),
)  # fmt: skip
DEMO_SEEDS = tuple(t for t in TARGETS if t.name.startswith("demo"))  # seed 0 (the demo itself), 1, 2
STRATEGIES = tuple(t for t in TARGETS if t not in DEMO_SEEDS)


def select(names: list[str] | None) -> list[Target]:
    """The targets named (all of them for None / empty), in the declared order; an unknown name is an error."""
    known = {t.name: t for t in TARGETS}
    unknown = [n for n in names or [] if n not in known]
    if unknown:
        raise ValueError(f"unknown report target {', '.join(map(repr, unknown))}; use one of {', '.join(known)}")
    return [t for t in TARGETS if not names or t.name in names]
