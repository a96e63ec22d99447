"""Training sequences for every shapes-world task, in the SHAPES prompt layouts, plus batching.

Prompts are rendered with :class:`unix_core.prompting.PromptBuilder` from :data:`unix_core.templates.SHAPES`,
exactly as the pipeline renders them at inference, so train and test token ids agree. Completions follow:

    text to image   {prompt}<|vision_start|>            + codes <|vision_end|><|endoftext|>
    unconditional   <unconditional><|vision_start|>     + codes <|vision_end|><|endoftext|>
    caption         <image>caption:                     + " {caption}<|endoftext|>"
    VQA             <image>question: {q} answer:        + " {answer}<|endoftext|>"
    edit            <image>edit: {instruction}<|vision_start|> (or <image>edit:<|vision_start|>)
                                                        + target codes <|vision_end|><|endoftext|>
    edit, planned   edit: {instruction}<image>result:   + " {target caption}<|vision_start|>" + target codes
                    (layouts with ``edit_plan``)          <|vision_end|><|endoftext|>
                    (its ``edit_plan_text`` says what the plan holds, e.g. " {source} result: {target}")
    edit, text only edit: {instruction}caption: {source caption} + " result: {target caption}<|vision_start|>"
                    (``edit_plan`` without its image; plans that hold {source}: the text-to-text step of a plan)
    few-shot        (<image>{text}<|endoftext|>) * k, <image>  + "{answer}<|endoftext|>"
    text            "{line}<|endoftext|>"

``<image>`` = ``<|vision_start|>`` + (``real_text_vocab_size`` + code) per code + ``<|vision_end|>``.
Captions and VQA answers carry a leading space (the word after ``:``, as the tokenizer splits running
text); few-shot texts do not (they follow ``<|vision_end|>`` directly, like the examples' texts).

Labels (the paper's choices): only completions are trained (label = input id); prompts, input images and
questions are -100. In few-shot episodes the texts of examples 2..k are trained too when
``train_fewshot_examples`` (they are answers the earlier examples determine, like the query's).

Invariant: every sequence's ``labels`` is ``input_ids`` with some positions set to -100, and the prompt part
of a sequence equals ``PromptBuilder.render`` of its template.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from unix_core.prompting import PromptBuilder
from unix_core.templates import IMAGE_PLACEHOLDER, SHAPES, PromptTemplates

IGNORE = -100
EDIT_TEXT_SEED = 7919  # offset of the text-only edits' sample stream from the mix's seed
TASKS: tuple[str, ...] = ("text_to_image", "unconditional", "caption", "vqa", "edit", "fewshot", "text", "edit_text")
MIX_TASKS: tuple[str, ...] = ("text_to_image", "caption", "vqa", "edit", "fewshot", "text", "edit_text")  # counts


@dataclass
class TrainingSequence:
    """One training sequence: ids, labels (-100 = not trained) and its task name."""

    input_ids: list[int]
    labels: list[int]
    task: str

    def __len__(self) -> int:
        return len(self.input_ids)


class SequenceBuilder:
    """Builds :class:`TrainingSequence` objects for each task from text and code grids."""

    def __init__(
        self,
        tokenizer,
        *,
        real_text_vocab_size: int | None = None,
        templates: PromptTemplates = SHAPES,
        separator: tuple[int, int] | None = None,
    ):
        """``separator``: (id, codes per row) for checkpoints with row separators (``UniXConfig.separator``)."""
        vocab = tokenizer.get_vocab()
        self.tokenizer = tokenizer
        self.templates = templates
        self.real_text_vocab_size = real_text_vocab_size or len(tokenizer)
        self.vision_start_id = vocab["<|vision_start|>"]
        self.vision_end_id = vocab["<|vision_end|>"]
        self.eos_id = vocab["<|endoftext|>"]
        self.prompts = PromptBuilder(
            tokenizer,
            real_text_vocab_size=self.real_text_vocab_size,
            vision_start_id=self.vision_start_id,
            vision_end_id=self.vision_end_id,
            separator=separator,
        )

    # ----------------------------------------------------------------------------------------------
    def _text(self, text: str) -> list[int]:
        return self.prompts.text_ids(text, user=True)

    def _image_completion(self, codes: torch.Tensor) -> list[int]:
        """Codes, ``<|vision_end|>``, eos: what follows a prompt ending in ``<|vision_start|>``."""
        return self.prompts.image_ids(codes)[1:] + [self.eos_id]

    @staticmethod
    def _join(prompt: list[int], completion: list[int], task: str) -> TrainingSequence:
        return TrainingSequence(prompt + completion, [IGNORE] * len(prompt) + completion, task)

    # ----------------------------------------------------------------------------------------------
    def text_to_image(self, prompt: str | None, codes: torch.Tensor) -> TrainingSequence:
        """``prompt`` None gives the unconditional form."""
        if prompt is None:
            ids = self.prompts.render(self.templates.unconditional, {}, []).ids
            return self._join(ids, self._image_completion(codes), "unconditional")
        ids = self.prompts.render(self.templates.text_to_image, {"prompt": prompt}, []).ids
        return self._join(ids, self._image_completion(codes), "text_to_image")

    def caption(self, codes: torch.Tensor, caption: str) -> TrainingSequence:
        ids = self.prompts.render(self.templates.caption, {}, [codes]).ids
        return self._join(ids, self._text(" " + caption) + [self.eos_id], "caption")

    def vqa(self, codes: torch.Tensor, question: str, answer: str) -> TrainingSequence:
        ids = self.prompts.render(self.templates.answer, {"question": question}, [codes]).ids
        return self._join(ids, self._text(" " + answer) + [self.eos_id], "vqa")

    def edit(self, source: torch.Tensor, instruction: str | None, target: torch.Tensor,
             target_caption: str | None = None, source_caption: str | None = None) -> TrainingSequence:
        """``instruction`` None gives the edit's unconditional form (for guidance). With an ``edit_plan``
        template the model first writes its plan (trained; ``edit_plan_text`` of the captions), then draws the
        target."""
        if instruction is None:
            ids = self.prompts.render(self.templates.edit_unconditional, {}, [source]).ids
        elif self.templates.edit_plan:
            ids = self.prompts.render(self.templates.edit_plan, {"instruction": instruction}, [source]).ids
            return self._join(ids, self.plan_ids(source_caption, target_caption) + self._image_completion(target), "edit")
        else:
            ids = self.prompts.render(self.templates.edit, {"instruction": instruction}, [source]).ids
        return self._join(ids, self._image_completion(target), "edit")

    def plan_ids(self, source_caption: str | None, target_caption: str | None, *, split: bool = False):
        """The plan's ids, ending with ``<|vision_start|>``; with ``split`` (source's part, the rest)."""
        needs_source = self.templates.plan_captions_source
        if not target_caption or (needs_source and not source_caption):
            what = "the target's and the source's captions" if needs_source else "the target's caption"
            raise ValueError(f"an edit_plan layout with plan {self.templates.edit_plan_text!r} needs {what}")
        head, rest = self.templates.plan_parts(source_caption or "", target_caption)
        head_ids, rest_ids = self._text(head) if head else [], self._text(rest) + [self.vision_start_id]
        return (head_ids, rest_ids) if split else head_ids + rest_ids

    def edit_text(self, instruction: str, source_caption: str, target_caption: str) -> TrainingSequence:
        """A planned edit without its image, for layouts whose plan first captions the source: the prompt and
        the source's caption are given, the rest of the plan (result and ``<|vision_start|>``) is trained."""
        t = self.templates
        if not t.edit_plan or not t.plan_captions_source:
            raise ValueError("text-only edits need a layout whose edit plan starts with the source's caption "
                             "(edit_plan_text holding {source}), e.g. query-first-caption-plan")
        ids = self.prompts.render(t.edit_plan.replace(IMAGE_PLACEHOLDER, ""), {"instruction": instruction}, []).ids
        head, rest = self.plan_ids(source_caption, target_caption, split=True)
        return self._join(ids + head, rest, "edit_text")

    def edit_texts(self, n: int, *, seed: int, split: str = "train") -> list[TrainingSequence]:
        """The first ``n`` text-only edits (``edit_text``) of the mix seed ``seed``'s own stream of edit samples
        (seed + ``EDIT_TEXT_SEED``, so their instructions are not the image edits'). The stream is one for every
        caller: a larger ``n`` extends a smaller one (stage 1's text-only edits begin with stage 2's)."""
        from unix_core.world import edit_samples

        return [self.edit_text(e.instruction, e.source.caption(), e.target.caption())
                for e in edit_samples(n, seed=seed + EDIT_TEXT_SEED, split=split)]

    def fewshot(
        self,
        examples: Sequence[tuple[torch.Tensor, str]],
        query: torch.Tensor,
        answer: str,
        *,
        train_examples: bool = True,
    ) -> TrainingSequence:
        ids: list[int] = []
        labels: list[int] = []
        for i, (codes, text) in enumerate(examples):
            head = self.prompts.image_ids(codes)
            text_ids = self._text(text) + [self.eos_id]
            assert self.prompts.render(self.templates.few_shot_example, {"text": text}, [codes]).ids == head + text_ids
            ids += head + text_ids
            trained = train_examples and i > 0
            labels += [IGNORE] * len(head) + (text_ids if trained else [IGNORE] * len(text_ids))
        query_ids = self.prompts.render(self.templates.few_shot_query, {}, [query]).ids
        completion = self._text(answer) + [self.eos_id]
        return TrainingSequence(
            ids + query_ids + completion, labels + [IGNORE] * len(query_ids) + completion, "fewshot"
        )

    def text(self, line: str) -> TrainingSequence:
        ids = self._text(line) + [self.eos_id]
        return TrainingSequence(ids, list(ids), "text")


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixConfig:
    """How many samples of each task, and the paper's shares.

    ``reverse_share`` of the text-to-image pairs become caption sequences (image -> the scene's canonical
    caption); ``unconditional_share`` of the remaining ones lose their prompt (``<unconditional>``);
    ``edit_unconditional_share`` of the edits use the edit's unconditional form; ``edit_same_shape_share`` of
    the recolour, move and remove edits keep another object of the named object's shape
    (:func:`unix_core.world.edit_samples`).
    """

    text_to_image: int = 1000
    caption: int = 300
    vqa: int = 600
    edit: int = 300
    fewshot: int = 150
    text: int = 300
    edit_text: int = 0  # text-only edits (layouts whose plan captions the source first); samples of another stream
    reverse_share: float = 0.2
    unconditional_share: float = 0.1
    edit_unconditional_share: float = 0.1
    edit_same_shape_share: float = 0.0
    train_fewshot_examples: bool = True
    seed: int = 0
    split: str = "train"

    def __post_init__(self) -> None:
        for name in MIX_TASKS:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"MixConfig.{name} must be an integer >= 0, got {value!r}")
        for name in ("reverse_share", "unconditional_share", "edit_unconditional_share", "edit_same_shape_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MixConfig.{name} must be in [0, 1], got {value!r}")

    def scaled(self, factor: float) -> "MixConfig":
        """The same mix with every task count multiplied by ``factor`` (at least 1 each; absent tasks stay 0)."""
        counts = {n: max(1, round(getattr(self, n) * factor)) for n in MIX_TASKS if getattr(self, n)}
        return dataclasses.replace(self, **counts)


