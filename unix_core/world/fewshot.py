"""Few-shot episodes: k (1-4) example (image, text) pairs, a query image, and the expected answer.

The examples define the answer's wording; each episode uses one wording of `FEWSHOT_WORDINGS`
for every example and for the answer:

    color_sentence       this is a {color} one.        (one-object scenes; the object's colour)
    count_word           {count}                        (one | two | three)
    shape_name           {shape}                        (one-object scenes)
    position_phrase      at the {position}              (one-object scenes)
    background_sentence  the background is {color}.

Invariants: the answer is `fewshot_answer(query, wording)`, a function of the query image alone
(object-level wordings only ever see one-object scenes); every example text is that same function
of its example image. Episodes of split "train" use only training scenes; "heldout" episodes have a
held-out query and training examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

from PIL import Image

from .render import render
from .scene import COUNT_WORDS, Scene
from .split import sample_scene
from .tasks import check_count, make_rng

FEWSHOT_WORDINGS: dict[str, str] = {
    "color_sentence": "this is a {color} one.",
    "count_word": "{count}",
    "shape_name": "{shape}",
    "position_phrase": "at the {position}",
    "background_sentence": "the background is {background}.",
}
"""Wording name -> template."""

SINGLE_OBJECT_WORDINGS = frozenset({"color_sentence", "shape_name", "position_phrase"})
MAX_EXAMPLES = 4


def fewshot_answer(scene: Scene, wording: str) -> str:
    """The text for `scene` in `wording`; ValueError for an unknown wording or an ambiguous scene."""
    if wording not in FEWSHOT_WORDINGS:
        raise ValueError(f"unknown wording {wording!r}; allowed: {', '.join(FEWSHOT_WORDINGS)}")
    if wording in SINGLE_OBJECT_WORDINGS and len(scene.objects) != 1:
        raise ValueError(f"wording {wording!r} needs a one-object scene, got {len(scene.objects)} objects")
    obj = scene.objects[0]
    return FEWSHOT_WORDINGS[wording].format(
        color=obj.color,
        shape=obj.shape,
        position=obj.position,
        count=COUNT_WORDS[len(scene.objects)],
        background=scene.background,
    )


@dataclasses.dataclass(frozen=True)
class FewShotEpisode:
    """Examples as (scene, text) pairs, then a query scene whose expected text is `answer`."""

    wording: str
    examples: tuple[tuple[Scene, str], ...]
    query: Scene
    answer: str

    @property
    def example_images(self) -> tuple[Image.Image, ...]:
        return tuple(render(scene) for scene, _ in self.examples)

    @property
    def query_image(self) -> Image.Image:
        return render(self.query)


def fewshot_episodes(n: int, *, seed: int = 0, split: str = "train") -> Iterator[FewShotEpisode]:
    """`n` episodes; wording uniform over `FEWSHOT_WORDINGS`, k uniform over 1..4."""
    rng = make_rng(seed, split, "fewshot")
    for _ in range(check_count(n)):
        wording = rng.choice(list(FEWSHOT_WORDINGS))
        k = rng.randint(1, MAX_EXAMPLES)
        n_objects = 1 if wording in SINGLE_OBJECT_WORDINGS else None
        examples = []
        for _ in range(k):
            scene = sample_scene(rng, "train", n_objects)
            examples.append((scene, fewshot_answer(scene, wording)))
        query = sample_scene(rng, split, n_objects)
        answer = fewshot_answer(query, wording)
        yield FewShotEpisode(wording=wording, examples=tuple(examples), query=query, answer=answer)
