"""Deterministic pixel-level judge: read a scene back from an image and check it against a caption.

Reading (`read_scene_detailed`):
1. Every pixel gets its nearest palette colour (Euclidean RGB). The background is the most common one.
2. Seeds: for each non-background palette colour, the pixels labelled with it, eroded by a 3x3
   square. Erosion removes noise specks and the rims of blurred objects, which are at most 2 px wide
   and can snap to a third colour (a 1/3-2/3 red/yellow blend is nearest to orange; a black/white
   blend to purple), so rims neither become objects nor bridge the 2 px gap between neighbours.
3. Object masks: pixels within 2 px of a seed that are at least `COLOR_WEIGHT` the seed's colour
   (projection onto the background -> colour line; this restores the eroded edge, even the corners
   of a square after a 3x3 box blur), plus pixels labelled with that colour up to 2 px further (a
   triangle's 1-px apex rows), split into 4-connected components (plain BFS, no scipy). A
   component with fewer than `MIN_AREA` pixels is ignored. The component's colour is its seed's.
   Rendered objects are at least 2 px apart, so a component that touches a larger one and lies
   mostly (`RIM_SHARE`) within `RIM_WIDTH` px of it is a blend rim that survived erosion (e.g. the
   slanted edge of a blurred, 2x upscaled triangle) and is dropped.
4. Position: the grid centre nearest to the mask's bounding-box centre (a triangle's centroid sits
   low), rejected when farther than `MAX_OFFSET` px in x or y. Shape and size: the rendered
   (shape, size) mask at that centre, shifted by up to `MAX_SHIFT` px, with the highest IoU; below
   `MIN_IOU` the object is unreadable. Matching whole masks uses fill ratio and area together, which
   a bounding-box fill ratio alone cannot: a small circle downscaled 2x by nearest neighbour at the
   centre column becomes a full 8x8 square (fill 1.0, but far smaller than a small square). The
   fill ratio and the upper-half mass (triangle ~0.25, others 0.5) are reported per object.

An image that cannot be read as a valid scene (no object, more than 3, an object off the grid or of
no shape, two in one cell) gives `Reading(scene=None, reason=...)`. Thresholds are tested against
rendered scenes under gaussian noise, a 3x3 box blur and a 64 -> 32 -> 64 nearest-neighbour round trip.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter

import numpy as np
from PIL import Image

from .prompt import SceneSpec, parse_prompt
from .render import shape_mask
from .scene import CANVAS_SIZE, COLORS, MAX_OBJECTS, POSITIONS, SHAPES, SIZES, Obj, Scene, parse_caption

MIN_AREA = 15
MAX_OFFSET = 6.0
MAX_SHIFT = 3
MIN_IOU = 0.5
COLOR_WEIGHT = 0.42  # just under 4/9, what a 3x3 box blur leaves in a square's corner pixel
RIM_WIDTH = 3
RIM_SHARE = 0.6

_COLOR_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[name] for name in _COLOR_NAMES], dtype=np.float32)  # (8, 3)
_CENTERS = np.array(list(POSITIONS.values()), dtype=np.float32)  # (9, 2) as (x, y)
_WINDOW = max(SIZES.values()) + MAX_SHIFT + 1  # half-width of the template window around a grid centre
_PAD = _WINDOW + 1


@dataclasses.dataclass(frozen=True)
class Blob:
    """One object as read from the image, with the measurements behind the reading."""

    color: str
    shape: str
    size: str
    position: str | None  # None when far from every grid centre
    iou: float  # IoU with the best-matching rendered (shape, size) mask
    area: int
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), inclusive
    fill: float  # area / bounding-box area
    top_fraction: float  # share of the area in the upper half of the bounding box


@dataclasses.dataclass(frozen=True)
class Reading:
    """The result of reading an image: a scene, or None with a reason saying why not."""

    scene: Scene | None
    reason: str
    background: str
    blobs: tuple[Blob, ...]


@dataclasses.dataclass(frozen=True)
class JudgeResult:
    ok: bool
    reason: str
    scene_read: Scene | None


def to_array(image: Image.Image | np.ndarray) -> np.ndarray:
    """A 64x64 image as a (64, 64, 3) float32 array; ValueError for anything else."""
    if isinstance(image, Image.Image):
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    elif isinstance(image, np.ndarray):
        pixels = image.astype(np.float32)
    else:
        raise ValueError(f"expected a PIL image or a (64, 64, 3) array, got {type(image).__name__}")
    if pixels.shape != (CANVAS_SIZE, CANVAS_SIZE, 3):
        raise ValueError(f"expected a {CANVAS_SIZE}x{CANVAS_SIZE} RGB image, got array shape {pixels.shape}")
    return pixels


def _components(mask: np.ndarray) -> list[np.ndarray]:
    """Flat pixel indices of each 4-connected component of `mask`."""
    height, width = mask.shape
    inside = mask.ravel().tolist()
    seen = [False] * (height * width)
    components = []
    for start in np.flatnonzero(mask).tolist():
        if seen[start]:
            continue
        seen[start] = True
        stack, members = [start], []
        while stack:
            i = stack.pop()
            members.append(i)
            y, x = divmod(i, width)
            for j, valid in ((i - width, y > 0), (i + width, y < height - 1), (i - 1, x > 0), (i + 1, x < width - 1)):
                if valid and inside[j] and not seen[j]:
                    seen[j] = True
                    stack.append(j)
        components.append(np.array(members))
    return components


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 (8-neighbour) binary dilation."""
    grown = mask.copy()
    grown[1:, :] |= mask[:-1, :]
    grown[:-1, :] |= mask[1:, :]
    vertical = grown.copy()
    grown[:, 1:] |= vertical[:, :-1]
    grown[:, :-1] |= vertical[:, 1:]
    return grown


