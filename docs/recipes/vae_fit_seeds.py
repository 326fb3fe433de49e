"""How much the demo's VAE codec depends on the training seed: fit it as a run does (``VAEPatches.prepare``, the
quick preset's codec settings) for each seed, and print its reconstruction MSE on the first 2,000 test images.

    python docs/recipes/vae_fit_seeds.py --steps 600 1200 --seeds 0 1 2 [--lr 2e-3]
"""

import argparse

import torch
import torch.nn.functional as F

import unimm.models.vae as vae
from unimm.config import load_config
from unimm.data import load_split
from unimm.tokenizers.fit import fit_image_tokenizer

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--steps", type=int, nargs="+", default=[600])
p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
p.add_argument("--lr", type=float, default=None, help="the fit's learning rate (default: the fit's own)")
args = p.parse_args()
cfg = load_config("configs/quick.toml")
c, d = cfg.codec, cfg.data
if args.lr is not None:  # prepare calls the fit with its default lr: hand it another
    vae.fit_image_tokenizer = lambda *a, **k: fit_image_tokenizer(*a, lr=args.lr, **k)
train = load_split(d.path, "train", d.image_size, d.channels).images
test = load_split(d.path, "test", d.image_size, d.channels).images[:2000]
for steps in args.steps:
    for seed in args.seeds:
        torch.manual_seed(seed)  # as a run seeds its modules before it builds them
        codec = vae.VAEPatches(train.shape[1], train.shape[-1], c.patch_size, c.channels, c.downsample, c.hidden,
                               steps, c.kl)  # fmt: skip
        stats = codec.prepare(train, seed=seed, progress=False)
        with torch.no_grad():
            mse = F.mse_loss(codec.vae.reconstruct(test)[0], test).item()
        print(
            f"steps {steps} seed {seed}: test MSE {mse:.4f}, KL {stats['vae_kl']:.2f}, scale {stats['vae_scale']:.3f}"
        )
