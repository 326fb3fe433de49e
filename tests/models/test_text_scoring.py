"""``UnifiedModel.score_texts``: the likelihood of given texts after an image, for every text objective and
reader kind, checked against the training loss on the same sequences and against step-by-step decoding."""

import pytest
import torch

from conftest import PRESETS, tiny_preset
from unimm.models import UnifiedModel
from unimm.objectives.text import MaskedTextState
from unimm.objectives.text_scoring import ar_log_likelihood, elbo_masks, masked_elbo
from unimm.objectives.text_trie import build_trie, trie_groups
from unimm.sequence import IGNORE, TEXT
from unimm.tasks import Example, answer_ids, understanding_prompt
from unimm.tokenizers.text import TextTokenizer
from unimm.train.stream import make_batch

TEXTS = ["a handwritten seven", "seven", "the digit 7", ""]
QUESTION = "what digit is this?"


def _model(digits_dir, preset: str) -> UnifiedModel:
    cfg = tiny_preset(digits_dir, preset, **{"text.answer_len": 6} if preset == "unidisc" else {})
    tok = TextTokenizer.train(["a handwritten seven", QUESTION, "seven", "the digit 7"], 300)
    torch.manual_seed(0)
    model = UnifiedModel(cfg, tok)
    model.prepare(torch.rand(32, 1, 8, 8) * 2 - 1, progress=False, captions=["a handwritten seven"] * 32)
    return model.eval()


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1


@torch.no_grad()
def _training_loss(model: UnifiedModel, image: torch.Tensor, text: str, question: str | None, masked=None):
    """The text objective's training loss on the one caption / VQA sequence, and its number of targets."""
    ex = Example("vqa", question, text) if question else Example("caption", text)
    batch = make_batch(model, image[None], [ex])
    ctx = model.ctx
    if masked is None:
        hidden, _ = ctx.run(ctx.embed_inputs(batch), batch)
        return model.text.loss(ctx, hidden, batch, None), int((batch.targets != IGNORE).sum())
    answer = torch.zeros_like(batch.tokens, dtype=torch.bool)
    answer[0, -len(masked) :] = masked
    tokens = batch.tokens.masked_fill(answer, model.text.mask_id)
    x = ctx.embed_inputs(batch)
    x = torch.where(answer[..., None], model.backbone.embed_tokens(tokens), x)
    hidden, _ = ctx.run(x, batch)
    return model.text.loss(ctx, hidden, batch, MaskedTextState(answer)), int(masked.sum())


@pytest.mark.parametrize("preset", ["quick", "chameleon", "janus", "moma"])
@pytest.mark.parametrize("question", [None, QUESTION])
def test_ar_score_is_the_teacher_forced_log_likelihood(digits_dir, preset, question):
    """Next-token text (shared latent, shared VQ and ViT readers; experts): the score is minus the training
    cross-entropy summed over the answer's tokens and <eos>, for every (image, text) pair of a batch."""
    model = _model(digits_dir, preset)
    images = _images()
    scores = model.score_texts(images, TEXTS, question)
    assert scores.shape == (3, len(TEXTS)) and bool((scores < 0).all())
    for b in range(3):
        for t, text in enumerate(TEXTS):
            loss, count = _training_loss(model, images[b], text, question)
            assert count == model.text_token_counts([text])[0] == len(model.tokenizer.encode(text)) + 1
            torch.testing.assert_close(scores[b, t], -loss * count, rtol=1e-5, atol=1e-4)


@torch.no_grad()
def _decoded_log_likelihood(model: UnifiedModel, image: torch.Tensor, text: str) -> float:
    """Feed the answer one token at a time to the captioner's own uncached decoder, summing log-softmax of its
    next-token logits."""
    ctx, tok = model.ctx, model.tokenizer
    batch = ctx.pack([understanding_prompt(image, model.layout, tok)], left_pad=True)
    ids = answer_ids(text, tok, model.layout)
    dec = ctx.decoder(ctx.embed_inputs(batch), batch, len(ids), use_cache=False)
    total = 0.0
    for i, nxt in enumerate(ids):
        total += float(torch.log_softmax(ctx.text_logits(dec.last), -1)[0, nxt])
        pos = (batch.next_position + i)[:, None].expand(-1, 3)
        dec.step(ctx.backbone.embed_tokens(torch.tensor([nxt])), pos, TEXT)
    return total


def test_ar_score_equals_step_by_step_decoding(digits_dir):
    model = _model(digits_dir, "chameleon")
    images = _images(2)
    scores = model.score_texts(images, TEXTS)
    for b in range(2):
        for t, text in enumerate(TEXTS):
            assert float(scores[b, t]) == pytest.approx(_decoded_log_likelihood(model, images[b], text), abs=1e-4)


@pytest.mark.parametrize(("question", "draws"), [(None, None), (QUESTION, None), (None, 2)])
def test_masked_score_is_the_elbo_of_its_masks(digits_dir, question, draws):
    """Masked text: the score is sum over the drawn masks of minus the training loss (a mean over the masked
    answer positions, i.e. (1/m) sum log p) times the mask's stratum size, with the masks the seeded generator
    draws: one of each size m = 1..n by default, ``sample.score_draws`` strata otherwise."""
    model = _model(digits_dir, "unidisc")
    model.cfg.sample.score_draws = draws
    images = _images(2)
    scores = model.score_texts(images, TEXTS, question, generator=torch.Generator().manual_seed(5))
    masks, weights = elbo_masks(6, draws or 6, torch.Generator().manual_seed(5))
    assert model.text_token_counts(TEXTS) == [6] * len(TEXTS)
    for b in range(2):
        for t, text in enumerate(TEXTS):
            losses = [_training_loss(model, images[b], text, question, m)[0] for m in masks]
            elbo = -sum(w * m.sum() * loss for w, m, loss in zip(weights, masks, losses, strict=True))
            torch.testing.assert_close(scores[b, t], elbo, rtol=1e-5, atol=1e-4)