@functools.lru_cache(maxsize=1)
def _templates() -> tuple[tuple[tuple[str, str], ...], np.ndarray, np.ndarray]:
    """Every rendered (shape, size) mask at every shift, flattened in the template window.

    Returns (labels, masks (K, side*side) float32, areas (K,)) with K = 6 * (2 * MAX_SHIFT + 1)^2.
    """
    side = 2 * _WINDOW + 1
    labels, masks = [], []
    for shape in SHAPES:
        for size, radius in SIZES.items():
            mask = shape_mask(shape, radius)
            for dy in range(-MAX_SHIFT, MAX_SHIFT + 1):
                for dx in range(-MAX_SHIFT, MAX_SHIFT + 1):
                    window = np.zeros((side, side), dtype=np.float32)
                    top, left = _WINDOW + dy - radius, _WINDOW + dx - radius
                    window[top : top + 2 * radius + 1, left : left + 2 * radius + 1] = mask
                    labels.append((shape, size))
                    masks.append(window.ravel())
    stacked = np.stack(masks)  # (K, side * side)
    return tuple(labels), stacked, stacked.sum(axis=1)


def _classify(mask: np.ndarray, center: tuple[int, int]) -> tuple[str, str, float]:
    """Best (shape, size, IoU) of `mask` (the whole canvas) against the templates at `center`."""
    labels, templates, template_areas = _templates()
    padded = np.zeros((CANVAS_SIZE + 2 * _PAD, CANVAS_SIZE + 2 * _PAD), dtype=np.float32)
    padded[_PAD:-_PAD, _PAD:-_PAD] = mask
    cx, cy = center[0] + _PAD, center[1] + _PAD
    window = padded[cy - _WINDOW : cy + _WINDOW + 1, cx - _WINDOW : cx + _WINDOW + 1].ravel()
    intersection = templates @ window  # (K,)
    iou = intersection / (template_areas + float(mask.sum()) - intersection)
    best = int(iou.argmax())
    return labels[best][0], labels[best][1], float(iou[best])


def _erode(mask: np.ndarray) -> np.ndarray:
    """3x3 binary erosion; pixels outside the canvas count as False."""
    return ~_dilate(~np.pad(mask, 1))[1:-1, 1:-1]


def _read_blob(mask: np.ndarray, color_index: int) -> Blob:
    """Measure and classify one object mask (64, 64) of palette colour `color_index`."""
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
    area = len(xs)
    mid_x, mid_y = (x0 + x1) / 2, (y0 + y1) / 2
    top_fraction = (float((ys < mid_y).sum()) + 0.5 * float((ys == mid_y).sum())) / area
    fill = area / ((x1 - x0 + 1) * (y1 - y0 + 1))
    offsets = np.abs(_CENTERS - np.array([mid_x, mid_y], dtype=np.float32)).max(axis=1)  # (9,)
    nearest = int(offsets.argmin())
    position = list(POSITIONS)[nearest] if offsets[nearest] <= MAX_OFFSET else None
    shape, size, iou = _classify(mask, POSITIONS[list(POSITIONS)[nearest]])
    return Blob(
        color=_COLOR_NAMES[color_index],
        shape=shape,
        size=size,
        position=position,
        iou=round(iou, 3),
        area=area,
        bbox=(x0, y0, x1, y1),
        fill=round(fill, 3),
        top_fraction=round(top_fraction, 3),
    )


def _object_masks(pixels: np.ndarray, labels: np.ndarray, bg_index: int) -> list[tuple[np.ndarray, int]]:
    """(mask, colour index) of every object found, largest first."""
    background = _PALETTE[bg_index]
    found = []
    for color_index in np.unique(labels).tolist():
        if color_index == bg_index:
            continue
        seeds = _erode(labels == color_index)
        if not seeds.any():
            continue
        direction = _PALETTE[color_index] - background
        weight = (pixels - background) @ direction / float(direction @ direction)  # (64, 64): 0 bg, 1 colour
        labelled, blended = labels == color_index, weight >= COLOR_WEIGHT
        region = seeds | (_dilate(_dilate(seeds)) & blended)
        for _ in range(2):  # thin tips the erosion cut off (a triangle's apex): clean pixels of this colour
            region |= _dilate(region) & labelled
        for indices in _components(region):
            if len(indices) >= MIN_AREA:
                mask = np.zeros(CANVAS_SIZE * CANVAS_SIZE, dtype=bool)
                mask[indices] = True
                found.append((mask.reshape(CANVAS_SIZE, CANVAS_SIZE), color_index))
    found.sort(key=lambda item: -int(item[0].sum()))
    kept: list[tuple[np.ndarray, int]] = []
    for mask, color_index in found:
        if not any(_is_rim_of(mask, other) for other, _ in kept):
            kept.append((mask, color_index))
    return kept


