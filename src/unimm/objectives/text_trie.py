"""Many continuations of one prompt in one row: the token prefix tree of the texts.

Texts that start alike (``"a handwritten one"``, ``"a handwritten two"``) share their first tokens, so a
next-token model scoring all of them after the same prompt needs each distinct prefix only once. The tree's
nodes go after the prompt in one sequence; a node attends to the prompt and to its ancestors only and sits at
the position its token has in its text, so its hidden state is exactly the one the text alone would give.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class TextTrie:
    """The prefix tree of the model inputs of some texts (each text's ids but the last, which only is a target)."""

    tokens: torch.Tensor  # [N] the token of each node (parents come before their children)
    depth: torch.Tensor  # [N] its position after the prompt (0 = a text's first token)
    sees: torch.Tensor  # [N, N] bool: node q may attend to node k (k is q or one of its ancestors)
    node: torch.Tensor  # [T, W - 1] the node whose hidden state predicts token s + 1 of text t (0 where padded)
    target: torch.Tensor  # [T, W - 1] that token (0 where padded)
    real: torch.Tensor  # [T, W - 1] bool: the entry belongs to the text

    def to(self, device: torch.device) -> TextTrie:
        return TextTrie(**{k: v.to(device) for k, v in self.__dict__.items()})


def build_trie(texts: list[list[int]]) -> TextTrie:
    """The prefix tree of ``texts`` (token ids, each at least one long)."""
    index: dict[tuple[int, ...], int] = {}
    tokens: list[int] = []
    depth: list[int] = []
    parent: list[int] = []
    paths = []
    for ids in texts:
        path: list[int] = []
        for k in range(1, len(ids)):
            key = tuple(ids[:k])
            if key not in index:
                index[key] = len(tokens)
                tokens.append(ids[k - 1]), depth.append(k - 1), parent.append(path[-1] if path else -1)
            path.append(index[key])
        paths.append(path)
    n, width = len(tokens), max(len(ids) for ids in texts) - 1
    sees = torch.eye(n, dtype=torch.bool)
    for q, p in enumerate(parent):
        if p >= 0:
            sees[q] |= sees[p]
    node = torch.zeros(len(texts), width, dtype=torch.long)
    target = torch.zeros(len(texts), width, dtype=torch.long)
    real = torch.zeros(len(texts), width, dtype=torch.bool)
    for t, (ids, path) in enumerate(zip(texts, paths, strict=True)):
        node[t, : len(path)], target[t, : len(path)], real[t, : len(path)] = (
            torch.tensor(path),
            torch.tensor(ids[1:]),
            True,
        )
    return TextTrie(torch.tensor(tokens), torch.tensor(depth), sees, node, target, real)


def trie_groups(texts: list[list[int]], max_nodes: int) -> list[list[int]]:
    """Consecutive texts cut into groups whose tree has at most ``max_nodes`` nodes (a longer text is a group
    alone): the indices of each group's texts."""
    groups: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for t, ids in enumerate(texts):
        prefixes = {tuple(ids[:k]) for k in range(1, len(ids))}
        if groups and len(seen | prefixes) <= max_nodes:
            groups[-1].append(t)
            seen |= prefixes
        else:
            groups.append([t])
            seen = set(prefixes)
    return groups