def test_elbo_masks_cover_every_size_once_and_follow_the_seed():
    masks, weights = elbo_masks(5, 5, torch.Generator().manual_seed(0))
    again, _ = elbo_masks(5, 5, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again) and masks.sum(1).tolist() == [1, 2, 3, 4, 5]
    torch.testing.assert_close(weights, 1 / torch.arange(1.0, 6.0))
    draws = torch.stack([elbo_masks(5, 5, torch.Generator().manual_seed(s))[0] for s in range(400)]).float()
    assert torch.allclose(draws[:, 1].mean(0), torch.full((5,), 0.4), atol=0.08)  # each position equally likely
    with pytest.raises(ValueError, match="mask draws must be in 1..5"):
        elbo_masks(5, 6, None)


def test_stratified_elbo_masks_are_unbiased():
    """With fewer draws than sizes, each stratum's size is drawn uniformly and weighted by stratum size / m. A
    position's log-probability then carries weight 1 in expectation, as with every size once
    (sum_m (1/m) (m/n) = 1): the estimate of an answer whose log-probabilities ignore the context is exact on
    average."""
    n, runs, per_position = 6, 3000, torch.zeros(6)
    for s in range(runs):
        masks, weights = elbo_masks(n, 2, torch.Generator().manual_seed(s))
        assert masks[0].sum() in (1, 2, 3) and masks[1].sum() in (4, 5, 6)
        per_position += (weights[:, None] * masks).sum(0)
    torch.testing.assert_close(per_position / runs, torch.ones(n), atol=0.06, rtol=0)


@pytest.mark.parametrize("preset", PRESETS)
def test_batched_scores_equal_one_by_one_and_follow_the_seed(digits_dir, preset):
    """Every preset (every writer, reader and text kind): [B, T] finite log-likelihoods; an image scores the same
    alone as in a batch; a masked model's estimate is the same for the same seed (the default is seed 0)."""
    model = _model(digits_dir, preset)
    images = _images(3)
    scores = model.score_texts(images, TEXTS)
    assert scores.shape == (3, len(TEXTS)) and scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    alone = torch.cat([model.score_texts(images[i : i + 1], TEXTS) for i in range(3)])
    torch.testing.assert_close(scores, alone, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(scores, model.score_texts(images, TEXTS, generator=torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("preset", ["quick", "unidisc"])
def test_scores_do_not_depend_on_how_the_work_is_cut(digits_dir, preset):
    """One pass per image and a few prefix-tree nodes or masked inputs a pass give the same scores as one pass."""
    model = _model(digits_dir, preset)
    images, ctx = _images(3), model.ctx
    if preset == "quick":
        whole = ar_log_likelihood(ctx, images, TEXTS, QUESTION)
        cut = ar_log_likelihood(ctx, images, TEXTS, QUESTION, max_tokens=1, max_nodes=2)
    else:
        whole = masked_elbo(ctx, images, TEXTS, QUESTION, model.text.mask_id, None, torch.Generator().manual_seed(0))
        cut = masked_elbo(ctx, images, TEXTS, QUESTION, model.text.mask_id, None, torch.Generator().manual_seed(0), 5)
    torch.testing.assert_close(whole, cut, rtol=1e-5, atol=1e-4)


def test_prefix_tree_shares_prefixes_and_sees_only_ancestors():
    trie = build_trie([[5, 6, 7, 1], [5, 6, 8, 1], [9, 1], [1]])
    assert trie.tokens.tolist() == [5, 6, 7, 8, 9] and trie.depth.tolist() == [0, 1, 2, 2, 0]
    assert trie.sees[3].tolist() == [True, True, False, True, False] and trie.sees[4].tolist() == [0, 0, 0, 0, 1]
    assert trie.node[1].tolist() == [0, 1, 3] and trie.target[1].tolist() == [6, 8, 1]
    assert trie.real.sum(1).tolist() == [3, 3, 1, 0]  # the first token of each text is the prompt's to predict
    assert trie_groups([[5, 6, 7, 1], [5, 6, 8, 1], [9, 1], [1]], max_nodes=4) == [[0, 1], [2, 3]]


def test_score_texts_checks_its_inputs(digits_dir):
    model = _model(digits_dir, "quick")
    with pytest.raises(ValueError, match="score_texts expects a non-empty list of str"):
        model.score_texts(_images(1), "seven")
    with pytest.raises(ValueError, match="score_texts expects a non-empty list of str"):
        model.score_texts(_images(1), [])
    with pytest.raises(ValueError, match="score_texts expects float images"):
        model.score_texts(torch.zeros(1, 1, 8, 8, dtype=torch.uint8), ["seven"])
    with pytest.raises(ValueError, match="needs .* positions, more than model.max_seq_len"):
        model.score_texts(_images(1), ["seven " * 80])
