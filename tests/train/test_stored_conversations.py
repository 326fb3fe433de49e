"""Real interleaved sources train as conversations: a LLaVA file's turns and an OBELICS / MMC4 document's segments,
converted to shards, load as ``data.conversations`` (``data/conversations.py``), pack with the right turn order,
image positions and loss masks, and a tiny preset trains on them (``data.interleaved_fraction``)."""

import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from test_sources import make_llava, make_mmc4, make_obelics  # noqa: E402

from conftest import tiny_preset  # noqa: E402
from unimm.data import load_split  # noqa: E402
from unimm.data.conversations import document_conversation, llava_conversation  # noqa: E402
from unimm.data.shards import convert_to_shards  # noqa: E402
from unimm.data.sources import open_source  # noqa: E402
from unimm.sequence import ImageSpan, TextSpan  # noqa: E402
from unimm.tasks import Example, Layout, training_spans  # noqa: E402
from unimm.tokenizers.text import TextTokenizer  # noqa: E402
from unimm.train.conversations import StoredConversations  # noqa: E402
from unimm.train.loop import resolve_data, train  # noqa: E402
from unimm.train.stream import ExampleStream  # noqa: E402

LAYOUT = Layout(read_grid=(1, 2, 2), gen_grid=(1, 2, 2))


def shards(tmp_path: Path, make) -> Path:
    out = tmp_path / "shards"
    convert_to_shards(open_source(make(tmp_path / "src")), out, val_fraction=0, test_fraction=0)
    return out


def test_llava_image_goes_at_its_tag_or_opens_the_first_user_turn():
    image = torch.zeros(1, 2, 2)
    turns = [("system", "be brief"), ("user", "look <image> here"), ("assistant", "ok <image>")]
    (s, u, a) = llava_conversation(turns, image)
    assert s == ("user", ("be brief",)) and a == ("assistant", ("ok",))  # a second tag is dropped
    assert u[0] == "user" and u[1][0] == "look" and u[1][1] is image and u[1][2] == "here"
    (u,) = llava_conversation([("user", "what?")], image)[:1]
    assert u[1][0] is image and u[1][1] == "what?"
    drawn = llava_conversation([("user", "draw"), ("assistant", "<image>")], image)
    assert drawn[1][1][0] is image  # a tag in the assistant's turn: an image the model draws
    with pytest.raises(ValueError, match="role"):
        llava_conversation([("robot", "x")], None)
    assert document_conversation(["a", image, "b"]) == (("user", ("a",)), ("assistant", (image, "b")))
    assert document_conversation(["a"]) == (("assistant", ("a",)),)


def test_llava_shards_keep_turns_with_the_image_where_its_tag_is(tmp_path):
    data = load_split(shards(tmp_path, make_llava), "train")
    records = {r.key: r for r in open_source(tmp_path / "src" / "llava.json")}
    assert len(data) == 2 and data.conversations is not None  # the text-only entry has no image: left out
    a = next(c for c, cap in zip(data.conversations, data.captions, strict=True) if cap == "A red square.")
    assert [role for role, _ in a] == ["user", "assistant", "user", "assistant"]
    assert [[p if isinstance(p, str) else "<img>" for p in parts] for _, parts in a] == [
        ["<img>", "What is this?"],
        ["A red square."],
        ["And its colour?"],
        ["Red."],
    ]
    expected = torch.from_numpy(records["a"].image).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.allclose(a[0][1][0], expected)


def test_a_document_packs_its_first_segment_read_and_the_rest_produced_in_order(tmp_path):
    data = load_split(shards(tmp_path, make_obelics), "train")
    (doc,) = [c for c in data.conversations if c is not None]  # d1 is text-only: left out
    tok = TextTokenizer.train(StoredConversations(data).texts(), vocab_size=300)
    turns = StoredConversations(data).example(0)
    spans = training_spans(Example("conversation", turns=turns), None, LAYOUT, tok)
    kinds = [
        ("img-gen" if sp.generate else "img-read") if isinstance(sp, ImageSpan) else "text-loss" if sp.loss else "text"
        for sp in spans
    ]
    # <bos>, "Intro." <sep> (read), then image, "Middle.", image, <eos> produced
    assert kinds == ["text", "text", "text", "img-gen", "text-loss", "img-gen", "text-loss"]
    assert spans[1].ids == tok.encode("Intro.") and spans[4].ids == tok.encode("Middle.")
    assert all(sp.announce for sp in spans if isinstance(sp, ImageSpan))
    assert torch.equal(spans[3].image, doc[1][1][0]) and torch.equal(spans[5].image, doc[1][1][2])
    (mmc4,) = load_split(shards(tmp_path / "m", make_mmc4), "train").conversations
    assert [[p if isinstance(p, str) else "<img>" for p in parts] for _, parts in mmc4] == [
        ["First."],
        ["<img>", "Second."],
    ]


