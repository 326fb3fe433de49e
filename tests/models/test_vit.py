"""The understanding ViT: shapes, bidirectional attention, and that it learns to classify."""

import torch

from unimm.data import load_split
from unimm.models.vit import ViTEncoder


def test_shapes_and_every_patch_sees_every_patch():
    vit = ViTEncoder(3, 16, patch_size=4, dim=32, depth=2, heads=2).eval()
    x = torch.rand(2, 3, 16, 16)
    feats = vit(x)
    assert feats.shape == (2, 16, 32)
    y = x.clone()
    y[:, :, -4:, -4:] += 1.0  # change only the last patch: the first patch's features must change too
    assert (vit(y)[:, 0] - feats[:, 0]).abs().max() > 1e-5


def test_classifier_head_learns_digits(digits_dir):
    torch.manual_seed(0)
    data = load_split(digits_dir, "train")
    vit = ViTEncoder(1, 8, patch_size=2, dim=32, depth=2, heads=2)
    head = torch.nn.Linear(32, 10)  # mean-pooled features -> classes, as the vit reader pre-trains it

    def classify(images: torch.Tensor) -> torch.Tensor:
        return head(vit(images).mean(1))

    opt = torch.optim.AdamW([*vit.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(classify(data.images), data.labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    acc = (classify(data.images).argmax(-1) == data.labels).float().mean()
    assert acc > 0.8
