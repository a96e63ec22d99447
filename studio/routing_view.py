"""Render a `RoutingTrace` for people: a depth × token heat-map coloured by branch, per-depth statistics.

The heat-map has one row per depth (top = first layer) and one column per token: blue cells went through
a text branch, orange cells through a vision branch, grey cells through a shared layer. The strip above
the rows shows each token's modality. Long sequences are clipped to `MAX_TOKENS` columns: every text token
and both ends of each image stay, the middle of long images is left out (a gap in the map); statistics
always cover the whole sequence. Pure functions of the trace: no Gradio, no model.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from unix_core.routing import RoutingTrace

MAX_TOKENS = 300
COLORS = {"text": (59, 130, 246), "vision": (245, 158, 11), "shared": (156, 163, 175)}
BACKGROUND = (255, 255, 255)
INK = (31, 41, 55)
LEFT, TOP, ROW_GAP = 128, 58, 1
STAT_COLUMNS = [
    "depth",
    "layer",
    "text tok",
    "vision tok",
    "‖h‖ text",
    "‖h‖ vision",
    "attn same (text q)",
    "attn cross (text q)",
    "attn same (vision q)",
    "attn cross (vision q)",
    "diverg. text",
    "diverg. vision",
]
STAT_LEGEND = (
    "*text tok / vision tok*: tokens routed through the text / vision branch at split depths · "
    "*‖h‖*: mean L2 norm of the hidden states after the depth, per modality · "
    "*attn same / cross*: mean attention mass that queries of a modality put on keys of the same / the other "
    "modality (shared depths) · *diverg.*: ‖Δ_own − Δ_twin‖ / ‖Δ_own‖ of the two branches on the same input "
    "(split depths; 0 = identical twins, ≥ 1 = fully specialised)."
)


@dataclass
class RoutingView:
    heatmap: Image.Image
    stats: pd.DataFrame
    norms: pd.DataFrame  # long format: depth, modality, norm (for a line plot)
    summary: str  # Markdown
    tokens: list[tuple[str, str]]  # (label, modality) of the shown tokens


def shown_tokens(modalities: list[str], max_tokens: int = MAX_TOKENS) -> list[int]:
    """Indices of the tokens to draw (ascending). Short sequences: all. Long ones: every text token, and the
    start and end of each run of vision tokens, so every modality boundary stays in view."""
    n = len(modalities)
    if n <= max_tokens:
        return list(range(n))
    runs, start = [], 0  # maximal runs of one modality: (start, end, modality)
    for i in range(1, n + 1):
        if i == n or modalities[i] != modalities[start]:
            runs.append((start, i, modalities[start]))
            start = i
    n_text = sum(end - begin for begin, end, m in runs if m != "vision")
    n_vision_runs = sum(m == "vision" for *_, m in runs)
    keep = (max_tokens - n_text) // (2 * max(n_vision_runs, 1))  # per end of each vision run
    if keep < 4:  # mostly text: the first and the last half
        half = max_tokens // 2
        return list(range(half)) + list(range(n - (max_tokens - half), n))
    shown = []
    for begin, end, m in runs:
        if m != "vision" or end - begin <= 2 * keep:
            shown += range(begin, end)
        else:
            shown += [*range(begin, begin + keep), *range(end - keep, end)]
    return shown


def build_view(trace: RoutingTrace, labels: list[str], *, title: str, max_tokens: int = MAX_TOKENS) -> RoutingView:
    shown = shown_tokens(trace.modalities, max_tokens)
    return RoutingView(
        heatmap=render_heatmap(trace, title=title, max_tokens=max_tokens),
        stats=stats_frame(trace),
        norms=norms_frame(trace),
        summary=summary(trace, title=title, shown=len(shown)),
        tokens=[(labels[t], trace.modalities[t]) for t in shown],
    )


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def render_heatmap(trace: RoutingTrace, *, title: str, max_tokens: int = MAX_TOKENS) -> Image.Image:
    n_tokens, n_depths = len(trace.token_ids), len(trace.depths)
    shown = shown_tokens(trace.modalities, max_tokens)
    cell_w = max(3, min(14, 900 // len(shown)))
    cell_h = max(8, min(32, 480 // n_depths))
    gap_w = 3 * cell_w  # a blank band where tokens are left out
    xs, x = [], LEFT  # left edge of each drawn column
    for column, t in enumerate(shown):
        if column and t != shown[column - 1] + 1:
            x += gap_w
        xs.append(x)
        x += cell_w
    height = TOP + 14 + n_depths * (cell_h + ROW_GAP) + 56
    image = Image.new("RGB", (max(x + 16, 560), height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    small, normal = _font(10), _font(12)
    draw.text((8, 6), title.replace("→", "->")[:110], fill=INK, font=normal)  # the bitmap font has no arrows
    clipped = f", showing {len(shown)} (gaps: left out)" if len(shown) < n_tokens else ""
    draw.text(
        (8, 24), f"{n_tokens} tokens{clipped} · rows: depth 0 (first layer) to {n_depths - 1}", fill=INK, font=small
    )

    y = TOP - 16  # modality strip: what each token is
    draw.text((8, y), "token modality", fill=INK, font=small)
    for x, t in zip(xs, shown, strict=True):
        draw.rectangle([x, y, x + cell_w - 1, y + 10], fill=COLORS[trace.modalities[t]])
    for depth in trace.depths:
        y = TOP + depth.depth * (cell_h + ROW_GAP)
        draw.text((8, y + max(0, (cell_h - 11) // 2)), f"d{depth.depth:<2d} {depth.kind}", fill=INK, font=small)
        for x, t in zip(xs, shown, strict=True):
            draw.rectangle([x, y, x + cell_w - 1, y + cell_h - 1], fill=COLORS[depth.routes[t]])
    y = TOP + n_depths * (cell_h + ROW_GAP) + 4  # token index ticks: regular ones, and after each gap
    last_label = -1000
    for column, (x, t) in enumerate(zip(xs, shown, strict=True)):
        after_gap = column and t != shown[column - 1] + 1
        if (t % 10 == 0 or after_gap) and x - last_label >= 36:
            draw.line([x, y, x, y + 4], fill=INK)
            draw.text((x + 1, y + 4), str(t), fill=INK, font=small)
            last_label = x
    y += 24
    x = 8
    for name, label in (("text", "text branch"), ("vision", "vision branch"), ("shared", "shared layer")):
        draw.rectangle([x, y, x + 12, y + 12], fill=COLORS[name])
        draw.text((x + 18, y), label, fill=INK, font=small)
        x += 120
    return image


def _fmt(values: dict, key: str) -> float | None:
    value = values.get(key)
    return None if value is None else round(float(value), 4)


def stats_frame(trace: RoutingTrace) -> pd.DataFrame:
    rows = []
    for d in trace.depths:
        rows.append(
            [
                d.depth,
                d.kind,
                sum(r == "text" for r in d.routes) if d.kind == "split" else 0,
                sum(r == "vision" for r in d.routes) if d.kind == "split" else 0,
                _fmt(d.hidden_norm, "text"),
                _fmt(d.hidden_norm, "vision"),
                _fmt(d.attention_same, "text"),
                _fmt(d.attention_other, "text"),
                _fmt(d.attention_same, "vision"),
                _fmt(d.attention_other, "vision"),
                _fmt(d.branch_divergence, "text"),
                _fmt(d.branch_divergence, "vision"),
            ]
        )
    return pd.DataFrame(rows, columns=STAT_COLUMNS)


def norms_frame(trace: RoutingTrace) -> pd.DataFrame:
    rows = [
        {"depth": d.depth, "modality": modality, "norm": float(value)}
        for d in trace.depths
        for modality, value in sorted(d.hidden_norm.items())
    ]
    return pd.DataFrame(rows, columns=["depth", "modality", "norm"])


def summary(trace: RoutingTrace, *, title: str, shown: int) -> str:
    n = len(trace.token_ids)
    vision = sum(m == "vision" for m in trace.modalities)
    a, b = trace.num_vision_encode_layers, trace.num_vision_decode_layers
    depths = len(trace.depths)
    shared = [d for d in trace.depths if d.kind == "shared"]
    split = [d for d in trace.depths if d.kind == "split"]
    lines = [
        f"**{title}**",
        "",
        f"- Sequence: {n} tokens ({n - vision} text, {vision} vision)"
        + (f"; the map shows {shown} of them (all text tokens, the ends of each image)." if shown < n else "."),
        f"- Layers: {depths} = first {a} split · {depths - a - b} shared · last {b} split "
        "(split depths run text tokens through the text branch and vision tokens through the vision branch).",
    ]
    if shared:
        same = [d.attention_same.get("vision") for d in shared if "vision" in d.attention_same]
        same_t = [d.attention_same.get("text") for d in shared if "text" in d.attention_same]
        if same_t:
            lines.append(
                f"- Shared layers, text queries: {sum(same_t) / len(same_t):.2f} of attention on text keys (mean)."
            )
        if same:
            lines.append(
                f"- Shared layers, vision queries: {sum(same) / len(same):.2f} of attention on vision keys (mean)."
            )
    div = [v for d in split for v in d.branch_divergence.values()]
    if div:
        lines.append(
            f"- Split layers: text-vs-vision branch divergence {min(div):.2f} to {max(div):.2f} "
            "(0 = twins act identically, ≥1 = fully specialised)."
        )
    return "\n".join(lines)