SceneEncoder = Callable[[Sequence], torch.Tensor]
"""Maps a list of world scenes to their (N, h, w) code grids."""


def build_mix(builder: SequenceBuilder, encode_scenes: SceneEncoder, mix: MixConfig) -> list[TrainingSequence]:
    """All sequences of ``mix``, in a seeded shuffled order. Scenes are encoded once each (batched)."""
    from unix_core.world import (
        caption_samples, edit_samples, fewshot_episodes, prompt_samples, text_corpus, vqa_samples,
    )

    seed, split = mix.seed, mix.split
    prompts = list(prompt_samples(mix.text_to_image, seed=seed, split=split))
    captions = list(caption_samples(mix.caption, seed=seed, split=split))
    questions = list(vqa_samples(mix.vqa, seed=seed, split=split))
    edits = list(edit_samples(mix.edit, seed=seed, split=split, same_shape_share=mix.edit_same_shape_share))
    episodes = list(fewshot_episodes(mix.fewshot, seed=seed, split=split))
    scenes = [s.scene for s in (*prompts, *captions, *questions)]
    scenes += [x for e in edits for x in (e.source, e.target)]
    scenes += [x for ep in episodes for x in (*(s for s, _ in ep.examples), ep.query)]
    codes = encode_scene_set(scenes, encode_scenes)
    rng = random.Random(f"mix/{split}/{seed}")
    out: list[TrainingSequence] = []
    for s in prompts:
        if rng.random() < mix.reverse_share:
            out.append(builder.caption(codes[s.scene], s.scene.caption()))
        elif rng.random() < mix.unconditional_share:
            out.append(builder.text_to_image(None, codes[s.scene]))
        else:
            out.append(builder.text_to_image(s.prompt, codes[s.scene]))
    out += [builder.caption(codes[s.scene], s.caption) for s in captions]
    out += [builder.vqa(codes[s.scene], s.question, s.answer) for s in questions]
    for e in edits:
        instruction = None if rng.random() < mix.edit_unconditional_share else e.instruction
        out.append(builder.edit(codes[e.source], instruction, codes[e.target], e.target.caption(), e.source.caption()))
    out += builder.edit_texts(mix.edit_text, seed=seed, split=split)
    for ep in episodes:
        examples = [(codes[s], text) for s, text in ep.examples]
        out.append(builder.fewshot(examples, codes[ep.query], ep.answer, train_examples=mix.train_fewshot_examples))
    out += [builder.text(line) for line in text_corpus(mix.text, seed=seed, split=split)]
    rng.shuffle(out)
    return out


