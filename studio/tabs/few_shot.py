"""Few-shot tab: k example rows (image + text) and a query image; shows the exact interleaved token
layout that is sent to the model (segments, modalities, lengths) and streams the answer.

Named API endpoint: ``/few_shot`` with inputs (k, image_1, text_1, ..., image_4, text_4, query, temperature,
max_new_tokens, seed); rows beyond k are ignored.
"""

from __future__ import annotations

import gradio as gr
import pandas as pd

from studio import text_tab, validation
from studio.context import StudioContext, TabParts
from studio.examples import FEW_SHOT_ROWS
from unix_core.pipeline import TokenLayout

assert FEW_SHOT_ROWS == 4, "the handlers below take exactly four example rows"

LAYOUT_COLUMNS = ["#", "kind", "content", "tokens", "branch in split layers"]
MODALITY_COLORS = {"text": "#93c5fd", "vision": "#fcd34d"}


def layout_view(layout: TokenLayout) -> tuple[list[tuple[str, str]], pd.DataFrame, str]:
    """Highlighted segments, a segment table and a one-line summary of a token layout."""
    spans, rows, image_no = [], [], 0
    for i, segment in enumerate(layout.segments, 1):
        if segment.kind == "image":
            image_no += 1
            content = f"[image {image_no}: <|vision_start|> + {segment.num_tokens - 1} codes]"
        else:
            content = segment.text
        spans.append((f"{content} · {segment.num_tokens}", segment.modality))
        rows.append([i, segment.kind, content, segment.num_tokens, segment.modality])
    summary = (
        f"**{layout.total_tokens} tokens** in {len(layout.segments)} segments: "
        f"{layout.text_tokens} text, {layout.vision_tokens} vision ({image_no} images)."
    )
    return spans, pd.DataFrame(rows, columns=LAYOUT_COLUMNS), summary


def collect(k, rows: list, query_path) -> tuple[list, object]:
    """Validated (image, text) examples for the first k rows, and the query image."""
    k = validation.integer("Number of examples", k, 1, FEW_SHOT_ROWS)
    examples = []
    for i in range(k):
        image_path, text = rows[2 * i], rows[2 * i + 1]
        examples.append(
            (
                validation.image(f"Example {i + 1} image", image_path),
                validation.text(f"Example {i + 1} text", text, max_chars=validation.MAX_SHORT_TEXT_CHARS),
            )
        )
    return examples, validation.image("Query image", query_path)


def build(ctx: StudioContext) -> TabParts:
    pipeline = ctx.pipeline
    with gr.Row():
        with gr.Column(scale=1):
            k = gr.Slider(1, FEW_SHOT_ROWS, value=2, step=1, label="Number of examples (k)", elem_id="fs-k")
            row_boxes, inputs = [], []
            for i in range(FEW_SHOT_ROWS):
                with gr.Row(visible=i < 2) as row:
                    image = validation.image_input(
                        label=f"Example {i + 1} image",
                        type="filepath",
                        sources=["upload", "clipboard"],
                        height=140,
                        elem_id=f"fs-image-{i + 1}",
                    )
                    text = gr.Textbox(
                        label=f"Example {i + 1} text",
                        lines=1,
                        max_length=validation.MAX_SHORT_TEXT_CHARS,
                        elem_id=f"fs-text-{i + 1}",
                    )
                row_boxes.append(row)
                inputs += [image, text]
            query = validation.image_input(
                label="Query image", type="filepath", sources=["upload", "clipboard"], height=160, elem_id="fs-query"
            )
            with gr.Row():
                show_layout = gr.Button("Show token layout", elem_id="fs-layout")
                run_btn = gr.Button("Answer", variant="primary", elem_id="fs-run")
                stop = gr.Button("Stop", variant="stop", elem_id="fs-stop")
            controls = text_tab.build_controls(ctx, prefix="fs")
        with gr.Column(scale=1):
            layout_summary = gr.Markdown("The token layout appears here.", elem_id="fs-layout-summary")
            layout_spans = gr.HighlightedText(
                label="Interleaved prompt (colour = branch in split layers)",
                color_map=MODALITY_COLORS,
                show_legend=True,
                elem_id="fs-layout-spans",
            )
            with gr.Accordion("Segments", open=False):
                layout_table = gr.Dataframe(headers=LAYOUT_COLUMNS, interactive=False, wrap=True)
            answer = gr.Textbox(label="Answer", lines=2, interactive=False, elem_id="fs-answer")
            status = gr.Markdown("Ready.", elem_id="fs-status")
            to_routing = gr.Button("Show routing of this run →", size="sm", elem_id="fs-to-routing")
    if ctx.examples.few_shot:
        rows = []
        for example in ctx.examples.few_shot:
            pairs = list(example.examples) + [(None, "")] * (FEW_SHOT_ROWS - len(example.examples))
            rows.append([len(example.examples), *[value for pair in pairs for value in pair], example.query])
        gr.Examples(examples=rows, inputs=[k, *inputs, query], label="Examples (shapes world)")
    run_state = gr.State(None)

    k.change(
        lambda n: [gr.Row(visible=i < n) for i in range(FEW_SHOT_ROWS)],
        inputs=[k],
        outputs=row_boxes,
        queue=False,
        api_visibility="private",
    )

    def token_layout(n, image_1, text_1, image_2, text_2, image_3, text_3, image_4, text_4, query_image):
        rows = [image_1, text_1, image_2, text_2, image_3, text_3, image_4, text_4]
        examples, query_image = collect(n, rows, query_image)
        with validation.user_errors():
            _, layout = pipeline.few_shot_layout(examples, query_image)
        spans, table, summary = layout_view(layout)
        return summary, spans, table

    def few_shot(
        n,
        image_1,
        text_1,
        image_2,
        text_2,
        image_3,
        text_3,
        image_4,
        text_4,
        query_image,
        temperature,
        max_new_tokens,
        seed,
        request: gr.Request,
    ):
        """Answer for a query image in the pattern of k (image, text) examples; streams the answer."""
        rows = [image_1, text_1, image_2, text_2, image_3, text_3, image_4, text_4]
        examples, query_image = collect(n, rows, query_image)
        settings = text_tab.TextSettings.checked(temperature, max_new_tokens, seed)
        with ctx.stop_watch(request, "few_shot") as stopped:
            yield from text_tab.stream_answer(
                lambda: pipeline.few_shot_stream(examples, query_image, **settings.to_kwargs()),
                entry_point="few_shot",
                title=f"Few-shot: {len(examples)} examples + query",
                stopped=stopped,
            )

    layout_inputs = [k, *inputs, query]
    layout_outputs = [layout_summary, layout_spans, layout_table]
    show_layout.click(token_layout, inputs=layout_inputs, outputs=layout_outputs, **ctx.model_event())
    # The layout is shown first (a separate, private event), then the answer streams (the API endpoint).
    run_btn.click(token_layout, inputs=layout_inputs, outputs=layout_outputs, **ctx.model_event()).success(
        few_shot,
        inputs=[*layout_inputs, *controls.all()],
        outputs=[answer, status, run_state],
        show_progress="minimal",
        **ctx.model_event("few_shot"),
    )
    stop.click(ctx.stop_handler("few_shot"), queue=False, api_visibility="private")
    return TabParts(run_state, to_routing)
