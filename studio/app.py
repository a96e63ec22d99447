"""Build the Uni-X Studio Blocks app from the per-tab modules (`studio/tabs/`).

`build_app(pipeline)` lays out the tabs, wires each generation tab's "Show routing of this run" to the
Routing tab and configures the queue: every event that runs the model shares one concurrency group
(one generation at a time per device by default), and the queue is bounded (a full queue answers
"busy, try again"). It neither loads weights nor launches a server: `launch.py` does that, passing
`launch_options()` (theme, CSS, upload cap) to `launch()`.

Per-request state lives in `gr.State` values and handler return values only; nothing here keeps
results in module or closure globals.
"""

from __future__ import annotations

import gradio as gr

from studio import validation
from studio.context import StudioContext
from studio.examples import build_examples
from studio.tabs import edit, few_shot, model, routing, text_to_image, understand
from unix_core import UniXPipeline

DEFAULT_MAX_QUEUE = 16
CSS = """
#t2i-preview img, #edit-preview img, #t2i-gallery img, #edit-gallery img { image-rendering: pixelated; }
"""


def launch_options() -> dict:
    """Keyword arguments for `Blocks.launch()` that belong to the studio rather than to the deployment.

    `show_error` lets Gradio's own input errors (e.g. an upload that is not an image) reach the user; the
    studio's checks raise `gr.Error`, which is shown either way."""
    return {
        "css": CSS,
        "max_file_size": validation.MAX_UPLOAD_BYTES,
        "footer_links": ["api"],
        "show_error": True,
    }


def header(pipeline: UniXPipeline, max_queue: int | None, concurrency: int) -> str:
    info = pipeline.describe()
    running = "One generation runs" if concurrency == 1 else f"{concurrency} generations run"
    queue = (
        f"up to {max_queue} more wait in line; beyond that you are asked to try again"
        if max_queue
        else "others wait in line"
    )
    return (
        f"# Uni-X Studio\n"
        f"Model **{info['model']}** · split {info['split']} · {info['dtype']} on {info['device']}. "
        f"{running} at a time; {queue}."
    )


def build_app(pipeline: UniXPipeline, *, max_queue: int | None = DEFAULT_MAX_QUEUE, concurrency: int = 1) -> gr.Blocks:
    if max_queue is not None and max_queue < 1:
        raise ValueError(f"max_queue must be at least 1 (or None for unbounded), got {max_queue}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    ctx = StudioContext(pipeline, build_examples(), concurrency_limit=concurrency)
    with gr.Blocks(title="Uni-X Studio", analytics_enabled=False) as demo:
        gr.Markdown(header(pipeline, max_queue, concurrency))
        with gr.Tabs() as tabs:
            with gr.Tab("Text → Image", id="text_to_image"):
                t2i = text_to_image.build(ctx)
            with gr.Tab("Understand", id="understand"):
                und = understand.build(ctx)
            with gr.Tab("Edit", id="edit"):
                edt = edit.build(ctx)
            with gr.Tab("Few-shot", id="few_shot"):
                fsh = few_shot.build(ctx)
            with gr.Tab("Routing", id="routing"):
                rt = routing.build(ctx)
            with gr.Tab("Model", id="model"):
                model.build(ctx)
        for parts in (t2i, und, edt, fsh):
            parts.to_routing.click(
                rt.show_run, inputs=[parts.run_state], outputs=[tabs, *rt.outputs], **ctx.model_event()
            )
    demo.queue(max_size=max_queue, default_concurrency_limit=concurrency)
    return demo
