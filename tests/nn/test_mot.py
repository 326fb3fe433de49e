"""Mixture-of-Transformers block: dense equivalence, branch isolation, KV cache, gradients."""

import torch

from unimm.nn.block import DenseBlock
from unimm.nn.kv_cache import KVCache
from unimm.nn.mot import MoTBlock
from unimm.nn.rope import RotaryEmbedding

DIM, HEADS, KV_HEADS, HIDDEN = 16, 4, 2, 24


def _rope(b: int, length: int):
    return RotaryEmbedding(DIM // HEADS)(torch.arange(length).expand(b, 3, -1))


def _mixed_inputs(b: int = 2, length: int = 10):
    """Text, an image span (bidirectional inside), text again; row 1 left-padded by 2."""
    x = torch.randn(b, length, DIM)
    modality = torch.zeros(b, length, dtype=torch.long)
    modality[:, 3:7] = 1
    mask = torch.ones(length, length, dtype=torch.bool).tril().expand(b, -1, -1).clone()
    mask[:, 3:7, 3:7] = True
    mask[1, :, :2] = False
    mask[1, torch.arange(2), torch.arange(2)] = True  # padding attends to itself only
    return x, modality, mask


def _perturb(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.5)


def test_identical_branches_equal_dense_block():
    torch.manual_seed(0)
    dense = DenseBlock(DIM, HEADS, KV_HEADS, HIDDEN, 0, qkv_bias=True)
    _perturb(dense)  # non-trivial norm weights and biases
    mot = MoTBlock.from_dense(dense, num_branches=2)
    x, modality, mask = _mixed_inputs()
    rope = _rope(2, 10)
    expected, _ = dense(x, modality, mask, rope)
    got, aux = mot(x, modality, mask, rope)
    assert aux == {}
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    got_causal, _ = mot(x, modality, None, rope)
    torch.testing.assert_close(got_causal, dense(x, modality, None, rope)[0], atol=1e-5, rtol=1e-5)


def test_text_only_ignores_image_branch():
    torch.manual_seed(0)
    mot = MoTBlock(DIM, HEADS, KV_HEADS, HIDDEN, 0)
    x, _, mask = _mixed_inputs()
    rope = _rope(2, 10)
    text = torch.zeros(2, 10, dtype=torch.long)
    before, _ = mot(x, text, mask, rope)
    before_none, _ = mot(x, None, mask, rope)
    _perturb(mot.branches[1])
    torch.testing.assert_close(mot(x, text, mask, rope)[0], before, atol=0, rtol=0)
    torch.testing.assert_close(mot(x, None, mask, rope)[0], before_none, atol=0, rtol=0)
    torch.testing.assert_close(before, before_none, atol=0, rtol=0)


def test_image_ffn_changes_only_image_tokens():
    """Text tokens see the image only through attention (branch-1 q/k/v), never through branch 1's FFN."""
    torch.manual_seed(0)
    mot = MoTBlock(DIM, HEADS, KV_HEADS, HIDDEN, 0)
    x, modality, mask = _mixed_inputs()
    rope = _rope(2, 10)
    before, _ = mot(x, modality, mask, rope)
    _perturb(mot.branches[1].mlp)
    after, _ = mot(x, modality, mask, rope)
    text = modality == 0
    torch.testing.assert_close(after[text], before[text], atol=0, rtol=0)
    assert (after[~text] - before[~text]).abs().amax() > 1e-3
    _perturb(mot.branches[1].self_attn.qkv_proj)  # now the image keys/values change: later text tokens move
    moved, _ = mot(x, modality, mask, rope)
    assert (moved[:, 7:] - after[:, 7:]).abs().amax() > 1e-3
    torch.testing.assert_close(moved[:, :3], after[:, :3], atol=1e-6, rtol=0)  # causal: text before the image


def test_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    mot = MoTBlock(DIM, HEADS, KV_HEADS, HIDDEN, 3)
    _perturb(mot.branches[1])
    x, modality, mask = _mixed_inputs()
    cos, sin = _rope(2, 10)
    with torch.no_grad():
        schedules = [[(0, 3), (3, 7), (7, 8), (8, 9), (9, 10)], [(0, 8), (8, 10)]]  # never split the image span
        for m in (mask, None):
            full, _ = mot(x, modality, m, (cos, sin))
            for schedule in schedules:
                cache = KVCache(4, 12)  # layer_idx 3 of a 4-layer stack
                steps = []
                for s, e in schedule:
                    sub = m[:, s:e, :e] if m is not None else None
                    out, _ = mot(x[:, s:e], modality[:, s:e], sub, (cos[:, :, s:e], sin[:, :, s:e]), cache)
                    cache.advance(e - s)
                    steps.append(out)
                torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_gradients_reach_both_branches():
    torch.manual_seed(0)
    mot = MoTBlock(DIM, HEADS, KV_HEADS, HIDDEN, 0)
    x, modality, mask = _mixed_inputs()
    x.requires_grad_(True)
    y, _ = mot(x, modality, mask, _rope(2, 10))
    y.square().mean().backward()
    for branch in mot.branches:
        for name, p in branch.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert x.grad.abs().sum() > 0


def test_modality_ids_beyond_branches_use_the_last():
    torch.manual_seed(0)
    mot = MoTBlock(DIM, HEADS, KV_HEADS, HIDDEN, 0)
    x, modality, mask = _mixed_inputs()
    rope = _rope(2, 10)
    torch.testing.assert_close(mot(x, modality * 5, mask, rope)[0], mot(x, modality, mask, rope)[0])


def test_backbone_with_mot_blocks_from_dense_matches_dense():
    from unimm.nn.backbone import Backbone, BackboneConfig

    torch.manual_seed(0)
    cfg = BackboneConfig(vocab_size=40, dim=DIM, depth=2, heads=HEADS, kv_heads=KV_HEADS, hidden_dim=HIDDEN)
    dense = Backbone(cfg)
    mot = Backbone(cfg, lambda c, i: MoTBlock.from_dense(dense.layers[i]))
    mot.load_state_dict({k: v for k, v in dense.state_dict().items() if not k.startswith("layers.")}, strict=False)
    x, modality, mask = _mixed_inputs()
    pos = torch.arange(10).expand(2, 3, -1)
    torch.testing.assert_close(mot(x, pos, modality, mask)[0], dense(x, pos, modality, mask)[0], atol=1e-5, rtol=1e-5)
