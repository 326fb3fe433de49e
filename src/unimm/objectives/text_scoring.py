"""How likely a text is after an image (and a question), for each text objective: the scores behind a
format-free understanding metric (rank the class captions of an image by their likelihood).

A scored text is the answer the model is trained to produce after the prompt: its tokens and ``<eos>``
(``tasks.answer_ids``; for masked text padded with ``<eos>`` to the fixed answer length). Every image is
scored against every text.

- ``ar_log_likelihood``: the exact teacher-forced log-likelihood. The prompt runs once per image into a KV
  cache, which the prefix tree of the texts then continues (each distinct text prefix runs once).
- ``masked_elbo``: the masked (absorbing-state) diffusion model's evidence lower bound in its any-order
  autoregressive form (Hoogeboom et al. 2022, ARDM; Ou et al. 2024 show MDLM's continuous-time ELBO equals it):
  ``log p(x) >= sum_{m=1..n} E_{|M|=m} [(1/m) sum_{i in M} log p(x_i | x without M)]`` for an answer of ``n``
  tokens. It is estimated with one uniformly random mask ``M`` of each size ``m`` (``elbo_masks``, drawn from the
  caller's generator): unbiased, stratified over ``m``, up to ``n`` forward passes per pair
  (``sample.score_draws`` fewer: one mask per stratum of sizes, still unbiased, noisier). The same masks serve
  every pair of a call (common random numbers), so the texts of an image are compared under identical draws,
  and a masked answer that several texts share runs once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from unimm.objectives.text_trie import build_trie, trie_groups
from unimm.sequence import TEXT, TextSpan
from unimm.tasks import answer_ids, understanding_prompt

if TYPE_CHECKING:
    from unimm.models.context import ModelContext
    from unimm.sequence import Batch

MAX_ROWS = 512  # (image, text, mask) sequences per forward pass of masked text
MAX_TOKENS = 16384  # new positions per forward pass of next-token text
MAX_NODES = 512  # prefix-tree nodes in one row


def _prompts(ctx: ModelContext, images: torch.Tensor, question: str | None, answer: list[int]) -> Batch:
    """The understanding prompts of ``images`` followed by ``answer`` (not predicted), left-padded."""
    spans = [[*understanding_prompt(im, ctx.layout, ctx.tokenizer, question), TextSpan(answer, loss=False)]
             for im in images]  # fmt: skip
    return ctx.pack(spans, left_pad=True)


def ar_log_likelihood(
    ctx: ModelContext,
    images: torch.Tensor,
    texts: list[str],
    question: str | None,
    max_tokens: int = MAX_TOKENS,
    max_nodes: int = MAX_NODES,
) -> torch.Tensor:
    """Images [B, C, H, W] x texts -> sum_i log p(text_i | image, question, text_<i) [B, T] (next-token model).

    The prompts run once into a KV cache; its last position predicts every text's first token. The texts'
    prefix tree (``text_trie.py``, at most ``max_nodes`` nodes a row) then continues the cache, one row per
    image and group of texts: each distinct prefix is run once."""
    ids = [answer_ids(t, ctx.tokenizer, ctx.layout) for t in texts]
    batch = _prompts(ctx, images, question, [])
    length, dev = batch.tokens.shape[1], ctx.device
    what = "question and answer" if question else "caption prompt and caption"
    ctx.check_length(length + max(map(len, ids)) - 1, what)
    batch = batch.to(dev)
    cache = ctx.backbone.new_cache(length)
    prompt, _ = ctx.backbone(ctx.embed_inputs(batch), batch.positions, batch.modality, batch.attn_mask, cache)
    total = F.log_softmax(ctx.text_logits(prompt[:, -1]).float(), -1)[:, [i[0] for i in ids]]  # [B, T]
    for group in trie_groups(ids, max_nodes):
        trie = build_trie([ids[t] for t in group]).to(dev)
        n = len(trie.tokens)
        if n == 0:  # only empty texts: <eos> alone, already scored
            continue
        sees = torch.cat([batch.valid[:, None].expand(-1, n, -1), trie.sees.expand(len(images), -1, -1)], 2)
        pos = (batch.next_position[:, None] + trie.depth)[:, None].expand(-1, 3, -1)
        step = max(1, max_tokens // n)
        for s in range(0, len(images), step):
            i = torch.arange(s, min(s + step, len(images)), device=dev)
            x = ctx.backbone.embed_tokens(trie.tokens).expand(len(i), -1, -1)
            mod = torch.full((len(i), n), TEXT, device=dev)
            hidden, _ = ctx.backbone(x, pos[i], mod, sees[i], cache.take(i, n))
            logp = F.log_softmax(ctx.text_logits(hidden).float(), -1)[:, trie.node, trie.target]  # [b, T_g, W-1]
            total[i[:, None], torch.tensor(group, device=dev)] += (logp * trie.real).sum(-1)
    return total


def elbo_masks(n: int, draws: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask per stratum of the mask sizes 1..n cut into ``draws`` contiguous strata: (masks [draws, n] bool, a
    uniformly random set of m positions with m uniform in the stratum; weights [draws], stratum size / m). Then
    ``sum_k weight_k sum_{i in mask_k} log p(x_i | rest)`` is unbiased for the ELBO; ``draws = n`` takes every
    size m once (weights 1 / m)."""
    if not 1 <= draws <= n:
        raise ValueError(f"mask draws must be in 1..{n} (the answer length), got {draws}")
    edges = [round(k * n / draws) for k in range(draws + 1)]
    masks, weights = torch.zeros(draws, n, dtype=torch.bool), torch.zeros(draws)
    for k in range(draws):
        width = edges[k + 1] - edges[k]
        m = edges[k] + 1 + int(torch.randint(width, (), generator=generator))
        masks[k, torch.randperm(n, generator=generator)[:m]] = True
        weights[k] = width / m
    return masks, weights


