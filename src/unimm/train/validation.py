"""A held-out loss during training: the training loss on the data's val split, logged as ``val_loss``.

The val examples follow the training task mix without augmentation (``data.shift``, ``rotate``, ``scale`` = 0), and
every evaluation sees the same ``train.val_batches`` batches with the same noise, so values are comparable across
steps. It never touches training: no gradients, every module in eval mode and put back as it was, the global RNG
restored, and its own stream and generators. Its batches are cut into shards like training's (rank r of W runs its
S/W shards) and the values are summed in shard order, so the result is the same whatever the number of processes.
"""

import sys

import torch

from unimm.config import Config
from unimm.data import load_split
from unimm.models import UnifiedModel
from unimm.train.distributed import DistEnv
from unimm.train.kernels import compute
from unimm.train.stream import ExampleStream, make_batch

METRICS = ("loss", "text_loss", "image_loss")
NOISE_OFFSET = 10**9  # val noise: seeds apart from those of the training shards (``seed * 7919 + k``)


class Validation:
    def __init__(self, cfg: Config, templates, env: DistEnv) -> None:
        """``cfg`` resolved (image size and channels filled in, ``train.batch_shards`` set)."""
        t = cfg.train
        self.every, self.batches, self.shards, self.env = t.val_every, t.val_batches, t.batch_shards, env
        self.seed, self.train = t.seed, t
        data = load_split(cfg.data.path, "val", cfg.data.image_size, cfg.data.channels)
        if not len(data):
            raise ValueError("it holds no examples")
        mix = cfg.data.model_copy(
            update={"shift": 0, "rotate": 0.0, "scale": 0.0, "multi_object_repeat": 1, "edit_kind_repeat": {}}
        )
        self.stream = ExampleStream(data, templates, mix, t.batch_size // self.shards, t.seed)

    @classmethod
    def build(cls, cfg: Config, templates, env: DistEnv) -> "Validation | None":
        """None when ``train.val_every`` = 0 or the data has no val split (said once)."""
        if not cfg.train.val_every:
            return None
        try:
            return cls(cfg, templates, env)
        except (FileNotFoundError, ValueError) as err:
            if env.main:
                print(f"note: no val_loss: the val split of {cfg.data.path} cannot be read ({err})", file=sys.stderr)
            return None

    def due(self, done: int, steps: int) -> bool:
        return done % self.every == 0 or done == steps

    @torch.no_grad()
    def __call__(self, core: UnifiedModel) -> dict[str, float]:
        """``val_loss``, ``val_text_loss``, ``val_image_loss``: means over the val shards. Every process calls it."""
        env, per = self.env, self.shards // self.env.world
        mine = [b * self.shards + env.rank * per + s for b in range(self.batches) for s in range(per)]
        modes = [(m, m.training) for m in core.modules()]
        devices = [env.device.index] if env.device.type == "cuda" else []
        values = []
        core.eval()
        try:
            with torch.random.fork_rng(devices=devices):
                for k in mine:
                    images, examples = self.stream.batch(k)
                    batch = make_batch(core, images, examples)
                    batch = batch.to(env.device) if env.device.type != "cpu" else batch
                    gen = torch.Generator().manual_seed(NOISE_OFFSET + self.seed * 7_919 + k)
                    with compute(self.train, env.device):
                        _, metrics = core(batch, gen)
                    values.append((k, [float(metrics[m]) for m in METRICS]))
        finally:
            for m, training in modes:
                m.training = training
        ordered = sorted(v for rank in env.gather(values) for v in rank)
        return {f"val_{m}": round(sum(v[i] for _, v in ordered) / len(ordered), 5) for i, m in enumerate(METRICS)}