def encode_scene_set(scenes: Sequence, encode_scenes: SceneEncoder, batch_size: int = 64) -> dict:
    """{scene: (h, w) codes} for the distinct scenes, encoded in batches."""
    unique = list(dict.fromkeys(scenes))
    out = {}
    for start in range(0, len(unique), batch_size):
        chunk = unique[start : start + batch_size]
        for scene, grid in zip(chunk, encode_scenes(chunk)):
            out[scene] = grid
    return out


def vq_scene_encoder(vq) -> SceneEncoder:
    """Encode rendered scenes with a :class:`unix_core.vq.VQImageTokenizer` through its own preprocessing
    (``encode_batch``), exactly as the studio encodes a user's image."""
    from unix_core.world import render

    def encode(scenes: Sequence) -> torch.Tensor:
        return vq.encode_batch([render(s) for s in scenes])

    return encode


def to_canvas(image, box=None):
    """A decoded image at the world's 64x64 canvas size: nearest-neighbour when the tokenizer's size divides
    it, else bicubic (scenes sent through a 24 px resize come back judge-readable 300/300 bicubic, 293/300
    nearest). ``box`` is the tokenizer's ``VQConfig.input_box``: the decoded image covers only that part of
    the canvas (`unix_core.vq.preprocess.canvas_from_decoded`)."""
    from unix_core.vq.preprocess import canvas_from_decoded
    from unix_core.world import CANVAS_SIZE

    return canvas_from_decoded(image, CANVAS_SIZE, box)


