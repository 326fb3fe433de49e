"""Fine-tuning a run (train.init_from) with LoRA adapters: init, gradients, merge, adapter file, resume, errors."""

import copy

import pytest
import torch

from conftest import tiny_overrides, train_until
from unimm.checkpoint import load_weights
from unimm.config import ConfigError, load_config
from unimm.data import load_split
from unimm.data.prepare import prepare_shapes
from unimm.models import UnifiedModel
from unimm.models.adapters import ADAPTER_FILE, add_adapters, apply_adapter, read_adapter
from unimm.train import train
from unimm.train.finetune import finetune_config, merge_run
from unimm.train.loop import make_batch
from unimm.train.stream import ExampleStream

FT = {"train.steps": 4, "train.batch_size": 8, "train.warmup": 1, "train.save_every": 2, "train.lr": 0.01,
      "train.tensorboard": "false", "train.log_every": 1}  # fmt: skip


@pytest.fixture(scope="module")
def base_run(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("base") / "run"
    return train(load_config(None, tiny_overrides(digits_dir, **{"codec.kind": "vae", "codec.hidden": 8,
                                                                  "codec.channels": 2, "codec.downsample": 2,
                                                                  "codec.steps": 3, "codec.patch_size": 1})),
                 out, progress=False)  # fmt: skip


def _sets(**extra) -> list[str]:
    return [f"{k}={v}" for k, v in {**FT, **extra}.items()]


def _loss(model: UnifiedModel, digits_dir, seed: int = 0) -> torch.Tensor:
    """The training loss of one fixed batch with fixed noise (the model in eval mode: no dropout)."""
    data = load_split(digits_dir, "train", model.cfg.data.image_size, model.cfg.data.channels)
    from unimm.data import templates_for

    stream = ExampleStream(data, templates_for(data), model.cfg.data, 8, seed)
    images, examples = stream.batch(0)
    with torch.no_grad():
        loss, _ = model.eval()(make_batch(model, images, examples), torch.Generator().manual_seed(seed))
    return loss


def test_a_fresh_adapter_leaves_outputs_unchanged(base_run, digits_dir):
    base = UnifiedModel.from_pretrained(base_run)
    adapted = copy.deepcopy(base)
    info = add_adapters(adapted, load_config(None, ["train.init_from='x'", "train.lora.rank=4"]).train.lora)
    assert len(info["layers"]) == 4 * base.cfg.model.depth  # qkv, o, gate_up, down in every block
    assert torch.equal(_loss(adapted, digits_dir), _loss(base, digits_dir))
    images = load_split(digits_dir, "test", 8, 1).images[:4]
    assert adapted.caption(images) == base.caption(images)


def test_only_adapter_parameters_get_gradients(base_run, digits_dir):
    model = UnifiedModel.from_pretrained(base_run)
    lora = load_config(None, ["train.init_from='x'", "train.lora.rank=4", "train.lora.train=['embed_tokens']"])
    info = add_adapters(model, lora.train.lora)
    model.train()
    data = load_split(digits_dir, "train", 8, 1)
    from unimm.data import templates_for

    images, examples = ExampleStream(data, templates_for(data), model.cfg.data, 8, 0).batch(0)
    loss, _ = model(make_batch(model, images, examples), torch.Generator().manual_seed(0))
    loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert grads == trainable
    assert all(n.endswith((".lora_A", ".lora_B")) or n == "backbone.embed_tokens.weight" for n in grads)
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) == info["trainable"]
    assert all(model.get_parameter(n).grad.abs().sum() > 0 for n in grads if n.endswith(".lora_B"))


def test_bad_target_names_are_one_error_naming_them(base_run):
    model = UnifiedModel.from_pretrained(base_run)
    lora = load_config(None, ["train.init_from='x'", "train.lora.targets=['qkv', 'o_proj', 'mlp.gate']"]).train.lora
    with pytest.raises(ValueError, match=r"targets: no linear layer of this model is named 'qkv', 'mlp.gate'; ") as e:
        add_adapters(model, lora)
    assert "qkv_proj" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_lora_without_a_base_is_refused():
    with pytest.raises(ConfigError, match="train.lora trains adapters on a trained model"):
        load_config(None, ["train.lora.rank=4"])


