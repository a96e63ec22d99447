"""Partial captions ("prompts") for text-to-image, where some attributes are left free.

Supported prompt grammar (every canonical caption is also a prompt):

    prompt := object (" and " object){0,2} [" on a {color} background"]
    object := "a " [size " "] color " " shape [" at the " position]

So a prompt may omit any object's size, any object's position, and the background; colour and
shape are always given. Objects may come in any order. A `SceneSpec` is what a prompt pins down;
`SceneSpec.matches(scene)` is true when some one-to-one assignment of the scene's objects to the
spec's objects agrees on every given attribute (the object count must be equal).

The generators produce only the variants in `PROMPT_VARIANTS` (objects in reading order), made by
`make_prompt(scene, variant)`.

Invariants: `parse_prompt(make_prompt(scene, v)).matches(scene)` for every scene and variant, and
`parse_prompt(spec.text()) == spec`.
"""

from __future__ import annotations

import dataclasses
import itertools
import re

from .scene import COLOR_RE, COLORS, MAX_OBJECTS, POSITION_RE, POSITIONS, SHAPE_RE, SHAPES, SIZE_RE, SIZES, Scene
from .scene import normalize_whitespace

PROMPT_VARIANTS: tuple[str, ...] = ("full", "no_size", "no_background", "no_size_no_background", "no_position")
"""Prompt forms the generators produce: the canonical caption, and it without sizes, without the
background clause, without both, or without positions (background kept)."""


@dataclasses.dataclass(frozen=True)
class ObjSpec:
    """An object with colour and shape fixed; size and position None when free."""

    shape: str
    color: str
    size: str | None = None
    position: str | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; allowed: {', '.join(SHAPES)}")
        if self.color not in COLORS:
            raise ValueError(f"unknown color {self.color!r}; allowed: {', '.join(COLORS)}")
        if self.size is not None and self.size not in SIZES:
            raise ValueError(f"unknown size {self.size!r}; allowed: {', '.join(SIZES)} or None")
        if self.position is not None and self.position not in POSITIONS:
            raise ValueError(f"unknown position {self.position!r}; allowed: {', '.join(POSITIONS)} or None")

    def phrase(self) -> str:
        size = f"{self.size} " if self.size else ""
        where = f" at the {self.position}" if self.position else ""
        return f"a {size}{self.color} {self.shape}{where}"

    def matches(self, obj) -> bool:
        return (
            obj.shape == self.shape
            and obj.color == self.color
            and self.size in (None, obj.size)
            and self.position in (None, obj.position)
        )


@dataclasses.dataclass(frozen=True)
class SceneSpec:
    """What a prompt pins down: 1-3 object specs and an optional background colour."""

    objects: tuple[ObjSpec, ...]
    background: str | None = None

    def __post_init__(self) -> None:
        objects = tuple(self.objects)
        object.__setattr__(self, "objects", objects)
        if not 1 <= len(objects) <= MAX_OBJECTS:
            raise ValueError(f"a prompt names 1 to {MAX_OBJECTS} objects, got {len(objects)}")
        if self.background is not None and self.background not in COLORS:
            raise ValueError(f"unknown background color {self.background!r}; allowed: {', '.join(COLORS)}")
        positions = [o.position for o in objects if o.position is not None]
        if len(set(positions)) != len(positions):
            raise ValueError(f"at most one object per position, got positions {positions}")
        if self.background is not None and any(o.color == self.background for o in objects):
            raise ValueError(f"an object's colour must differ from the background colour {self.background}")

    def text(self) -> str:
        bg = f" on a {self.background} background" if self.background else ""
        return " and ".join(o.phrase() for o in self.objects) + bg

    def matches(self, scene: Scene) -> bool:
        """True when `scene` agrees with every attribute this spec gives."""
        if self.background is not None and scene.background != self.background:
            return False
        if len(scene.objects) != len(self.objects):
            return False
        return any(
            all(spec.matches(obj) for spec, obj in zip(self.objects, perm))
            for perm in itertools.permutations(scene.objects)
        )


_OBJECT_PATTERN = re.compile(rf"a (?:({SIZE_RE}) )?({COLOR_RE}) ({SHAPE_RE})(?: at the ({POSITION_RE}))?")
_BACKGROUND_PATTERN = re.compile(rf"(.+) on a ({COLOR_RE}) background")


def parse_prompt(text: str) -> SceneSpec:
    """Parse a (possibly partial) caption into a SceneSpec; ValueError on anything outside the grammar."""
    if not isinstance(text, str):
        raise ValueError(f"a prompt must be a string, got {type(text).__name__}")
    text = normalize_whitespace(text)
    background = None
    match = _BACKGROUND_PATTERN.fullmatch(text)
    if match is not None:
        text, background = match.groups()
    objects = []
    for i, part in enumerate(text.split(" and "), start=1):
        m = _OBJECT_PATTERN.fullmatch(part)
        if m is None:
            raise ValueError(
                f"object {i} {part!r} is not of the form 'a [{{size}} ]{{color}} {{shape}}[ at the {{position}}]' "
                f"(sizes: {', '.join(SIZES)}; colors: {', '.join(COLORS)}; shapes: {', '.join(SHAPES)}; "
                f"positions: {', '.join(POSITIONS)})"
            )
        size, color, shape, position = m.groups()
        objects.append(ObjSpec(shape=shape, color=color, size=size, position=position))
    return SceneSpec(objects=tuple(objects), background=background)


def spec_of(scene: Scene, *, size: bool = True, position: bool = True, background: bool = True) -> SceneSpec:
    """The spec of `scene` keeping only the chosen attributes (objects in reading order)."""
    return SceneSpec(
        objects=tuple(
            ObjSpec(o.shape, o.color, o.size if size else None, o.position if position else None)
            for o in scene.objects
        ),
        background=scene.background if background else None,
    )


def make_prompt(scene: Scene, variant: str = "full") -> str:
    """Prompt text for `scene` in one of `PROMPT_VARIANTS`."""
    if variant not in PROMPT_VARIANTS:
        raise ValueError(f"unknown prompt variant {variant!r}; allowed: {', '.join(PROMPT_VARIANTS)}")
    if variant == "full":
        return scene.caption()
    return spec_of(
        scene,
        size="no_size" not in variant,
        position=variant != "no_position",
        background="no_background" not in variant,
    ).text()
