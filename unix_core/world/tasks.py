"""Caption and text-to-image samples of the shapes world, plus what every task generator shares.

Every generator here and in `vqa`, `edits`, `fewshot` and `text` has the signature
`(n, *, seed=0, split="train") -> Iterator[...]`, draws all randomness from one
`random.Random(seed)` (never global state), and yields exactly `n` small frozen dataclasses. The
same arguments always give the same samples; images are rendered on demand from the stored scenes
(`render` is deterministic), so they are byte-identical too. Samples of split "train" involve only
training scenes, samples of split "heldout" at least one held-out scene (see `split`).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator

from PIL import Image

from .prompt import PROMPT_VARIANTS, make_prompt
from .render import render
from .scene import Scene
from .split import check_split, sample_scene


def check_count(n: int) -> int:
    """Return `n` if it is a non-negative int, else raise ValueError."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    return n


def make_rng(seed: int, split: str, task: str) -> random.Random:
    """The per-call generator: seeded by (seed, split, task) so tasks and splits do not share streams."""
    check_split(split)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return random.Random(f"{task}/{split}/{seed}")


@dataclasses.dataclass(frozen=True)
class CaptionSample:
    """An image and its canonical caption (image -> caption task)."""

    scene: Scene
    caption: str

    @property
    def image(self) -> Image.Image:
        return render(self.scene)


@dataclasses.dataclass(frozen=True)
class PromptSample:
    """A (possibly partial) caption and an image satisfying it (text -> image task).

    `variant` is one of `PROMPT_VARIANTS`; for anything but "full" several images satisfy `prompt`.
    """

    scene: Scene
    prompt: str
    variant: str

    @property
    def image(self) -> Image.Image:
        return render(self.scene)


def caption_samples(n: int, *, seed: int = 0, split: str = "train") -> Iterator[CaptionSample]:
    """`n` random scenes of `split` with their canonical captions."""
    rng = make_rng(seed, split, "caption")
    for _ in range(check_count(n)):
        scene = sample_scene(rng, split)
        yield CaptionSample(scene=scene, caption=scene.caption())


def prompt_samples(n: int, *, seed: int = 0, split: str = "train") -> Iterator[PromptSample]:
    """`n` text-to-image pairs; the prompt variant is uniform over `PROMPT_VARIANTS`."""
    rng = make_rng(seed, split, "prompt")
    for _ in range(check_count(n)):
        scene = sample_scene(rng, split)
        variant = rng.choice(PROMPT_VARIANTS)
        yield PromptSample(scene=scene, prompt=make_prompt(scene, variant), variant=variant)
