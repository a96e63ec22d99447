"""Run cards: everything needed to reproduce an image run (model, entry point, text, settings, seed).

A card is a small JSON object. It is shown next to the results, embedded as the PNG text chunk
``unix_run_card`` of every result image, and can be loaded back (pasted JSON, a ``.json`` file or a
result PNG) to fill the controls again. Loading validates everything: a card is user input.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import gradio as gr
from PIL import Image, UnidentifiedImageError

from studio import validation
from studio.image_settings import ImageSettings

CARD_KIND = "uni-x-studio run card"
CARD_VERSION = 1
PNG_KEY = "unix_run_card"
MAX_CARD_BYTES = 64 * 1024
ENTRY_TEXT_FIELD = {"text_to_image": "prompt", "edit": "instruction"}
ENTRY_TAB = {"text_to_image": "Text → Image", "edit": "Edit"}


@dataclass(frozen=True)
class RunCard:
    model: str
    entry_point: str
    text: str  # the prompt (text_to_image) or the instruction (edit)
    settings: ImageSettings
    seed: int
    input_image_sha256: str | None = None  # edit: which image was edited

    def to_dict(self) -> dict:
        card = {
            "kind": CARD_KIND,
            "version": CARD_VERSION,
            "model": self.model,
            "entry_point": self.entry_point,
            ENTRY_TEXT_FIELD[self.entry_point]: self.text,
            "settings": self.settings.to_dict(),
            "seed": self.seed,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        if self.input_image_sha256:
            card["input_image_sha256"] = self.input_image_sha256
        return card

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)


def image_digest(image: Image.Image) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def with_card(image: Image.Image, card_json: str) -> Image.Image:
    """A copy of ``image`` carrying the card as PNG text (Gradio's PNG writer keeps text chunks)."""
    out = image.copy()
    out.info[PNG_KEY] = card_json
    return out


def parse(text: str, *, entry_point: str, codebook_size: int) -> RunCard:
    """Validate a card's JSON for ``entry_point``; gr.Error saying what is wrong otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise gr.Error(
            "The run card is empty: paste a card's JSON or upload a card file or result PNG.", print_exception=False
        )
    if len(text.encode("utf-8")) > MAX_CARD_BYTES:
        raise gr.Error(
            f"The run card is over {MAX_CARD_BYTES // 1024} KiB; a card is a small JSON object.", print_exception=False
        )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise gr.Error(
            f"The run card is not valid JSON: {err.msg} (line {err.lineno}, column {err.colno}).", print_exception=False
        ) from err
    if not isinstance(data, dict) or data.get("kind") != CARD_KIND:
        raise gr.Error(f'This is not a Uni-X Studio run card (expected "kind": "{CARD_KIND}").', print_exception=False)
    if data.get("version") != CARD_VERSION:
        raise gr.Error(
            f"Run card version {data.get('version')!r} is not supported; this studio reads version {CARD_VERSION}.",
            print_exception=False,
        )
    entry = data.get("entry_point")
    if entry not in ENTRY_TEXT_FIELD:
        raise gr.Error(
            f"Run card entry_point {entry!r} is unknown; allowed: {', '.join(ENTRY_TEXT_FIELD)}.", print_exception=False
        )
    if entry != entry_point:
        raise gr.Error(f"This run card is for the {ENTRY_TAB[entry]} tab; load it there.", print_exception=False)
    field = ENTRY_TEXT_FIELD[entry]
    settings = data.get("settings")
    if not isinstance(settings, dict):
        raise gr.Error(
            'Run card "settings" must be an object with cfg_scale, temperature, top_k, top_p, num_images.',
            print_exception=False,
        )
    missing = [k for k in ("cfg_scale", "temperature", "top_k", "top_p", "num_images") if k not in settings]
    if missing:
        raise gr.Error(f"Run card settings lack {', '.join(missing)}.", print_exception=False)
    candidates = None
    if entry == "text_to_image":  # cards from before the self-check drew one image per result
        candidates = settings.get("candidates", 1)
    elif "candidates" in settings:
        raise gr.Error("Run card settings: candidates (the self-check) applies to Text → Image only.",
                       print_exception=False)
    checked = ImageSettings.checked(
        settings["cfg_scale"],
        settings["temperature"],
        settings["top_k"],
        settings["top_p"],
        settings["num_images"],
        candidates,
        codebook_size=codebook_size,
    )
    model = data.get("model", "")
    digest = data.get("input_image_sha256")
    return RunCard(
        model=model if isinstance(model, str) else str(model),
        entry_point=entry,
        text=validation.text(f"Run card {field}", data.get(field)),
        settings=checked,
        seed=validation.integer("Run card seed", data.get("seed"), 0, validation.MAX_SEED),
        input_image_sha256=digest if isinstance(digest, str) else None,
    )


def read_file(path) -> str:
    """The card text from an uploaded ``.json`` file or a result PNG."""
    if not path:
        raise gr.Error("No file was uploaded.", print_exception=False)
    path = Path(str(path))
    if path.stat().st_size > validation.MAX_UPLOAD_BYTES:
        raise gr.Error("The file is too large to hold a run card.", print_exception=False)
    head = path.read_bytes()[:8]
    if head.startswith(b"\x89PNG"):
        try:
            with Image.open(path) as png:
                card = png.text.get(PNG_KEY) if hasattr(png, "text") else None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            raise gr.Error(f"The PNG file cannot be read ({type(err).__name__}).", print_exception=False) from err
        if card is None:
            raise gr.Error(
                f"This PNG holds no run card (no '{PNG_KEY}' text chunk); use a result image saved by the studio.",
                print_exception=False,
            )
        return card
    if path.stat().st_size > MAX_CARD_BYTES:
        raise gr.Error(
            f"The file is over {MAX_CARD_BYTES // 1024} KiB; a run card is a small JSON file.", print_exception=False
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise gr.Error("The file is neither a result PNG nor a UTF-8 JSON run card.", print_exception=False) from err
