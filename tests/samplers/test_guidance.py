import pytest
import torch

from unimm.samplers import classifier_free_guidance

calls: list[int] = []


def fake_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    calls.append(x.shape[0])
    B = x.shape[0] // 2
    cond = 2 * x[:B] + t[:B, None]
    uncond = x[B:] - t[B:, None]
    return torch.cat([cond, uncond])


@pytest.mark.parametrize("scale", [0.0, 1.0, 4.5])
def test_cfg_math(scale):
    x, t = torch.randn(3, 5), torch.tensor([1.0, 2.0, 3.0])
    cond, uncond = 2 * x + t[:, None], x - t[:, None]
    calls.clear()
    out = classifier_free_guidance(fake_model, scale)(x, t)
    assert calls == [6]  # one doubled-batch call
    assert out.shape == x.shape
    torch.testing.assert_close(out, uncond + scale * (cond - uncond))
    if scale == 0.0:
        torch.testing.assert_close(out, uncond)
    if scale == 1.0:
        torch.testing.assert_close(out, cond)
