"""Byte-level BPE text tokenizer (HuggingFace ``tokenizers``) with fixed special-token ids."""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

# Fixed order: a token's id is its index here, in every trained tokenizer.
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<boi>", "<eoi>", "<img>", "<sep>")
TOKENIZER_FILE = "tokenizer.json"


class TextTokenizer:
    """Byte-level BPE over text; ``encode`` adds no special tokens, ``decode`` drops them."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        for index, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != index:
                raise ValueError(f"special token {token} must have id {index}, has {tokenizer.token_to_id(token)}")
        self.tokenizer = tokenizer

    @classmethod
    def train(cls, texts: list[str], vocab_size: int = 512) -> TextTokenizer:
        """Train on ``texts``; the same texts and vocab size always give the same tokenizer."""
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
            raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + len(alphabet)}")
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
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
        """The ids of ``SPECIAL_TOKENS`` (the same in every tokenizer)."""
        return tuple(range(len(SPECIAL_TOKENS)))

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def bos_id(self) -> int:
        return 1

    @property
    def eos_id(self) -> int:
        return 2

    @property
    def boi_id(self) -> int:
        return 3

    @property
    def eoi_id(self) -> int:
        return 4

    @property
    def img_id(self) -> int:
        return 5

    @property
    def sep_id(self) -> int:
        return 6

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
