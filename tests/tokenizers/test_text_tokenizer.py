"""TextTokenizer: fixed special ids, lossless round trip, deterministic training, save/load."""

import pytest

from unimm.data.captions import CaptionTemplates
from unimm.tokenizers.text import SPECIAL_TOKENS, TextTokenizer

TEXTS = CaptionTemplates(["zero", "one", "two", "seven", "eight"], "digit").all_texts() + [
    "a red circle left of a blue square",
    "woman surfing: light skin tone",
]


@pytest.fixture(scope="module")
def tokenizer():
    return TextTokenizer.train(TEXTS, vocab_size=300)


def test_special_ids_fixed(tokenizer):
    ids = [tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id, tokenizer.boi_id]
    ids += [tokenizer.eoi_id, tokenizer.img_id, tokenizer.sep_id]
    assert ids == list(range(7))
    names = ["<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<img>", "<sep>"]
    assert [tokenizer.tokenizer.id_to_token(i) for i in ids] == names == list(SPECIAL_TOKENS)
    assert tokenizer.vocab_size <= 300


def test_round_trip_and_no_specials(tokenizer):
    for text in TEXTS + ["café ☕ 123", "an unseen sentence about zebras"]:
        ids = tokenizer.encode(text)
        assert all(i >= len(SPECIAL_TOKENS) for i in ids)
        assert tokenizer.decode(ids) == text
    assert tokenizer.decode([tokenizer.bos_id, *tokenizer.encode("the digit 7"), tokenizer.eos_id]) == "the digit 7"
    assert len(tokenizer.encode("a handwritten seven")) < len("a handwritten seven") // 2  # merges learned


def test_training_deterministic(tokenizer):
    again = TextTokenizer.train(list(reversed(TEXTS)), vocab_size=300)
    assert again.tokenizer.to_str() == tokenizer.tokenizer.to_str()


def test_save_load_identical_ids(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "tok")
    assert path.name == "tokenizer.json"
    loaded = TextTokenizer.load(tmp_path / "tok")
    for text in TEXTS:
        assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.vocab_size == tokenizer.vocab_size
    with pytest.raises(FileNotFoundError):
        TextTokenizer.load(tmp_path / "nope")


def test_too_small_vocab():
    with pytest.raises(ValueError):
        TextTokenizer.train(TEXTS, vocab_size=100)


def test_a_checkpoints_tokenizer_keeps_its_ids_and_gets_the_specials_appended(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "<sep>"])
    hf.train_from_iterator(TEXTS, trainer=trainer)
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = TextTokenizer.from_checkpoint(tmp_path)
    size = hf.get_vocab_size()
    assert tok.sep_id == 2  # the checkpoint's own <sep> is used as it is
    others = [tok.pad_id, tok.bos_id, tok.eos_id, tok.boi_id, tok.eoi_id, tok.img_id]
    assert others == list(range(size, size + 6)) and tok.vocab_size == size + 6
    assert tok.encode(TEXTS[0]) == hf.encode(TEXTS[0], add_special_tokens=False).ids
    assert tok.decode([tok.bos_id, *tok.encode(TEXTS[0]), tok.eos_id]) == TEXTS[0]
    tok.save(tmp_path / "saved")
    assert TextTokenizer.load(tmp_path / "saved").special_ids == tok.special_ids
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        TextTokenizer.from_checkpoint(tmp_path / "saved" / "nowhere")


def test_split_digits_keeps_every_digit_its_own_token(tmp_path):
    """Trained on numbers, a plain BPE merges them (an unseen number is an opaque token); with ``split_digits``
    every digit stays one token, text round-trips, and the setting survives save / load."""
    texts = [f"write the digits of {n}, one image each" for n in range(0, 10000, 7)]
    plain = TextTokenizer.train(texts, 512)
    split = TextTokenizer.train(texts, 512, split_digits=True)
    text = "write the digits of 4366, one image each"
    assert len(plain.encode("4366")) < 4
    digits = [split.decode([i]) for i in split.encode(" 4366")]
    assert "".join(digits).strip() == "4366" and [d.strip() for d in digits][-4:] == ["4", "3", "6", "6"]
    assert split.decode(split.encode(text)) == text
    split.save(tmp_path / "t")
    assert TextTokenizer.load(tmp_path / "t").encode(text) == split.encode(text)


def test_data_split_digits_reaches_the_runs_tokenizer():
    from types import SimpleNamespace

    from unimm.config import load_config
    from unimm.train.loop import build_tokenizer

    data = SimpleNamespace(stored_texts=lambda: [f"the digits of {n}" for n in range(0, 10000, 3)])
    plain = build_tokenizer(load_config(None, []), data, None)
    split = build_tokenizer(load_config(None, ["data.split_digits=true"]), data, None)
    assert len(plain.encode(" 4366")) < 4
    assert [split.decode([i]).strip() for i in split.encode(" 4366")][-4:] == ["4", "3", "6", "6"]
