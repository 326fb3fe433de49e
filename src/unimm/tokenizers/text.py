"""Byte-level BPE text tokenizer (HuggingFace ``tokenizers``) with unimm's special tokens.

A tokenizer trained here has the special tokens at ids 0..6 (``SPECIAL_TOKENS`` order). One read from a
pretrained checkpoint's ``tokenizer.json`` (``from_checkpoint``) keeps every id of the checkpoint and gets the
special tokens it lacks appended after its vocabulary, so a pretrained model's embedding rows keep their meaning.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Fixed order: a token's id is its index here, in every tokenizer trained by ``train``.
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<img>", "<sep>")
TOKENIZER_FILE = "tokenizer.json"


class TextTokenizer:
    """Byte-level BPE over text; ``encode`` adds no special tokens, ``decode`` drops them."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        ids = [tokenizer.token_to_id(token) for token in SPECIAL_TOKENS]
        missing = [t for t, i in zip(SPECIAL_TOKENS, ids, strict=True) if i is None]
        if missing:
            raise ValueError(f"the tokenizer lacks special tokens {missing}")
        self.tokenizer = tokenizer
        self._special: tuple[int, ...] = tuple(ids)  # type: ignore[arg-type]

    @classmethod
    def from_checkpoint(cls, directory: str | Path) -> TextTokenizer:
        """The ``tokenizer.json`` of a pretrained checkpoint (Hugging Face or a unimm run's ``tokenizer/``), its ids
        unchanged; unimm's special tokens that it lacks are appended after its vocabulary."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: a checkpoint's own tokenizer needs its tokenizer.json")
        tokenizer = Tokenizer.from_file(str(path))
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        tokenizer.add_special_tokens(missing)
        return cls(tokenizer)

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 512, split_digits: bool = False) -> TextTokenizer:
        """Train on ``texts``; the same texts and vocab size always give the same tokenizer. ``split_digits``:
        every digit is its own pre-token (as in Llama's tokenizer), so no merge spans two digits and a number's
        digits stay readable ("4366" -> 4, 3, 6, 6) whether or not training saw that number."""
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
            raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + len(alphabet)}")
        tokenizer = Tokenizer(models.BPE())
        byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.pre_tokenizer = (
            pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
            if split_digits
            else byte_level
        )
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=alphabet,
            show_progress=False,
        )
        # Sorted input makes training independent of the order the caller collected the texts in.
        tokenizer.train_from_iterator(sorted(texts), trainer=trainer)
        return cls(tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def special_ids(self) -> tuple[int, ...]:
        """The ids of ``SPECIAL_TOKENS`` (0..6 in a tokenizer trained here)."""
        return self._special

    @property
    def pad_id(self) -> int:
        return self._special[0]

    @property
    def bos_id(self) -> int:
        return self._special[1]

    @property
    def eos_id(self) -> int:
        return self._special[2]

    @property
    def boi_id(self) -> int:
        return self._special[3]

    @property
    def eoi_id(self) -> int:
        return self._special[4]

    @property
    def img_id(self) -> int:
        return self._special[5]

    @property
    def sep_id(self) -> int:
        return self._special[6]

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text of ``ids``, special tokens skipped, surrounding whitespace stripped."""
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True).strip()

    def save(self, directory: str | Path) -> Path:
        """Write ``tokenizer.json`` into ``directory``; returns its path."""
        path = Path(directory) / TOKENIZER_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save(str(path))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TextTokenizer:
        """Load a tokenizer saved with ``save``."""
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found")
        return cls(Tokenizer.from_file(str(path)))