def masked_elbo(
    ctx: ModelContext,
    images: torch.Tensor,
    texts: list[str],
    question: str | None,
    mask_id: int,
    draws: int | None,
    generator: torch.Generator | None,
    max_rows: int = MAX_ROWS,
) -> torch.Tensor:
    """Images [B, C, H, W] x texts -> the estimated ELBO of each fixed-length answer [B, T] (masked model), from
    ``draws`` masks (None: one per answer token, ``elbo_masks``). A masked answer that several (text, mask) pairs
    share (the texts differ only where it is masked; with every position masked all of them do) runs once."""
    ids = torch.tensor([answer_ids(t, ctx.tokenizer, ctx.layout) for t in texts])  # all padded to one length n
    n = ids.shape[1]
    masks, weight = elbo_masks(n, n if draws is None else draws, generator)
    inputs, which = torch.unique(ids[None].masked_fill(masks[:, None], mask_id).flatten(0, 1), dim=0,
                                 return_inverse=True)  # fmt: skip
    batch = _prompts(ctx, images, question, [mask_id] * n)
    ctx.check_length(batch.tokens.shape[1], "question and answer" if question else "caption prompt and caption")
    dev = ctx.device
    batch, ids, inputs, masks, weight = (x.to(dev) for x in (batch, ids, inputs, masks, weight))
    which = which.to(dev).view(len(masks), len(texts), 1)  # [K, T, 1]: the distinct input of (mask, text)
    base = ctx.embed_inputs(batch)[:, :-n]
    answers = ctx.backbone.embed_tokens(inputs)

    def log_probs(i: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Rows (image i, distinct input u) -> log p over the text vocabulary at the answer positions [R, n, V]."""
        x = torch.cat([base[i], answers[u]], 1)
        hidden, _ = ctx.backbone(x, batch.positions[i], batch.modality[i], batch.attn_mask[i])
        return F.log_softmax(ctx.text_logits(hidden[:, -n:]).float(), -1)

    out = []
    step = max(1, max_rows // len(inputs))  # images a pass (one pass per image and max_rows inputs when more)
    for s in range(0, len(images), step):
        i = torch.arange(s, min(s + step, len(images)), device=dev).repeat_interleave(len(inputs))
        u = torch.arange(len(inputs), device=dev).repeat(len(i) // len(inputs))
        logp = torch.cat([log_probs(i[r : r + max_rows], u[r : r + max_rows]) for r in range(0, len(i), max_rows)])
        term = logp.view(-1, *answers.shape[:2], logp.shape[-1])[
            :, which, torch.arange(n, device=dev), ids
        ]  # [b, K, T, n]
        out.append(((term * masks[:, None]).sum(-1) * weight[:, None]).sum(1))
    return torch.cat(out)
