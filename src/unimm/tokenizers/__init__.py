"""Tokenizers: text (byte-level BPE)."""

from unimm.tokenizers.text import SPECIAL_TOKENS, TextTokenizer

__all__ = ["SPECIAL_TOKENS", "TextTokenizer"]
