"""The embedded model's text tokenizer: a small byte-level BPE trained on the shapes world's text.

Byte-level (GPT-2/Qwen style) so that ``decode(encode(text)) == text`` for any string, punctuation and
spacing included (few-shot answers such as ``this is a red one.`` must come back verbatim). Trained on
the world's text, the merges make every world word a single token (`` red`` with its leading space, and
``red`` at the start of a field). The full 256-byte alphabet is kept so that text outside the world still
tokenizes.

Special tokens take the first ids, in this order: ``<|endoftext|>`` (eos and pad), ``<|vision_start|>``,
``<|vision_end|>``, ``<unconditional>``; each is a single id. No BOS and no post-processor: a tokenizer call
returns exactly the text's ids, as :class:`unix_core.prompting.PromptBuilder` expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"
VISION_START_TOKEN = "<|vision_start|>"
VISION_END_TOKEN = "<|vision_end|>"
UNCONDITIONAL_TOKEN = "<unconditional>"
SPECIAL_TOKENS: tuple[str, ...] = (EOS_TOKEN, VISION_START_TOKEN, VISION_END_TOKEN, UNCONDITIONAL_TOKEN)
SEPARATOR_TOKEN = "<|vision_pad|>"  # the official default for vis_sep_tokens (row separators)

# Literal text of the SHAPES templates (unix_core.templates); part of the training text so that their
# words become single tokens too.
TEMPLATE_TEXT: tuple[str, ...] = ("caption:", "question: ", " answer:", "edit: ", "edit:")


def world_text(n_lines: int, *, seed: int = 0) -> Iterator[str]:
    """Text to train the tokenizer on: the world's corpus (every task's text) plus the template literals."""
    from unix_core.world import text_corpus, vocabulary

    yield from TEMPLATE_TEXT
    yield " ".join(sorted(vocabulary()))
    yield from text_corpus(n_lines, seed=seed)


def train_text_tokenizer(
    texts: Iterable[str], *, vocab_size: int = 1024, separator: bool = False
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts``; ``vocab_size`` is an upper bound (merges stop when every
    pre-token is one token, which for the world's text happens well below 1024). ``separator`` adds
    ``SEPARATOR_TOKEN`` after the other specials (for checkpoints with row separators)."""
    specials = [*SPECIAL_TOKENS, SEPARATOR_TOKEN] if separator else list(SPECIAL_TOKENS)
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size must be at least {256 + len(specials)} (bytes + specials), got {vocab_size}")
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer)
    return wrap_tokenizer(core)


def wrap_tokenizer(core: Tokenizer) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around ``core`` with our special tokens (and the separator, if it has
    one) registered."""
    specials = list(SPECIAL_TOKENS)
    if core.token_to_id(SEPARATOR_TOKEN) is not None:
        specials.append(SEPARATOR_TOKEN)
    for i, token in enumerate(specials):
        if core.token_to_id(token) != i:
            raise ValueError(f"special token {token!r} must have id {i}, got {core.token_to_id(token)}")
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        extra_special_tokens=specials[1:],
        clean_up_tokenization_spaces=False,
        model_max_length=4096,
    )


def save_text_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> None:
    """Write tokenizer.json, tokenizer_config.json (and the special-token map) for AutoTokenizer."""
    tokenizer.save_pretrained(str(folder))
