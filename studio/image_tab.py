"""What the two image tabs (Text → Image, Edit) share: the streaming run handler, the result panel
with its run card, Stop, and loading a run card back into the controls.

The handler sends an update every `streaming.UPDATE_INTERVAL_S` (and the final one) and checks the
tab's Stop signal at every generated code, so Stop ends the run within one step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr
from PIL import Image

from studio import run_card, streaming, validation
from studio.context import RunRecord, StudioContext
from studio.image_settings import ImageControls, ImageSettings


@dataclass
class ResultPanel:
    preview: gr.Image
    status: gr.Markdown
    gallery: gr.Gallery
    card: gr.Code
    load_card: gr.Button
    card_file: gr.UploadButton
    to_routing: gr.Button

    def outputs(self, seed: gr.Number, run_state: gr.State) -> list:
        return [self.preview, self.status, self.gallery, self.card, seed, run_state]


def build_result_panel(prefix: str) -> ResultPanel:
    preview = gr.Image(
        label="Live preview", type="pil", interactive=False, format="png", height=300, elem_id=f"{prefix}-preview"
    )
    status = gr.Markdown("Ready.", elem_id=f"{prefix}-status")
    gallery = gr.Gallery(
        label="Results (PNG with the run card embedded)",
        format="png",
        columns=4,
        height=220,
        object_fit="contain",
        interactive=False,
        elem_id=f"{prefix}-gallery",
    )
    to_routing = gr.Button("Show routing of this run →", size="sm", elem_id=f"{prefix}-to-routing")
    with gr.Accordion("Run card (reproduce a run)", open=False, elem_id=f"{prefix}-card-box"):
        card = gr.Code(label="Run card (JSON)", language="json", interactive=True, lines=8, elem_id=f"{prefix}-card")
        with gr.Row():
            load_card = gr.Button("Load run card", size="sm", elem_id=f"{prefix}-load-card")
            card_file = gr.UploadButton("Load from file (result PNG or .json)", file_types=[".png", ".json"], size="sm")
    return ResultPanel(preview, status, gallery, card, load_card, card_file, to_routing)


def stream_run(
    ctx: StudioContext,
    *,
    entry_point: str,
    text: str,
    settings: ImageSettings,
    seed: int | None,
    start: Callable[..., Iterator],
    title: str,
    stopped: Callable[[], bool],
    input_image: Image.Image | None = None,
) -> Iterator[tuple]:
    """Drive one image stream (`start(seed=..., **settings)` opens it) until done or `stopped()`."""
    with validation.user_errors():
        stream = start(seed=seed, **settings.to_dict())
    composer = streaming.PreviewComposer(ctx.pipeline.grid_hw, ctx.pipeline.image_size)
    throttle = streaming.Throttle()
    with contextlib.closing(stream), validation.user_errors():
        for event in stream:
            if event.done:
                card = run_card.RunCard(
                    model=ctx.pipeline.name,
                    entry_point=entry_point,
                    text=text,
                    settings=settings,
                    seed=event.seed,
                    input_image_sha256=run_card.image_digest(input_image) if input_image is not None else None,
                ).to_json()
                images = [run_card.with_card(image, card) for image in event.images]
                record = RunRecord(entry_point, f"{title} (seed {event.seed})", list(event.sequence_ids))
                status = streaming.image_status(event)
                yield composer.update(event), status, images, card, event.seed, record
            elif stopped():
                status = f"Stopped at code {event.step}/{event.total} · seed {event.seed}"
                yield composer.update(event), status, None, "", event.seed, gr.skip()
                return
            elif throttle.ready():
                # Plain values (the gallery stays empty while running): cheaper for Gradio than gr.skip().
                status = streaming.image_status(event)
                yield composer.update(event), status, None, "", event.seed, gr.skip()


def card_updates(ctx: StudioContext, card_text: str, *, entry_point: str) -> tuple:
    """Control values from a run card: text, the settings (cfg, temperature, top-k, top-p, images, and for
    text to image candidates), seed, randomize, card, status."""
    card = run_card.parse(card_text, entry_point=entry_point, codebook_size=ctx.codebook_size)
    s = card.settings
    note = f"Run card loaded (seed {card.seed}). Press Generate to reproduce it."
    if card.model and card.model != ctx.pipeline.name:
        gr.Warning(f"This run card was made with model '{card.model}'; the loaded model is '{ctx.pipeline.name}'.")
        note += " Note: it was made with another model."
    if card.input_image_sha256:
        note += " Use the same input image (its SHA-256 is in the card)."
    return card.text, *s.values(), card.seed, False, card_text, note


def wire_common(
    ctx: StudioContext,
    panel: ResultPanel,
    controls: ImageControls,
    text_box: gr.Textbox,
    stop: gr.Button,
    *,
    entry_point: str,
) -> None:
    """Stop, run-card loading (pasted JSON or uploaded file)."""
    stop.click(ctx.stop_handler(entry_point), queue=False, api_visibility="private")
    card_outputs = [text_box, *controls.settings(), controls.seed, controls.randomize, panel.card, panel.status]

    def load_text(card_text):
        return card_updates(ctx, card_text, entry_point=entry_point)

    def load_file(file):
        return card_updates(ctx, run_card.read_file(file), entry_point=entry_point)

    panel.load_card.click(load_text, inputs=[panel.card], outputs=card_outputs, api_visibility="private")
    panel.card_file.upload(load_file, inputs=[panel.card_file], outputs=card_outputs, api_visibility="private")
