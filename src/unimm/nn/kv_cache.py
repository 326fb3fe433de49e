"""Pre-allocated key/value cache for incremental decoding."""

import torch


class KVCache:
    """Keys and values of every layer, ``[B, kv_heads, max_len, head_dim]`` each, filled left to right.

    ``length`` counts the positions already stored; the backbone advances it once per forward
    after all layers wrote their new entries.
    """

    def __init__(self, num_layers: int, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self.k: list[torch.Tensor | None] = [None] * num_layers
        self.v: list[torch.Tensor | None] = [None] * num_layers

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store new ``k, v`` ([B, Hkv, T, D]) after the cached ones; return all keys/values so far."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > max_len {self.max_len}")
        if self.k[layer] is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.k[layer] = k.new_empty(shape)
            self.v[layer] = v.new_empty(shape)
        self.k[layer][:, :, start:end] = k
        self.v[layer][:, :, start:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, n: int) -> None:
        self.length += n

    def take(self, rows: torch.Tensor, extra: int) -> "KVCache":
        """A new cache holding the stored positions of batch ``rows`` (an index, repeats allowed: one prefix
        shared by several continuations) with room for ``extra`` more positions."""
        out = KVCache(len(self.k), self.length + extra)
        out.length = self.length
        for i, (k, v) in enumerate(zip(self.k, self.v, strict=True)):
            if k is None or v is None:
                raise ValueError(f"layer {i} has stored nothing yet")
            out.k[i] = k.new_empty(len(rows), k.shape[1], out.max_len, k.shape[3])
            out.v[i] = v.new_empty(len(rows), v.shape[1], out.max_len, v.shape[3])
            out.k[i][:, :, : self.length] = k[rows, :, : self.length]
            out.v[i][:, :, : self.length] = v[rows, :, : self.length]
        return out


class StaticKVCache(KVCache):
    """A cache of fixed shape for a compiled decoding step: ``position`` is a 0-d tensor, new keys/values are
    written in place at it (``index_copy_``) and attention always spans all ``max_len`` slots, so every step has
    the same shapes and no Python int changes between steps. The caller passes the mask of written slots (a
    static cache has no ``length`` to derive a causal mask from)."""

    def __init__(self, num_layers: int, max_len: int, device: torch.device | str = "cpu") -> None:
        self.max_len = max_len
        self.k: list[torch.Tensor | None] = [None] * num_layers
        self.v: list[torch.Tensor | None] = [None] * num_layers
        # the position lives in a tensor: an int that changes every step would make a compiled step recompile
        self.position = torch.zeros((), dtype=torch.long, device=device)

    @property
    def length(self) -> int:
        raise AttributeError("a StaticKVCache has no int length: pass an attention mask over its max_len slots")

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``k, v`` ([B, Hkv, T, D]) at ``position .. position + T - 1``; return the whole buffers."""
        if self.k[layer] is None:
            shape = (k.shape[0], k.shape[1], self.max_len, k.shape[3])
            self.k[layer] = k.new_zeros(shape)
            self.v[layer] = v.new_zeros(shape)
        slots = self.position + torch.arange(k.shape[2], device=k.device)
        self.k[layer].index_copy_(2, slots, k)
        self.v[layer].index_copy_(2, slots, v)
        return self.k[layer], self.v[layer]

    def advance(self, n: int) -> None:
        self.position.add_(n)

    def take(self, rows: torch.Tensor, extra: int) -> "KVCache":
        raise NotImplementedError("StaticKVCache.take: prefix sharing uses the growing KVCache")
