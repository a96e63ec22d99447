"""Which tokens are vision tokens, and how one modality's tokens are gathered out of a batch and back.

The Uni-X split is decided by one pure function, :func:`vision_token_mask`, computed once per forward and
passed down. :class:`ModalityPack` then moves the tokens of one modality into a dense, right-padded batch
(row ``b`` holds its ``counts[b]`` tokens of that modality in their original order) so that a branch runs
only on its own tokens, and scatters the results back.

Invariant: inside a pack every row's tokens keep their original sequence positions (RoPE uses them), and the
padding slots (``slot == False``) are never written into a KV cache or back into the sequence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def vision_token_mask(
    input_ids: torch.Tensor, real_text_vocab_size: int, vision_start_id: int, separator_id: int | None = None
) -> torch.Tensor:
    """True where a token belongs to the vision modality: image codes, ``<|vision_start|>`` and, for
    checkpoints with row separators (``add_sep_for_vis``), the separator token.

    ``<|vision_end|>`` is a text token (as in the official implementation).
    """
    mask = (input_ids >= real_text_vocab_size) | (input_ids == vision_start_id)
    return mask if separator_id is None else mask | (input_ids == separator_id)


def config_vision_mask(input_ids: torch.Tensor, config) -> torch.Tensor:
    """:func:`vision_token_mask` with the ids of a :class:`~unix_core.config.UniXConfig`."""
    separator = config.separator
    return vision_token_mask(input_ids, config.real_text_vocab_size, config.vision_start_id,
                             None if separator is None else separator[0])


@dataclass
class ModalityPack:
    """The tokens of one modality in a batch, gathered into a right-padded (B, N) layout.

    ``identity`` means every token of the batch is of this modality, so packing is a no-op.
    """

    mask: torch.Tensor  # (B, T) bool: tokens of this modality in the full sequence
    counts: torch.Tensor  # (B,) tokens of this modality per row
    slot: torch.Tensor  # (B, N) bool: which packed slots hold a real token
    positions: torch.Tensor  # (B, N) RoPE positions of the packed tokens
    valid: torch.Tensor  # (B, N) bool: packed token is a real (non-padding) token that others may attend to
    cos: torch.Tensor  # (B, N, head_dim)
    sin: torch.Tensor  # (B, N, head_dim)
    identity: bool

    @property
    def is_empty(self) -> bool:
        return self.slot.shape[1] == 0

    @classmethod
    def build(
        cls,
        mask: torch.Tensor,
        positions: torch.Tensor,
        valid: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> "ModalityPack":
        B, T = mask.shape
        counts = mask.sum(dim=1)
        if bool(mask.all()):
            slot = torch.ones_like(mask)
            return cls(mask, counts, slot, positions, valid, cos, sin, identity=True)
        n_max = int(counts.max()) if B else 0
        slot = torch.arange(n_max, device=mask.device)[None, :] < counts[:, None]  # (B, N)
        pack = cls(mask, counts, slot, positions, valid, cos, sin, identity=False)
        pack.positions = pack.gather(positions)
        pack.valid = pack.gather(valid)
        pack.cos = pack.gather(cos)
        pack.sin = pack.gather(sin)
        return pack

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, ...) -> (B, N, ...): this modality's tokens, left-aligned, zeros in padding slots."""
        if self.identity:
            return x
        out = x.new_zeros((self.slot.shape[0], self.slot.shape[1], *x.shape[2:]))
        out[self.slot] = x[self.mask]
        return out

    def scatter_(self, packed: torch.Tensor, into: torch.Tensor) -> torch.Tensor:
        """Write (B, N, ...) packed results back to their places in ``into`` (B, T, ...), in place."""
        if self.identity:
            into.copy_(packed)
        else:
            into[self.mask] = packed[self.slot]
        return into
