"""``ChatSession``: multi-turn chat over the KV cache with images in and out, bad input refused without losing
the session; ``unimm chat`` driven through stdin."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import force, tiny_model
from unimm.chat import MAX_MESSAGE_CHARS, ChatSession
from unimm.cli import app
from unimm.models import UnifiedModel
from unimm.models.continuation import DecodeSettings


def test_a_session_keeps_the_conversation_and_survives_bad_input(digits_dir):
    model = tiny_model(digits_dir, "chameleon")
    tok = model.tokenizer
    force(model, {1: tok.boi_id, 3: tok.eos_id, 6: tok.eos_id})
    session = ChatSession(model, DecodeSettings(max_new_tokens=6))
    image = torch.rand(1, 8, 8) * 2 - 1
    first = session.send("draw a two", [image])
    assert len(first.images) == 1 and first.stop == "eos"
    used = session.state.length
    for bad, match in [
        (("x" * (MAX_MESSAGE_CHARS + 1),), "characters"),
        (("x", [torch.rand(3, 8, 8)]), "chat expects"),
        (("x", [image * 5]), "values in"),
        (("now a zero " * 60,), "positions"),
    ]:
        with pytest.raises(ValueError, match=match):
            session.send(*bad)
        assert session.state.length == used, "a refused message leaves the conversation as it was"
    second = session.send("now a zero")
    assert second.stop == "eos" and len(session.turns) == 4
    assert session.turns[0].parts[0] is not image and torch.equal(session.turns[0].parts[0], image)
    assert session.turns[1].parts == tuple(first.parts)


def test_chat_refuses_masked_text(digits_dir):
    with pytest.raises(NotImplementedError, match="fixed-length answer"):
        ChatSession(tiny_model(digits_dir, "unidisc"))


def test_unimm_chat_reads_stdin_attaches_images_and_saves_the_images_it_answers_with(digits_dir, tmp_path, monkeypatch):
    model = tiny_model(digits_dir, "chameleon")
    tok = model.tokenizer
    force(model, {0: tok.boi_id, 1: tok.encode("two")[0], 2: tok.eos_id, 4: tok.eos_id})
    monkeypatch.setattr(UnifiedModel, "from_pretrained", classmethod(lambda cls, directory: model))
    digit = tmp_path / "digit.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(digit)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    out = tmp_path / "replies"
    lines = [
        f"/image {tmp_path / 'missing.png'}",
        f"/image {corrupt}",
        f"/image {digit}",
        "draw a two",
        "x" * (MAX_MESSAGE_CHARS + 5),
        "/frobnicate",
        "now a zero",
        "/quit",
        "never read",
    ]
    result = CliRunner().invoke(app, ["chat", str(tmp_path / "run"), "--out", str(out)], input="\n".join(lines))
    assert result.exit_code == 0, result.output
    shown = result.output.splitlines()
    errors = [line for line in shown if line.startswith("error:")]
    assert len(errors) == 4 and "not found" in errors[0] and "cannot read" in errors[1]
    assert "characters" in errors[2] and "unknown command" in errors[3]
    assert f"attached {digit} (1 for the next message)" in shown
    saved = out / "turn1-1.png"
    assert f"model: [image: {saved}]" in shown and saved.is_file()
    with Image.open(saved) as im:
        assert im.size == (8, 8)
    assert sum(line.startswith("model:") for line in shown) >= 3  # turn 1: the image, then text; turn 2: its text
    assert "never read" not in result.output
    help_text = CliRunner().invoke(app, ["chat", "--help"]).output
    assert "/image PATH" in help_text and "/quit" in help_text
