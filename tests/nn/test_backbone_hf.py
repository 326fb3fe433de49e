"""The backbone loads Hugging Face Llama / Qwen2 weights and reproduces their logits."""

import pytest
import torch

from unimm.nn.backbone import Backbone

transformers = pytest.importorskip("transformers")


def _save_tiny(kind: str, path) -> torch.nn.Module:
    torch.manual_seed(0)
    common = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_theta=10000.0 if kind == "llama" else 1e6,  # a non-default theta must be read from the config
    )
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, tie_word_embeddings=False))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common, tie_word_embeddings=True))
    model.eval().save_pretrained(path, safe_serialization=True)
    return model


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_logits_match_transformers(kind, tmp_path):
    ref = _save_tiny(kind, tmp_path)
    ours = Backbone.from_hf(tmp_path).eval()
    ids = torch.randint(0, 97, (2, 11))
    with torch.no_grad():
        expected = ref(ids).logits
        got = ours.lm_logits(ids)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_cached_decoding_equals_uncached(tmp_path):
    _save_tiny("llama", tmp_path)
    model = Backbone.from_hf(tmp_path).eval()
    ids = torch.randint(0, 97, (3, 9))
    with torch.no_grad():
        full = model.lm_logits(ids)
        cache = model.new_cache(16)
        steps = [model.lm_logits(ids[:, :4], cache)]  # prefill, then one token at a time, then a chunk
        steps.append(model.lm_logits(ids[:, 4:5], cache))
        steps.append(model.lm_logits(ids[:, 5:6], cache))
        steps.append(model.lm_logits(ids[:, 6:9], cache))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_from_hf_rejects_unknown_model_type(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    with pytest.raises(ValueError, match="gpt2"):
        Backbone.from_hf(tmp_path)
