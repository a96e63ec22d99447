"""Per-request KV cache of a Uni-X model.

A :class:`UniXCache` is created per request (or by the model on the first ``use_cache=True`` call) and
passed in explicitly; the model never stores sequence state. It holds one :class:`KVBuffer` per depth and
branch: shared depths cache every token, split depths keep a text buffer with only the text tokens' keys
and values and a vision buffer with only the vision tokens'. Rows of a batch may hold different numbers of
entries (e.g. a conditional and an unconditional prompt for classifier-free guidance), so every buffer
tracks a length per row, and each entry remembers its sequence position and whether it is a real token
(left padding is kept but never attended to).

Buffers grow by doubling, so appending one token per step costs amortised O(1) copies.
"""

from __future__ import annotations

import torch

_GROWTH_QUANTUM = 64


class KVBuffer:
    """Keys and values of one attention layer for one batch, with per-row lengths.

    Layout: ``k``/``v`` (B, H_kv, capacity, D); ``positions`` (B, capacity); ``valid`` (B, capacity) bool;
    ``lengths`` (B,). Entries ``[lengths[b]:]`` of row ``b`` are free space.
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.positions: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self.lengths: torch.Tensor | None = None
        # ragged: rows hold different numbers of entries; all_valid: no entry is padding. While the buffer is
        # neither ragged nor holds padding, every stored key may be attended to and no key mask is needed.
        self.ragged = False
        self.all_valid = True

    @property
    def max_length(self) -> int:
        return 0 if self.lengths is None else int(self.lengths.max())

    def _ensure_capacity(self, like: torch.Tensor, needed: int, batch: int) -> None:
        capacity = 0 if self.k is None else self.k.shape[2]
        if needed <= capacity:
            return
        new_capacity = max(needed, 2 * capacity)
        new_capacity = -(-new_capacity // _GROWTH_QUANTUM) * _GROWTH_QUANTUM
        _, heads, _, dim = like.shape
        k = like.new_zeros((batch, heads, new_capacity, dim))
        v = like.new_zeros((batch, heads, new_capacity, dim))
        positions = torch.zeros((batch, new_capacity), dtype=torch.long, device=like.device)
        valid = torch.zeros((batch, new_capacity), dtype=torch.bool, device=like.device)
        if self.k is not None:
            k[:, :, :capacity] = self.k
            v[:, :, :capacity] = self.v
            positions[:, :capacity] = self.positions
            valid[:, :capacity] = self.valid
        else:
            self.lengths = torch.zeros(batch, dtype=torch.long, device=like.device)
        self.k, self.v, self.positions, self.valid = k, v, positions, valid

    def append(
        self,
        k: torch.Tensor,
        v: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        counts: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Append (B, H, N, D) keys/values; row ``b`` keeps only its first ``counts[b]`` (all N if None).

        Returns every cached entry up to the longest row: ``(k, v, positions, key_allowed)`` where
        ``key_allowed`` (B, L) is False for padding, for free space and for invalid tokens, or None when every
        returned entry may be attended to.
        """
        B, _, N, _ = k.shape
        start = 0 if self.lengths is None else self.max_length
        self._ensure_capacity(k, start + N, B)
        # Rows stay equally long while every row appends N entries (a pack without padding slots).
        uneven = counts is not None and bool((counts != N).any())
        if not self.ragged and not uneven:
            self.k[:, :, start : start + N] = k
            self.v[:, :, start : start + N] = v
            self.positions[:, start : start + N] = positions
            self.valid[:, start : start + N] = valid
            self.lengths += N
        else:
            index = self.lengths[:, None] + torch.arange(N, device=k.device)[None, :]  # (B, N)
            kv_index = index[:, None, :, None].expand_as(k)
            self.k.scatter_(2, kv_index, k)
            self.v.scatter_(2, kv_index, v)
            self.positions.scatter_(1, index, positions)
            self.valid.scatter_(1, index, valid)
            self.lengths += N if counts is None else counts
        self.ragged = self.ragged or uneven
        self.all_valid = self.all_valid and bool(valid.all())
        L = self.max_length
        allowed = None
        if self.ragged:
            allowed = self.valid[:, :L] & (torch.arange(L, device=k.device)[None, :] < self.lengths[:, None])
        elif not self.all_valid:
            allowed = self.valid[:, :L]
        return self.k[:, :, :L], self.v[:, :, :L], self.positions[:, :L], allowed


class UniXCache:
    """KV cache of one request for a Uni-X model: one buffer per shared depth, two per split depth.

    ``seen`` (B,) counts the real tokens each row has consumed; it gives the next RoPE positions.
    """

    def __init__(self, num_hidden_layers: int, split_depths: set[int]) -> None:
        self.shared: dict[int, KVBuffer] = {
            d: KVBuffer() for d in range(num_hidden_layers) if d not in split_depths
        }
        self.text: dict[int, KVBuffer] = {d: KVBuffer() for d in sorted(split_depths)}
        self.vision: dict[int, KVBuffer] = {d: KVBuffer() for d in sorted(split_depths)}
        self.seen: torch.Tensor | None = None
        self.num_tokens = 0  # tokens fed so far per row, padding included

    def buffer(self, depth: int, branch: str) -> KVBuffer:
        """The buffer of ``depth`` for ``branch`` in {"shared", "text", "vision"}."""
        return {"shared": self.shared, "text": self.text, "vision": self.vision}[branch][depth]

    def get_seq_length(self) -> int:
        """Tokens fed so far per row (transformers' Cache convention), padding included."""
        return self.num_tokens