def _is_rim_of(mask: np.ndarray, larger: np.ndarray) -> bool:
    """True when `mask` touches `larger` and mostly lies within `RIM_WIDTH` px of it."""
    if not (_dilate(mask) & larger).any():
        return False
    near = larger
    for _ in range(RIM_WIDTH):
        near = _dilate(near)
    return float((mask & near).sum()) >= RIM_SHARE * float(mask.sum())


def read_scene_detailed(image: Image.Image | np.ndarray) -> Reading:
    """Read the background and objects of a 64x64 image (see the module docstring for the method)."""
    pixels = to_array(image)
    # Squared distances |p|^2 - 2 p.c + |c|^2, dropping |p|^2, which does not change the argmin.
    partial_distances = (_PALETTE * _PALETTE).sum(axis=1) - 2.0 * pixels @ _PALETTE.T  # (64, 64, 8)
    labels = partial_distances.argmin(axis=-1)  # (64, 64)
    bg_index = int(np.bincount(labels.ravel(), minlength=len(_COLOR_NAMES)).argmax())
    background = _COLOR_NAMES[bg_index]
    blobs = tuple(_read_blob(mask, color_index) for mask, color_index in _object_masks(pixels, labels, bg_index))

    def failed(reason: str) -> Reading:
        return Reading(None, reason, background, blobs)

    if not blobs:
        return failed(f"no object found on the {background} background")
    if len(blobs) > MAX_OBJECTS:
        return failed(f"read {len(blobs)} objects; a scene has at most {MAX_OBJECTS}")
    for blob in blobs:
        if blob.position is None:
            return failed(f"a {blob.color} object with bounding box {blob.bbox} is not near any grid centre")
        if blob.iou < MIN_IOU:
            return failed(f"the {blob.color} object at the {blob.position} matches no shape (best IoU {blob.iou})")
    crowded = [p for p, n in Counter(b.position for b in blobs).items() if n > 1]
    if crowded:
        return failed(f"several objects read at the {crowded[0]}")
    objects = tuple(Obj(b.shape, b.color, b.size, b.position) for b in blobs)
    return Reading(Scene(background, objects), "", background, blobs)


def read_scene(image: Image.Image | np.ndarray) -> Scene | None:
    """The scene shown in `image`, or None when it cannot be read (see `read_scene_detailed` for why)."""
    return read_scene_detailed(image).scene


def _describe_difference(expected: Scene, read: Scene) -> str:
    problems = []
    if expected.background != read.background:
        problems.append(f"background: expected {expected.background}, read {read.background}")
    for position in POSITIONS:
        want, got = expected.object_at(position), read.object_at(position)
        if want != got:
            want_text = f"a {want.size} {want.color} {want.shape}" if want else "nothing"
            got_text = f"a {got.size} {got.color} {got.shape}" if got else "nothing"
            problems.append(f"{position}: expected {want_text}, read {got_text}")
    return "; ".join(problems)


def _describe_spec_difference(spec: SceneSpec, read: Scene) -> str:
    if spec.background is not None and spec.background != read.background:
        return f"background: expected {spec.background}, read {read.background}"
    if len(spec.objects) != len(read.objects):
        return f"expected {len(spec.objects)} objects, read {len(read.objects)}"
    return f"no matching of objects: expected {spec.text()!r}, read {read.caption()!r}"


def judge(image: Image.Image | np.ndarray, caption: str, *, partial: bool = False) -> JudgeResult:
    """Does `image` show what `caption` says?

    With `partial=False` the caption must be canonical (`parse_caption`) and the read scene must equal
    it exactly. With `partial=True` it may be any prompt of `prompt.parse_prompt` (sizes, positions,
    background optional) and attributes it leaves out are free. ValueError when the caption does not parse.
    """
    expected = parse_prompt(caption) if partial else parse_caption(caption)
    reading = read_scene_detailed(image)
    if reading.scene is None:
        return JudgeResult(False, f"unreadable image: {reading.reason}", None)
    if partial:
        ok = expected.matches(reading.scene)
        reason = "" if ok else _describe_spec_difference(expected, reading.scene)
    else:
        ok = reading.scene == expected
        reason = "" if ok else _describe_difference(expected, reading.scene)
    return JudgeResult(ok, reason, reading.scene)
