"""Turn templates, user text and images into token ids, and describe the resulting layout.

An image is spliced in as ``<|vision_start|>`` + ``real_text_vocab_size + code`` for each code (raster order)
+ ``<|vision_end|>``; checkpoints with row separators (``add_sep_for_vis``) get the separator token after
every ``vis_sep_lens`` codes, the last row included, as the official data collator writes them. Literal
template text is tokenized with special tokens recognised; user text with special tokens split (so
``<|vision_start|>`` typed by a user stays plain text).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .templates import template_parts


@dataclass(frozen=True)
class Segment:
    """One piece of an interleaved prompt, for display: text or an image."""

    kind: str  # "text" or "image"
    text: str  # the text, or a short description of the image
    num_tokens: int
    modality: str  # which branch its tokens take in split layers ("text" or "vision")


@dataclass
class RenderedPrompt:
    ids: list[int]
    segments: list[Segment]


def with_separators(ids: list[int], separator: tuple[int, int] | None) -> list[int]:
    """``ids`` (image-code token ids, raster order) with the separator after every complete row of
    ``separator = (id, codes per row)``; unchanged without separators."""
    if separator is None:
        return list(ids)
    sep, every = separator
    out = []
    for i, token in enumerate(ids, start=1):
        out.append(token)
        if i % every == 0:
            out.append(sep)
    return out


class PromptBuilder:
    def __init__(
        self,
        tokenizer,
        *,
        real_text_vocab_size: int,
        vision_start_id: int,
        vision_end_id: int,
        separator: tuple[int, int] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.real_text_vocab_size = real_text_vocab_size
        self.vision_start_id = vision_start_id
        self.vision_end_id = vision_end_id
        self.separator = separator  # (id, codes between separators), UniXConfig.separator

    def text_ids(self, text: str, *, user: bool) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=user)["input_ids"]

    def code_ids(self, codes: torch.Tensor) -> list[int]:
        """The token ids of a code grid (raster order), with row separators if the checkpoint has them."""
        flat = (codes.flatten().to(torch.long) + self.real_text_vocab_size).tolist()
        if self.separator is not None and len(flat) % self.separator[1]:
            raise ValueError(
                f"{len(flat)} image codes do not fill rows of {self.separator[1]} (the checkpoint's vis_sep_lens)"
            )
        return with_separators(flat, self.separator)

    def image_ids(self, codes: torch.Tensor) -> list[int]:
        return [self.vision_start_id, *self.code_ids(codes), self.vision_end_id]

    def render(self, template: str, fields: dict[str, str], images: list[torch.Tensor]) -> RenderedPrompt:
        """Fill ``template`` with ``fields`` (user text) and ``images`` (code grids, in order)."""
        ids: list[int] = []
        segments: list[Segment] = []
        image_iter = iter(images)
        for kind, value in template_parts(template):
            if kind == "image":
                codes = next(image_iter, None)
                if codes is None:
                    raise ValueError("the template needs more images than were given")
                part = self.image_ids(codes)
                h, w = codes.shape[-2:] if codes.dim() >= 2 else (1, codes.numel())
                segments.append(Segment("image", f"<|vision_start|> + image {h}x{w} codes", len(part) - 1, "vision"))
                segments.append(Segment("text", "<|vision_end|>", 1, "text"))
            elif kind == "field":
                if value not in fields:
                    raise ValueError(f"the template needs a value for {{{value}}}")
                part = self.text_ids(fields[value], user=True)
                segments.append(Segment("text", fields[value], len(part), "text"))
            else:
                part = self.text_ids(value, user=False)
                segments.extend(self._literal_segments(value, part))
            ids.extend(part)
        if next(image_iter, None) is not None:
            raise ValueError("more images were given than the template has places for")
        return RenderedPrompt(ids, [s for s in segments if s.num_tokens])

    def _literal_segments(self, text: str, ids: list[int]) -> list[Segment]:
        """A literal may end in <|vision_start|> (vision modality): report that token separately."""
        if ids and ids[-1] == self.vision_start_id:
            head = self.tokenizer.decode(ids[:-1]) if len(ids) > 1 else ""
            return [Segment("text", head, len(ids) - 1, "text"), Segment("text", "<|vision_start|>", 1, "vision")]
        return [Segment("text", text, len(ids), "text")]
