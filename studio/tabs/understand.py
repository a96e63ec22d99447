"""Understand tab: an image plus a caption request or a question; the answer streams in as text.

Named API endpoints: ``/caption`` (image) and ``/answer`` (image, question).
"""

from __future__ import annotations

import gradio as gr

from studio import text_tab, validation
from studio.context import StudioContext, TabParts


def build(ctx: StudioContext) -> TabParts:
    pipeline = ctx.pipeline
    with gr.Row():
        with gr.Column(scale=1):
            image = validation.image_input(
                label="Image", type="filepath", sources=["upload", "clipboard"], height=260, elem_id="und-image"
            )
            question = gr.Textbox(
                label="Question",
                lines=1,
                max_length=validation.MAX_PROMPT_CHARS,
                elem_id="und-question",
                placeholder="what color is the circle?",
            )
            with gr.Row():
                caption_btn = gr.Button("Caption", elem_id="und-caption")
                ask_btn = gr.Button("Ask", variant="primary", elem_id="und-ask")
                stop = gr.Button("Stop", variant="stop", elem_id="und-stop")
            controls = text_tab.build_controls(ctx, prefix="und")
            gr.Examples(
                examples=[list(pair) for pair in ctx.examples.understand],
                inputs=[image, question],
                label="Examples (shapes world)",
            )
        with gr.Column(scale=1):
            answer = gr.Textbox(label="Answer", lines=4, interactive=False, elem_id="und-answer")
            status = gr.Markdown("Ready.", elem_id="und-status")
            to_routing = gr.Button("Show routing of this run →", size="sm", elem_id="und-to-routing")
    run_state = gr.State(None)
    outputs = [answer, status, run_state]

    def caption(image_path, temperature, max_new_tokens, seed, request: gr.Request):
        """Caption an image; streams the caption."""
        picture = validation.image("Image", image_path)
        settings = text_tab.TextSettings.checked(temperature, max_new_tokens, seed)
        with ctx.stop_watch(request, "understand") as stopped:
            yield from text_tab.stream_answer(
                lambda: pipeline.caption_stream(picture, **settings.to_kwargs()),
                entry_point="caption",
                title="Caption",
                stopped=stopped,
            )

    def answer_question(image_path, question_text, temperature, max_new_tokens, seed, request: gr.Request):
        """Answer a question about an image; streams the answer."""
        picture = validation.image("Image", image_path)
        text = validation.text("Question", question_text)
        settings = text_tab.TextSettings.checked(temperature, max_new_tokens, seed)
        with ctx.stop_watch(request, "understand") as stopped:
            yield from text_tab.stream_answer(
                lambda: pipeline.answer_stream(picture, text, **settings.to_kwargs()),
                entry_point="answer",
                title=f"Question: “{text}”",
                stopped=stopped,
            )

    caption_btn.click(
        caption, inputs=[image, *controls.all()], outputs=outputs, show_progress="minimal", **ctx.model_event("caption")
    )
    gr.on(
        triggers=[ask_btn.click, question.submit],
        fn=answer_question,
        inputs=[image, question, *controls.all()],
        outputs=outputs,
        show_progress="minimal",
        **ctx.model_event("answer"),
    )
    stop.click(ctx.stop_handler("understand"), queue=False, api_visibility="private")
    return TabParts(run_state, to_routing)
