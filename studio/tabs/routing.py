"""Routing tab: the per-layer modality routing of one sequence, the "X" of Uni-X.

Shows a depth × token heat-map coloured by branch (text, vision, shared) and per-depth statistics from
the routing trace (hidden-state norms per modality, same- vs cross-modality attention mass in shared
layers, text-vs-vision branch divergence in split layers). The sequence is either the last run of a
generation tab ("Show routing of this run") or an input given here.

Named API endpoint: ``/routing`` with inputs (mode, text, image).
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from studio import routing_view, validation
from studio.context import RunRecord, StudioContext
from unix_core import UniXPipeline
from unix_core.routing import describe_split

MODE_UNDERSTAND = "Image + question (the Understand prompt)"
MODE_GENERATE = "Prompt + image codes (a finished Text → Image sequence)"
MODES = [MODE_UNDERSTAND, MODE_GENERATE]


@dataclass
class RoutingParts:
    outputs: list
    show_run: object  # callable(RunRecord | None) -> tuple for [tabs, *outputs]


def sequence_for(pipeline: UniXPipeline, mode: str, text: str, image) -> tuple[list[int], str]:
    """Token ids (and a title) for an input given in the Routing tab; image is a checked PIL image or None."""
    templates, builder = pipeline.templates, pipeline.builder
    if mode == MODE_GENERATE:
        rendered = builder.render(templates.text_to_image, {"prompt": text}, [])
        ids = list(rendered.ids)
        if image is not None:
            codes = pipeline.image_tokenizer.encode(image, pipeline.image_size)
            ids += builder.image_ids(codes)[1:-1]  # the prompt already ends with <|vision_start|>
        return ids, f"Prompt + image codes: “{text}”"
    codes = pipeline.image_tokenizer.encode(image, pipeline.image_size)
    if text:
        return builder.render(templates.answer, {"question": text}, [codes]).ids, f"Image + question: “{text}”"
    return builder.render(templates.caption, {}, [codes]).ids, "Image + caption prompt"


def build(ctx: StudioContext) -> RoutingParts:
    pipeline = ctx.pipeline
    cfg = pipeline.model.config
    split = describe_split(cfg.num_vision_encode_layers, cfg.num_vision_decode_layers)
    gr.Markdown(
        f"Which weights processed each token at each depth. In this model {split}. Split depths run text "
        "tokens through the **text branch** (blue) and vision tokens through the **vision branch** (orange); "
        "shared layers are grey. Use *Show routing of this run* in any generation tab, or trace an input here."
    )
    with gr.Row():
        with gr.Column(scale=1):
            mode = gr.Radio(MODES, value=MODE_UNDERSTAND, label="Sequence to trace", elem_id="rt-mode")
            text = gr.Textbox(
                label="Question or prompt",
                lines=1,
                max_length=validation.MAX_PROMPT_CHARS,
                elem_id="rt-text",
                placeholder="what color is the circle?",
            )
            image = validation.image_input(
                label="Image", type="filepath", sources=["upload", "clipboard"], height=200, elem_id="rt-image"
            )
            trace_btn = gr.Button("Trace", variant="primary", elem_id="rt-trace")
            if ctx.examples.understand:
                picture, question = ctx.examples.understand[0]
                gr.Examples(
                    examples=[[MODE_UNDERSTAND, question, picture], [MODE_GENERATE, ctx.examples.prompts[0], picture]],
                    inputs=[mode, text, image],
                    label="Examples",
                )
        with gr.Column(scale=3):
            summary = gr.Markdown("Nothing traced yet.", elem_id="rt-summary")
            heatmap = gr.Image(
                label="Depth × token routing",
                show_label=False,
                type="pil",
                format="png",
                interactive=False,
                elem_id="rt-heatmap",
            )
            norms = gr.LinePlot(
                x="depth",
                y="norm",
                color="modality",
                title="Mean hidden-state norm after each depth",
                color_map={"text": "#3b82f6", "vision": "#f59e0b"},
                height=220,
                elem_id="rt-norms",
            )
            stats = gr.Dataframe(
                headers=routing_view.STAT_COLUMNS,
                label="Per-depth statistics",
                interactive=False,
                wrap=True,
                elem_id="rt-stats",
            )
            gr.Markdown(routing_view.STAT_LEGEND)
            with gr.Accordion("Tokens", open=False):
                tokens = gr.HighlightedText(
                    label="Tokens (colour = modality)",
                    color_map={"text": "#93c5fd", "vision": "#fcd34d"},
                    show_legend=True,
                )
            with gr.Accordion("Raw trace (JSON)", open=False):
                raw = gr.JSON(label="RoutingTrace.to_dict()")
    outputs = [summary, heatmap, norms, stats, tokens, raw]

    def render(ids: list[int], title: str) -> tuple:
        with validation.user_errors():
            trace = pipeline.trace(ids)
        view = routing_view.build_view(trace, pipeline.token_labels(ids), title=title)
        return view.summary, view.heatmap, view.norms, view.stats, view.tokens, trace.to_dict()

    def routing(mode_value, text_value, image_path):
        """Trace the per-layer modality routing of an input (image + question, or prompt + image codes)."""
        if mode_value not in MODES:
            raise gr.Error(f"Unknown sequence kind {mode_value!r}; allowed: {', '.join(MODES)}.", print_exception=False)
        needs_text = mode_value == MODE_GENERATE
        text_ok = isinstance(text_value, str) and text_value.strip()
        prompt = validation.text("Prompt", text_value) if needs_text or text_ok else ""
        picture = validation.image("Image", image_path) if mode_value == MODE_UNDERSTAND or image_path else None
        with validation.user_errors():
            ids, title = sequence_for(pipeline, mode_value, prompt, picture)
        return render(ids, title)

    def show_run(record: RunRecord | None):
        if record is None:
            raise gr.Error("Nothing to show yet: finish a run in this tab first.", print_exception=False)
        return gr.Tabs(selected="routing"), *render(record.sequence_ids, record.title)

    trace_btn.click(routing, inputs=[mode, text, image], outputs=outputs, **ctx.model_event("routing"))
    return RoutingParts(outputs, show_run)
