"""Example inputs for every tab, from the shapes world the embedded model was trained on.

Images are rendered from canonical captions when the app is built (no files shipped). The scenes are
training-split scenes, so the embedded model has seen their kind; with another checkpoint they still
work as inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from unix_core.world import fewshot_episodes, parse_caption, render

TEXT_TO_IMAGE_PROMPTS = [
    "a large red circle at the center on a white background",
    "a small blue square at the top left and a large yellow triangle at the bottom right on a black background",
    "a large yellow triangle at the center on a blue background",
    "a small purple circle at the top and a small orange square at the bottom on a white background",
]

# (caption of the scene shown, question)
UNDERSTAND = [
    ("a large red circle at the center on a white background", "what color is the circle?"),
    (
        "a small blue square at the top left and a large yellow triangle at the bottom right on a black background",
        "how many shapes are there?",
    ),
    ("a large green triangle at the right on a white background", "where is the green triangle?"),
]

# (caption of the source scene, instruction)
EDIT = [
    ("a large red circle at the center on a white background", "make the circle blue"),
    ("a large green square at the top left on a white background", "move the square to the bottom right"),
    ("a small yellow triangle at the center on a black background", "change the background to white"),
    ("a large blue circle at the left on a white background", "add a small red square at the right"),
]

FEW_SHOT_ROWS = 4
FEW_SHOT_SEEDS = (1, 2, 5)


@dataclass(frozen=True)
class FewShotExample:
    examples: list[tuple[Image.Image, str]]
    query: Image.Image
    expected: str


@dataclass(frozen=True)
class StudioExamples:
    prompts: list[str]
    understand: list[tuple[Image.Image, str]]
    edit: list[tuple[Image.Image, str]]
    few_shot: list[FewShotExample]


def picture(caption: str) -> Image.Image:
    return render(parse_caption(caption))


def build_examples() -> StudioExamples:
    few_shot = []
    for seed in FEW_SHOT_SEEDS:
        episode = next(fewshot_episodes(1, seed=seed))
        pairs = [(render(scene), text) for scene, text in episode.examples[:FEW_SHOT_ROWS]]
        few_shot.append(FewShotExample(pairs, episode.query_image, episode.answer))
    return StudioExamples(
        prompts=list(TEXT_TO_IMAGE_PROMPTS),
        understand=[(picture(caption), question) for caption, question in UNDERSTAND],
        edit=[(picture(caption), instruction) for caption, instruction in EDIT],
        few_shot=few_shot,
    )