def test_llava_turns_get_loss_only_on_the_assistant(tmp_path):
    data = load_split(shards(tmp_path, make_llava), "train")
    source = StoredConversations(data)
    tok = TextTokenizer.train(source.texts(), vocab_size=300)
    i = data.captions.index("A red square.")
    spans = training_spans(Example("conversation", turns=source.example(i)), None, LAYOUT, tok)
    text = [(tok.decode(sp.ids), sp.loss) for sp in spans if isinstance(sp, TextSpan) and sp.ids[0] >= 0]
    loss = [t for t, on in text if on]
    assert any("red square" in t.lower() for t in loss) and not any("what is this" in t.lower() for t in loss)
    assert isinstance(spans[1], ImageSpan) and not spans[1].generate  # the user's image is read


def test_the_stream_draws_stored_conversations_only_when_asked(tmp_path):
    path = shards(tmp_path, make_llava)
    cfg = tiny_preset(path, "chameleon", **{"data.interleaved_fraction": 1.0, "data.channels": 3})
    data, templates = resolve_data(cfg)
    tasks = [ex.task for ex in ExampleStream(data, templates, cfg.data, 8, 0).batch(0)[1]]
    assert tasks == ["conversation"] * 8
    plain = tiny_preset(path, "chameleon", **{"data.channels": 3})
    assert "conversation" not in [ex.task for ex in ExampleStream(data, templates, plain.data, 8, 0).batch(0)[1]]
    assert StoredConversations(data).turns(0, random.Random(0)) == StoredConversations(data).example(0)


@pytest.mark.parametrize("make", [make_llava, make_obelics])
def test_a_preset_trains_a_step_on_stored_conversations(tmp_path, make):
    cfg = tiny_preset(
        shards(tmp_path, make),
        "chameleon",
        **{"data.interleaved_fraction": 1.0, "data.channels": 3, "model.max_seq_len": 160, "train.steps": 1},
    )
    out = train(cfg, tmp_path / "run", progress=False)
    assert (out / "config.toml").is_file()


def test_the_length_check_counts_the_longest_stored_conversation(tmp_path):
    cfg = tiny_preset(
        shards(tmp_path, make_llava),
        "chameleon",
        **{"data.interleaved_fraction": 1.0, "data.channels": 3, "model.max_seq_len": 30, "train.steps": 1},
    )
    with pytest.raises(ValueError, match="interleaved needs"):
        train(cfg, tmp_path / "run", progress=False)


def test_converted_shape_edits_read_the_source_and_instruction_and_produce_the_target(edits_dir, tmp_path):
    out = tmp_path / "shards"
    convert_to_shards(open_source(edits_dir), out, val_fraction=0, test_fraction=0)
    data = load_split(out, "train")
    user, assistant = data.conversations[0]
    assert user[0] == "user" and isinstance(user[1][0], torch.Tensor) and isinstance(user[1][1], str)
    assert assistant[0] == "assistant" and len(assistant[1]) == 1 and isinstance(assistant[1][0], torch.Tensor)
    assert torch.equal(user[1][0], data.images[0]) and user[1][1] == data.captions[0]  # the source, the instruction


def test_items_without_a_conversation_follow_the_task_mix(tmp_path):
    from unimm.config import DataSection
    from unimm.data.shards import to_image_text_data
    from unimm.data.sources import Record

    image = np.zeros((8, 8, 3), dtype=np.uint8)
    records = [Record("c", image, "a reply", turns=[("user", "<image> what?"), ("assistant", "a reply")]),
               Record("p", image, "a plain caption")]  # fmt: skip
    data = to_image_text_data(records)
    assert data.conversations[1] is None
    stream = ExampleStream(data, None, DataSection(interleaved_fraction=1.0), 16, 0)
    by_item = {(i, ex.task) for i, ex, _ in stream.samples(0)}
    assert {task for i, task in by_item if i == 0} == {"conversation"}
    assert {task for i, task in by_item if i == 1} <= {"t2i", "caption"} and any(i == 1 for i, _ in by_item)
