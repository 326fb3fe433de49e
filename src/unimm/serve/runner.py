"""The model side of the server: request checks against the model, and the batched calls the batcher runs."""

import secrets
from collections.abc import Hashable, Iterator
from pathlib import Path

import torch

from unimm.models import UnifiedModel
from unimm.sequence import packed_length
from unimm.tasks import generation_prompt, understanding_prompt

CAPTION_SEED = 0  # captions are drawn with a fixed seed: the same image and batch give the same text


class ModelRunner:
    """Wraps a ``UnifiedModel`` for the batcher: keys ``("caption", question)`` and
    ``("generate", steps, guidance, seed, token)`` name what a batch shares."""

    def __init__(self, model: UnifiedModel, run_dir: Path | None = None) -> None:
        self.model, self.run_dir = model.eval(), run_dir

    def question_positions(self, question: str | None) -> int:
        """Positions a caption or VQA request needs: the prompt and the longest answer."""
        m = self.model
        answer = m.layout.answer_len or m.cfg.sample.max_new_tokens
        return packed_length(understanding_prompt(None, m.layout, m.tokenizer, question)) + answer

    def prompt_positions(self, prompt: str) -> int:
        return packed_length(generation_prompt(prompt, self.model.layout, self.model.tokenizer))

    def stream(self, image: torch.Tensor, question: str | None) -> Iterator[str]:
        """One caption [C, H, W] -> its pieces as decoded (blocking; advanced one step per ``next``), drawn with
        the same seed as a batched caption."""
        gen = torch.Generator().manual_seed(CAPTION_SEED)
        return self.model.caption_stream(image[None], question, generator=gen)

    def run(self, key: Hashable, items: list) -> list:
        if key[0] == "caption":
            gen = torch.Generator().manual_seed(CAPTION_SEED)
            return self.model.caption(torch.stack(items), question=key[1], generator=gen)
        _, steps, guidance, seed, _ = key
        gen = torch.Generator().manual_seed(secrets.randbits(62) if seed is None else seed)
        prompts = [p for prompt, n in items for p in [prompt] * n]
        images = self.model.generate(prompts, cfg_scale=guidance, steps=steps, generator=gen).cpu()
        out, start = [], 0
        for _, n in items:
            out.append(images[start : start + n])
            start += n
        return out