def test_lora_finetune_saves_an_adapter_that_round_trips_and_merges(base_run, digits_dir, tmp_path):
    run = train(finetune_config(base_run, overrides=_sets(**{"train.lora.rank": 4, "train.ema": 0.5})),
                tmp_path / "ft", progress=False)  # fmt: skip
    tuned = UnifiedModel.from_pretrained(run)
    base = UnifiedModel.from_pretrained(base_run)
    # the base stays frozen: every weight it has is unchanged in the fine-tune
    tuned_state = tuned.state_dict()
    assert all(torch.equal(v, tuned_state[k]) for k, v in base.state_dict().items())
    # the adapter file holds the adapters only, and base + adapter file = the fine-tuned model
    tensors, info = read_adapter(run / ADAPTER_FILE)
    assert tensors and all(k.endswith((".lora_A", ".lora_B")) for k in tensors)
    assert info["lora"].rank == 4 and info["base"] == str(base_run)
    assert (run / ADAPTER_FILE).stat().st_size < (run / "model.safetensors").stat().st_size / 3
    apply_adapter(base, run / ADAPTER_FILE)
    assert all(torch.equal(v, tuned_state[k]) for k, v in base.state_dict().items())
    assert any(tensors[k].abs().sum() > 0 for k in tensors if k.endswith(".lora_B"))  # it trained
    # merged: a plain model directory with the same outputs
    merged_dir = merge_run(run, tmp_path / "merged")
    merged = UnifiedModel.from_pretrained(merged_dir)
    assert merged.cfg.train.lora is None and not any(
        "lora_" in k for k in load_weights(merged_dir / "model.safetensors")
    )
    torch.testing.assert_close(_loss(merged, digits_dir), _loss(tuned, digits_dir), rtol=1e-5, atol=1e-6)
    assert not torch.equal(_loss(merged, digits_dir), _loss(UnifiedModel.from_pretrained(base_run), digits_dir))
    images = load_split(digits_dir, "test", 8, 1).images[:8]
    assert merged.caption(images) == tuned.caption(images)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        merge_run(merged_dir, tmp_path / "again")


def test_lora_resume_is_exact(base_run, tmp_path):
    sets = _sets(**{"train.steps": 6, "train.lora.rank": 4, "train.lora.dropout": 0.2, "train.ema": 0.5})
    train(finetune_config(base_run, overrides=sets), tmp_path / "full", progress=False)
    train_until(finetune_config(base_run, overrides=sets), tmp_path / "half", stop_after=2)
    train(finetune_config(base_run, overrides=sets), tmp_path / "half", resume=True, progress=False)
    for name in ("checkpoints/step_0000006/model.safetensors", "model.safetensors", ADAPTER_FILE):
        a, b = load_weights(tmp_path / "full" / name), load_weights(tmp_path / "half" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def test_finetune_on_other_data_keeps_the_base_geometry_and_tokenizer(base_run, tmp_path):
    shapes = tmp_path / "shapes"
    prepare_shapes(shapes, count=80, seed=0, image_size=16)  # RGB 16x16, captions with words digits never had
    sets = _sets(**{"data.path": f'"{shapes}"', "train.lora.rank": 2, "train.steps": 2})
    run = train(finetune_config(base_run, overrides=sets), tmp_path / "ft", progress=False)
    cfg = load_config(run / "config.toml")
    assert (cfg.data.image_size, cfg.data.channels) == (8, 1)
    assert (run / "tokenizer" / "tokenizer.json").read_text() == (base_run / "tokenizer" / "tokenizer.json").read_text()
    model = UnifiedModel.from_pretrained(run)
    assert len(model.caption(load_split(shapes, "test", 8, 1).images[:2])) == 2


def test_a_config_that_changes_the_base_model_is_refused_naming_the_keys(base_run, digits_dir, tmp_path):
    cfg = load_config(None, tiny_overrides(digits_dir, **{"model.depth": 3, "train.init_from": f'"{base_run}"'}))
    with pytest.raises(ValueError, match=r"differs from it in .*model.depth \(3 != 2\)"):
        train(cfg, tmp_path / "x", progress=False)


def test_finetune_and_merge_through_the_cli(base_run, tmp_path):
    from typer.testing import CliRunner

    from unimm.cli import app

    runner = CliRunner()
    sets = [a for o in _sets(**{"train.steps": 2}) for a in ("--set", o)]
    result = runner.invoke(app, ["finetune", str(base_run), "--out", str(tmp_path / "ft"), "--lora", *sets])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ft" / ADAPTER_FILE).is_file() and "LoRA: adapters on 8 layers" in result.output
    result = runner.invoke(app, ["merge", str(tmp_path / "ft"), "--out", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "merged" / "config.toml").train.lora is None
    bad = ["--set", "train.lora.targets=['qkv']"]
    result = runner.invoke(app, ["finetune", str(base_run), "--out", str(tmp_path / "bad"), *sets, *bad])
    assert result.exit_code == 2 and "no linear layer of this model is named 'qkv'" in result.output
