"""Atomic writes and safe loading."""

import pytest
import torch

from unimm.checkpoint import atomic_write, load_state, load_weights, save_state, save_weights


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights({"a": torch.ones(3)}, path)

    def crash(tmp):
        open(tmp, "wb").write(b"partial")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert torch.equal(load_weights(path)["a"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left behind


def test_truncated_files_are_refused_with_a_clear_message(tmp_path):
    save_weights({"a": torch.ones(100)}, tmp_path / "w.safetensors")
    (tmp_path / "w.safetensors").write_bytes((tmp_path / "w.safetensors").read_bytes()[:50])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_weights(tmp_path / "w.safetensors")
    save_state({"step": 3, "x": torch.zeros(100)}, tmp_path / "s.pt")
    assert load_state(tmp_path / "s.pt")["step"] == 3
    (tmp_path / "s.pt").write_bytes((tmp_path / "s.pt").read_bytes()[:60])
    with pytest.raises(ValueError, match="corrupt"):
        load_state(tmp_path / "s.pt")


def test_state_refuses_pickled_code(tmp_path):
    torch.save({"f": print}, tmp_path / "evil.pt")  # arbitrary objects need weights_only=False
    with pytest.raises(ValueError):
        load_state(tmp_path / "evil.pt")
