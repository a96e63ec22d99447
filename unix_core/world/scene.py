"""Scene model of the shapes world (spec: /work/shared/SHAPES_WORLD.md, v1).

A scene is a flat background colour plus 1 to 3 objects on a 3x3 grid of cells. This module fixes
the vocabulary (colours with exact RGB, shapes, sizes with radii, grid positions with pixel centres),
the validated dataclasses `Obj` and `Scene`, and the canonical caption with its strict parser.

Invariants:
- `Obj` and `Scene` are frozen and hashable; constructing one validates it (ValueError otherwise).
- `Scene.objects` is always stored in reading order (top row first, left to right), so two scenes
  with the same content compare equal whatever order their objects were given in.
- `parse_caption(scene.caption()) == scene` for every valid scene, and `parse_caption` accepts only
  canonical captions (modulo runs of whitespace).
"""

from __future__ import annotations

import dataclasses
import re

CANVAS_SIZE = 64
"""Width and height of every image in pixels."""

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (150, 60, 190),
    "orange": (250, 140, 30),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
}
"""The palette, name -> exact RGB; dict order is the canonical colour order."""

SHAPES: tuple[str, ...] = ("circle", "square", "triangle")

SIZES: dict[str, int] = {"small": 5, "large": 9}
"""Size name -> radius in pixels (a shape's bounding box is (2r+1) x (2r+1))."""

POSITIONS: dict[str, tuple[int, int]] = {
    "top left": (11, 11),
    "top": (32, 11),
    "top right": (53, 11),
    "left": (11, 32),
    "center": (32, 32),
    "right": (53, 32),
    "bottom left": (11, 53),
    "bottom": (32, 53),
    "bottom right": (53, 53),
}
"""Position name -> pixel centre (x, y); dict order is the reading order."""

COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three")
"""Number words indexed by count (the world never has more than 3 objects)."""

MAX_OBJECTS = 3

_READING_ORDER = {name: i for i, name in enumerate(POSITIONS)}


def _check_choice(kind: str, value: object, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {kind} {value!r}; allowed: {', '.join(allowed)}")


@dataclasses.dataclass(frozen=True)
class Obj:
    """One object: a shape of a palette colour and a size, centred on a grid position."""

    shape: str
    color: str
    size: str
    position: str

    def __post_init__(self) -> None:
        _check_choice("shape", self.shape, SHAPES)
        _check_choice("color", self.color, COLORS)
        _check_choice("size", self.size, SIZES)
        _check_choice("position", self.position, POSITIONS)

    def phrase(self) -> str:
        """Canonical object phrase, e.g. `a large blue triangle at the top left`."""
        return f"a {self.size} {self.color} {self.shape} at the {self.position}"


@dataclasses.dataclass(frozen=True)
class Scene:
    """A background colour and 1-3 objects, at most one per position, none in the background colour.

    `objects` may be given in any order (list or tuple); it is stored as a tuple in reading order.
    """

    background: str
    objects: tuple[Obj, ...]

    def __post_init__(self) -> None:
        _check_choice("background color", self.background, COLORS)
        objects = tuple(self.objects)
        if not 1 <= len(objects) <= MAX_OBJECTS:
            raise ValueError(f"a scene has 1 to {MAX_OBJECTS} objects, got {len(objects)}")
        for obj in objects:
            if not isinstance(obj, Obj):
                raise ValueError(f"scene objects must be Obj instances, got {obj!r}")
            if obj.color == self.background:
                raise ValueError(
                    f"object {obj.phrase()!r} has the background colour {self.background}; "
                    "an object's colour must differ from the background's"
                )
        positions = [obj.position for obj in objects]
        if len(set(positions)) != len(positions):
            raise ValueError(f"at most one object per position, got positions {positions}")
        object.__setattr__(self, "objects", tuple(sorted(objects, key=lambda o: _READING_ORDER[o.position])))

    def caption(self) -> str:
        """Canonical caption: object phrases in reading order joined by ` and `, then the background."""
        return " and ".join(obj.phrase() for obj in self.objects) + f" on a {self.background} background"

    def object_at(self, position: str) -> Obj | None:
        """The object at `position`, or None when that cell is empty."""
        _check_choice("position", position, POSITIONS)
        return next((obj for obj in self.objects if obj.position == position), None)

    def free_positions(self) -> list[str]:
        """Empty grid positions in reading order."""
        used = {obj.position for obj in self.objects}
        return [p for p in POSITIONS if p not in used]


def _alternatives(names) -> str:
    # Longest first so that `top left` wins over `top`.
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


SIZE_RE = _alternatives(SIZES)
COLOR_RE = _alternatives(COLORS)
SHAPE_RE = _alternatives(SHAPES)
POSITION_RE = _alternatives(POSITIONS)

_OBJECT_PATTERN = re.compile(rf"a ({SIZE_RE}) ({COLOR_RE}) ({SHAPE_RE}) at the ({POSITION_RE})")
_BACKGROUND_PATTERN = re.compile(rf"(.+) on a ({COLOR_RE}) background")


def normalize_whitespace(text: str) -> str:
    """Strip and collapse runs of whitespace to single spaces."""
    return " ".join(text.split())


def parse_caption(text: str) -> Scene:
    """Parse a canonical caption back into its Scene.

    Accepts exactly the output of `Scene.caption()` (runs of whitespace are collapsed first).
    Raises ValueError naming the offending part for anything else: unknown words, missing sizes,
    positions or background, objects out of reading order, or an invalid scene.
    """
    if not isinstance(text, str):
        raise ValueError(f"a caption must be a string, got {type(text).__name__}")
    text = normalize_whitespace(text)
    match = _BACKGROUND_PATTERN.fullmatch(text)
    if match is None:
        raise ValueError(f"caption {text!r} must end with ' on a {{color}} background' (colors: {', '.join(COLORS)})")
    body, background = match.groups()
    objects = []
    for i, part in enumerate(body.split(" and "), start=1):
        m = _OBJECT_PATTERN.fullmatch(part)
        if m is None:
            raise ValueError(
                f"object {i} {part!r} is not of the form 'a {{size}} {{color}} {{shape}} at the {{position}}' "
                f"(sizes: {', '.join(SIZES)}; shapes: {', '.join(SHAPES)}; positions: {', '.join(POSITIONS)})"
            )
        size, color, shape, position = m.groups()
        objects.append(Obj(shape=shape, color=color, size=size, position=position))
    order = [_READING_ORDER[o.position] for o in objects]
    if order != sorted(order):
        raise ValueError(f"caption {text!r} lists its objects out of reading order (top row first, left to right)")
    return Scene(background=background, objects=tuple(objects))
