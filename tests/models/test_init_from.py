"""model.init: a run's backbone from a local Hugging Face Llama (or a unimm run), upcycled to its layer kind."""

import json

import pytest
import torch

from conftest import tiny_overrides, train_until
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from unimm.config import load_config
from unimm.models import UnifiedModel
from unimm.models.init_from import apply_init, init_tokenizer
from unimm.train.loop import train

transformers = pytest.importorskip("transformers")
TEXTS = ["a handwritten seven", "the digit three", "an image of a zero", "what digit is this?", "nine eight one two"]
DIMS = {"model.dim": 64, "model.depth": 2, "model.heads": 4, "model.kv_heads": 2, "model.hidden_dim": 96}
MOE = {"layers.kind": '"moe"', "layers.experts": 4, "layers.top_k": 2, "layers.expert_hidden_dim": 96}
KINDS = {
    "dense": {},
    "moe": MOE,
    "modality-moe": {**MOE, "layers.kind": '"modality-moe"'},
    "mot": {"layers.kind": '"mot"'},
}


def _save_tiny(path, kind: str = "llama") -> None:
    """A tiny Llama (or Qwen2: q/k/v biases, tied embeddings, rope_theta 1e6) with a byte-level BPE tokenizer.json
    of its own (special tokens <unk> <s> </s>, none of unimm's)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=alphabet)
    tok.train_from_iterator(TEXTS, trainer=trainer)
    tok.save(str(path / "tokenizer.json"))
    torch.manual_seed(0)
    common = dict(
        vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
    )  # fmt: skip
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, tie_word_embeddings=False))
    else:
        config = transformers.Qwen2Config(**common, tie_word_embeddings=True, rope_theta=1e6)
        model = transformers.Qwen2ForCausalLM(config)
    model.eval().save_pretrained(path, safe_serialization=True)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llama")
    _save_tiny(path)
    return path


def _cfg(digits_dir, llama_dir, **extra):
    sets = {"data.image_size": 8, "data.channels": 1, "model.init": f'"{llama_dir}"', **DIMS}
    return load_config(None, tiny_overrides(digits_dir, **{**sets, **extra}))


def _initialised(cfg) -> UnifiedModel:
    tok = init_tokenizer(cfg.model) if cfg.model.text_tokenizer == "init" else _trained_tokenizer()
    model = UnifiedModel(cfg, tok).eval()
    apply_init(model, torch.Generator().manual_seed(0))
    return model


def _trained_tokenizer():
    from unimm.tokenizers.text import TextTokenizer

    return TextTokenizer.train(TEXTS, vocab_size=300)


def _text_logits(model: UnifiedModel, ids: torch.Tensor) -> torch.Tensor:
    """The run's text logits (``ctx.text_logits``) for a plain text sequence of ids."""
    pos = torch.arange(ids.shape[1]).expand(ids.shape[0], 3, -1)
    modality = torch.zeros_like(ids)
    hidden, _ = model.backbone(model.backbone.embed_tokens(ids), pos, modality)
    return model.ctx.text_logits(hidden)


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_run_initialised_from_llama_keeps_its_text_logits(digits_dir, llama_dir, kind):
    cfg = _cfg(digits_dir, llama_dir, **{"model.text_tokenizer": '"init"', **KINDS[kind]})
    model = _initialised(cfg)
    ref = transformers.LlamaForCausalLM.from_pretrained(llama_dir).eval()
    vocab = ref.config.vocab_size
    hf_tok = Tokenizer.from_file(str(llama_dir / "tokenizer.json"))
    for text in TEXTS:  # the run's tokenizer gives the checkpoint's ids
        assert model.tokenizer.encode(text) == hf_tok.encode(text, add_special_tokens=False).ids
    assert model.text_vocab == vocab + 7  # unimm's special tokens appended after the checkpoint's vocabulary
    ids = torch.randint(0, vocab, (2, 13), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref(ids).logits
        got = _text_logits(model, ids)
    torch.testing.assert_close(got[..., :vocab], want, atol=1e-5, rtol=1e-5)


def test_a_run_initialised_from_qwen2_keeps_its_text_logits(digits_dir, tmp_path):
    _save_tiny(tmp_path, "qwen2")
    with pytest.raises(ValueError, match=r"model.rope_theta = 10000.0 .* model.qkv_bias = False but the checkpoint"):
        _initialised(_cfg(digits_dir, tmp_path, **{"model.text_tokenizer": '"init"'}))
    sets = {"model.text_tokenizer": '"init"', "model.rope_theta": 1e6, "model.qkv_bias": "true", **MOE}
    model = _initialised(_cfg(digits_dir, tmp_path, **sets))
    ref = transformers.Qwen2ForCausalLM.from_pretrained(tmp_path).eval()
    vocab = ref.config.vocab_size
    ids = torch.randint(0, vocab, (2, 13), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(_text_logits(model, ids)[..., :vocab], ref(ids).logits, atol=1e-5, rtol=1e-5)
    head, emb = model.backbone.lm_head.weight, model.backbone.embed_tokens.weight
    assert head.data_ptr() != emb.data_ptr() and torch.equal(head[:vocab], emb[:vocab])  # the tied head, untied


def test_new_vocabulary_rows_are_finite_and_sit_among_the_old_ones(digits_dir, llama_dir):
    # VQ codes in a shared vocabulary make the run's vocabulary larger still: text + specials + codes
    codec = {"codec.kind": '"vq"', "codec.hidden": 8, "codec.dim": 8, "codec.codebook": 16, "codec.steps": 5}
    writer = {"writer.kind": '"ar-codes"', "writer.code_features": "false", "codec.downsample": 2}
    extra = {"model.text_tokenizer": '"init"', **codec, **writer}
    model = _initialised(_cfg(digits_dir, llama_dir, **extra))
    ref = transformers.LlamaForCausalLM.from_pretrained(llama_dir).eval()
    vocab = ref.config.vocab_size
    emb, head = model.backbone.embed_tokens.weight, model.backbone.lm_head.weight
    assert emb.shape[0] > vocab + 7 + 15
    assert torch.equal(emb[:vocab], ref.model.embed_tokens.weight) and torch.equal(head[:vocab], ref.lm_head.weight)
    new = emb[vocab:]
    assert torch.isfinite(new).all() and torch.isfinite(head[vocab:]).all()
    old_norm = ref.model.embed_tokens.weight.norm(dim=-1)
    assert new.norm(dim=-1).max() < old_norm.max()  # near the mean row: never larger than a pretrained row
    ids = torch.randint(0, vocab, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model.backbone.lm_logits(ids)
    old, fresh = logits[..., :vocab], logits[..., vocab:]
    assert torch.isfinite(fresh).all()
    spread = old.std(-1, keepdim=True)
    assert ((fresh - old.mean(-1, keepdim=True)).abs() < 0.05 * spread).all()  # a new token starts as the average one


def test_a_trained_tokenizer_keeps_no_rows(digits_dir, llama_dir):
    model = _initialised(_cfg(digits_dir, llama_dir))
    ref = transformers.LlamaForCausalLM.from_pretrained(llama_dir).eval()
    emb = model.backbone.embed_tokens.weight
    torch.testing.assert_close(emb.mean(0), ref.model.embed_tokens.weight.mean(0), atol=1e-3, rtol=0)
    assert not torch.equal(emb[:50], ref.model.embed_tokens.weight[:50])  # ids mean other tokens: rows not kept
    w = ref.model.layers[0].self_attn.o_proj.weight
    assert torch.equal(model.backbone.layers[0].self_attn.o_proj.weight, w)  # the blocks are the checkpoint's


def test_a_bad_path_or_a_mismatching_dim_is_one_error_naming_it(digits_dir, llama_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model.init = .*nowhere.*no such directory"):
        train(_cfg(digits_dir, tmp_path / "nowhere"), tmp_path / "a", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a Hugging Face checkpoint"):
        train(_cfg(digits_dir, tmp_path / "empty"), tmp_path / "b", progress=False)
    cfg = _cfg(digits_dir, llama_dir, **{"model.dim": 32, "model.heads": 2})
    with pytest.raises(ValueError, match=r"model.dim = 32 but the checkpoint has 64; model.heads = 2 .* 4") as err:
        train(cfg, tmp_path / "c", progress=False)
    assert "--set model.dim=64 --set model.heads=4" in str(err.value)
    with pytest.raises(Exception, match="model.text_tokenizer = 'init' needs model.init"):
        load_config(None, ["model.text_tokenizer=init"])


def test_the_init_is_applied_once_and_not_on_resume(digits_dir, llama_dir, tmp_path, monkeypatch):
    import unimm.train.loop as loop

    calls = []
    real = loop.apply_init
    monkeypatch.setattr(loop, "apply_init", lambda model, gen: calls.append(1) or real(model, gen))
    cfg = _cfg(digits_dir, llama_dir, **{"model.text_tokenizer": '"init"', "train.steps": 4})
    out = tmp_path / "run"
    train_until(cfg, out, stop_after=2)
    vocab = Tokenizer.from_file(str(llama_dir / "tokenizer.json")).get_vocab_size()
    assert calls == [1] and json.loads((out / "init.json").read_text())["kept_rows"] == vocab
    at_2 = UnifiedModel.from_pretrained(out).backbone.state_dict()
    train(_cfg(digits_dir, llama_dir, **{"model.text_tokenizer": '"init"', "train.steps": 4}), out, resume=True,
          progress=False)  # fmt: skip
    assert calls == [1]  # a resumed run loads its own checkpoint, never model.init again
    ref = transformers.LlamaForCausalLM.from_pretrained(llama_dir)
    final = UnifiedModel.from_pretrained(out).backbone
    assert not torch.equal(final.layers[0].self_attn.o_proj.weight, ref.model.layers[0].self_attn.o_proj.weight)
    assert not torch.equal(final.layers[0].self_attn.o_proj.weight, at_2["layers.0.self_attn.o_proj.weight"])


def test_a_dense_unimm_run_upcycles_into_moe_through_the_config(digits_dir, tmp_path):
    dense_run = train(
        load_config(None, tiny_overrides(digits_dir, **{"train.steps": 2})), tmp_path / "d", progress=False
    )
    sets = {"model.init": f'"{dense_run}"', "model.text_tokenizer": '"init"', **MOE, "layers.expert_hidden_dim": 80}
    cfg = load_config(None, tiny_overrides(digits_dir, **{"data.image_size": 8, "data.channels": 1, **sets}))
    model = _initialised(cfg)
    dense = UnifiedModel.from_pretrained(dense_run)
    assert model.tokenizer.encode("a handwritten seven") == dense.tokenizer.encode("a handwritten seven")
    ids = torch.randint(0, dense.text_vocab, (2, 11), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(_text_logits(model, ids), _text_logits(dense, ids), atol=1e-5, rtol=1e-5)
    assert isinstance(model.backbone.layers[0].mlp, type(model.routed_layers()[0]))


def test_lora_trains_adapters_on_a_pretrained_backbone(digits_dir, llama_dir, tmp_path):
    """``model.init`` + ``train.lora``: the backbone starts from the checkpoint, only the adapters train, and the
    base weights stay the checkpoint's; without a base ``train.lora`` is refused."""
    from unimm.config import ConfigError

    with pytest.raises(ConfigError, match="neither train.init_from nor model.init"):
        load_config(None, tiny_overrides(digits_dir, **{"train.lora.rank": 4}))
    cfg = _cfg(digits_dir, llama_dir, **{"model.text_tokenizer": '"init"', "train.steps": 3, "train.lora.rank": 4})
    run = train(cfg, tmp_path / "lora", progress=False)
    ref = transformers.LlamaForCausalLM.from_pretrained(llama_dir)
    layer = UnifiedModel.from_pretrained(run).backbone.layers[0].self_attn.o_proj
    assert torch.equal(layer.weight, ref.model.layers[0].self_attn.o_proj.weight)  # the base is frozen
    assert layer.lora_B.abs().sum() > 0  # the adapter trained