# --------------------------------------------------------------------------------------------------
def save_sequences(path: str | Path, sequences: Sequence[TrainingSequence]) -> None:
    """Flat int32 ids/labels plus offsets and task indices, as safetensors."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    tensors = {
        "input_ids": torch.tensor([i for s in sequences for i in s.input_ids], dtype=torch.int32),
        "labels": torch.tensor([i for s in sequences for i in s.labels], dtype=torch.int32),
        "offsets": offsets,
        "tasks": torch.tensor([TASKS.index(s.task) for s in sequences], dtype=torch.int64),
    }
    save_file(tensors, str(path))


def load_sequences(path: str | Path) -> list[TrainingSequence]:
    t = load_file(str(path))
    ids, labels, offsets = t["input_ids"].tolist(), t["labels"].tolist(), t["offsets"].tolist()
    return [
        TrainingSequence(ids[a:b], labels[a:b], TASKS[task])
        for a, b, task in zip(offsets[:-1], offsets[1:], t["tasks"].tolist())
    ]


# --------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T)

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


def collate(sequences: Sequence[TrainingSequence], pad_id: int) -> Batch:
    """Right-pad into (B, T) tensors; padding has attention 0 and label -100."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    labels = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
    for row, s in enumerate(sequences):
        n = len(s)
        ids[row, :n] = torch.tensor(s.input_ids)
        labels[row, :n] = torch.tensor(s.labels)
        mask[row, :n] = 1
    return Batch(ids, mask, labels)


def epoch_batches(
    lengths: Sequence[int], *, max_tokens: int, seed: int, epoch: int, group: int = 512
) -> list[list[int]]:
    """Index batches for one epoch: shuffled, then sorted by length within groups of ``group`` sequences so
    padding stays small; each batch holds at most ``max_tokens`` padded tokens (a longer sequence gets a
    batch of its own). A pure function of its arguments."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=generator).tolist()
    batches: list[list[int]] = []
    for start in range(0, len(order), group):
        current: list[int] = []
        for i in sorted(order[start : start + group], key=lambda i: lengths[i]):
            if current and (len(current) + 1) * lengths[i] > max_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in shuffle]


class BatchSchedule:
    """Step -> batch of sequence indices, deterministic, so a resumed run sees the same batches."""

    def __init__(self, lengths: Sequence[int], *, max_tokens: int, seed: int) -> None:
        if not lengths:
            raise ValueError("no training sequences")
        self.lengths = list(lengths)
        self.max_tokens = max_tokens
        self.seed = seed
        self._counts: list[int] = []  # batches per epoch, for the epochs seen so far
        self._cached: tuple[int, list[list[int]]] | None = None

    def _epoch(self, epoch: int) -> list[list[int]]:
        if self._cached is None or self._cached[0] != epoch:
            batches = epoch_batches(self.lengths, max_tokens=self.max_tokens, seed=self.seed, epoch=epoch)
            self._cached = (epoch, batches)
            if epoch == len(self._counts):
                self._counts.append(len(batches))
        return self._cached[1]

    def batch(self, step: int) -> list[int]:
        """Indices for 0-based ``step``; epochs follow each other."""
        epoch = 0
        while True:
            count = self._counts[epoch] if epoch < len(self._counts) else len(self._epoch(epoch))
            if step < count:
                return self._epoch(epoch)[step]
            step -= count
            epoch += 1
