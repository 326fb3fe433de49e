"""The optional VAE latent: shapes, learning, freezing, and use inside the transfusion layout."""

import torch

from conftest import tiny_overrides
from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.models.vae import SmallVAE, VAEPatches
from unimm.train import train


def test_vae_shapes_and_patch_round_trip():
    codec = VAEPatches(channels=3, image_size=16, patch_size=2, latent_channels=4, downsample=4, hidden=8)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    patches = codec.encode(x)
    assert patches.shape == (2, 4, 16) and codec.grid == (1, 2, 2) and codec.patch_dim == 16
    assert codec.decode(patches).shape == x.shape
    mean, logvar = codec.vae.encode(x)
    assert mean.shape == logvar.shape == (2, 4, 4, 4)


def test_fitting_improves_reconstruction_scales_latents_and_freezes(digits_dir):
    from unimm.data import load_split

    images = load_split(digits_dir, "train").images
    codec = VAEPatches(1, 8, 1, latent_channels=4, downsample=2, hidden=16, fit_steps=150)
    with torch.no_grad():
        before = (codec.decode(codec.encode(images)) - images).pow(2).mean()
    stats = codec.prepare(images, progress=False)
    with torch.no_grad():
        after = (codec.decode(codec.encode(images)) - images).pow(2).mean()
        z = codec.encode(images)
    assert after < 0.5 * before and stats["vae_recon_mse"] < before
    assert abs(z.std().item() - 1) < 0.05  # latents scaled to unit variance for the diffusion loss
    assert bool(codec.fitted) and not any(p.requires_grad for p in codec.parameters())


def test_kl_term_is_zero_for_a_standard_normal_posterior():
    vae = SmallVAE(1, 2, hidden=4, downsample=2)
    for p in vae.encoder[-1].parameters():
        torch.nn.init.zeros_(p)
    _, _, kl = vae.loss(torch.zeros(1, 1, 8, 8), 1.0)
    assert kl.abs() < 1e-7


def test_transfusion_trains_on_vae_latents_and_keeps_them_frozen(digits_dir, tmp_path):
    vae = '{kind = "vae", patch_size = 2, downsample = 2, steps = 20, hidden = 8}'
    over = tiny_overrides(digits_dir, codec=vae)
    out = train(load_config(None, over), tmp_path / "r", progress=False)
    assert (out / "codec.json").exists()
    model = UnifiedModel.from_pretrained(out)
    assert bool(model.writer.codec.fitted) and model.writer.grid == (1, 2, 2)
    fitted = {k: v.clone() for k, v in model.writer.codec.state_dict().items()}
    train(load_config(None, [*over, "train.steps=6"]), out, resume=True, progress=False)
    resumed = UnifiedModel.from_pretrained(out)
    for k, v in fitted.items():
        assert torch.equal(resumed.writer.codec.state_dict()[k], v), k
    assert resumed.generate(["seven"], steps=2).shape == (1, 1, 8, 8)
