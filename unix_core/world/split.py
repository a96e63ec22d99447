"""Train / held-out split of the shapes world by attribute combination, and the split-aware scene sampler.

Split rule. An object's key is its (shape, color, position) triple. With i_shape, i_color, i_position
the indices in `SHAPES`, `COLORS` (palette order) and `POSITIONS` (reading order), the key is held out iff

    (i_shape + i_color + i_position) % 7 == 0

which holds out 31 of the 216 triples. A scene is "heldout" when any of its objects has a held-out
key, else "train". Samples that involve several scenes (edits: source and target; few-shot: examples
and query) are "train" only when every scene is. Training generators never produce a held-out key,
so held-out captions, prompts, questions and instructions always contain an object phrase (colour,
shape, position) that training text never pairs up.

Why it stays compositionally solvable: sizes and backgrounds are never held out, and because the
three indices enter the sum with step 1, fixing any two attributes leaves at most 2 held-out values
of the third (of 3, 8 or 9) -- so every single attribute value and every pair of attribute values
(shape+color, shape+position, color+position) still occurs in training.
"""

from __future__ import annotations

import functools
import random

from .scene import COLORS, MAX_OBJECTS, POSITIONS, SHAPES, SIZES, Obj, Scene

SPLITS: tuple[str, ...] = ("train", "heldout")
HELDOUT_MODULUS = 7

_SHAPE_INDEX = {name: i for i, name in enumerate(SHAPES)}
_COLOR_INDEX = {name: i for i, name in enumerate(COLORS)}
_POSITION_INDEX = {name: i for i, name in enumerate(POSITIONS)}


def check_split(split: str) -> str:
    """Return `split` if it is a known split name, else raise ValueError."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    return split


def is_heldout_key(shape: str, color: str, position: str) -> bool:
    """True when the (shape, color, position) combination is reserved for held-out evaluation."""
    total = _SHAPE_INDEX[shape] + _COLOR_INDEX[color] + _POSITION_INDEX[position]
    return total % HELDOUT_MODULUS == 0


def object_key(obj: Obj) -> tuple[str, str, str]:
    return (obj.shape, obj.color, obj.position)


def scene_split(*scenes: Scene) -> str:
    """'heldout' if any object of any given scene has a held-out key, else 'train'."""
    heldout = any(is_heldout_key(*object_key(obj)) for scene in scenes for obj in scene.objects)
    return "heldout" if heldout else "train"


def _sample_object(rng: random.Random, position: str, background: str, split: str | None) -> Obj:
    """A random object at `position`; split 'train' forbids held-out keys, None allows any key."""
    candidates = [
        (shape, color)
        for shape in SHAPES
        for color in COLORS
        if color != background and (split is None or not is_heldout_key(shape, color, position))
    ]
    shape, color = rng.choice(candidates)
    return Obj(shape=shape, color=color, size=rng.choice(list(SIZES)), position=position)


def sample_scene(rng: random.Random, split: str = "train", n_objects: int | None = None) -> Scene:
    """A uniformly-built random scene of the given split.

    'train' scenes have only training keys; 'heldout' scenes have one object drawn from the held-out
    keys and the other objects drawn from all keys. `n_objects` defaults to uniform over 1..3.
    """
    check_split(split)
    if n_objects is None:
        n_objects = rng.randint(1, MAX_OBJECTS)
    if not 1 <= n_objects <= MAX_OBJECTS:
        raise ValueError(f"n_objects must be in 1..{MAX_OBJECTS}, got {n_objects}")
    background = rng.choice(list(COLORS))
    if split == "train":
        positions = rng.sample(list(POSITIONS), n_objects)
        return Scene(background, tuple(_sample_object(rng, p, background, "train") for p in positions))
    shape, color, position = rng.choice(
        [key for key in heldout_keys() if key[1] != background]
    )
    first = Obj(shape=shape, color=color, size=rng.choice(list(SIZES)), position=position)
    others = rng.sample([p for p in POSITIONS if p != position], n_objects - 1)
    return Scene(background, (first, *(_sample_object(rng, p, background, None) for p in others)))


@functools.lru_cache(maxsize=1)
def heldout_keys() -> tuple[tuple[str, str, str], ...]:
    """All held-out (shape, color, position) keys in canonical order."""
    return tuple(
        (shape, color, position)
        for shape in SHAPES
        for color in COLORS
        for position in POSITIONS
        if is_heldout_key(shape, color, position)
    )
