"""Text → Image tab: prompt and sampling controls, live token-by-token preview, Stop, gallery, run card.

Named API endpoint: ``/text_to_image``.
"""

from __future__ import annotations

import gradio as gr

from studio import image_tab, validation
from studio.context import StudioContext, TabParts
from studio.image_settings import ImageSettings, build_controls


def build(ctx: StudioContext) -> TabParts:
    pipeline = ctx.pipeline
    defaults = pipeline.templates.defaults.get("text_to_image", {})
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(
                label="Prompt",
                lines=2,
                max_length=validation.MAX_PROMPT_CHARS,
                elem_id="t2i-prompt",
                placeholder="a large red circle at the center on a white background",
            )
            controls = build_controls(defaults, ctx.codebook_size, prefix="t2i", self_check=True)
            with gr.Row():
                generate = gr.Button("Generate", variant="primary", elem_id="t2i-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="t2i-stop")
            gr.Examples(examples=[[p] for p in ctx.examples.prompts], inputs=[prompt], label="Examples (shapes world)")
        with gr.Column(scale=1):
            panel = image_tab.build_result_panel("t2i")
    run_state = gr.State(None)

    def text_to_image(
        prompt_text, cfg_scale, temperature, top_k, top_p, num_images, candidates, seed, randomize, request: gr.Request
    ):
        """Generate images for a prompt; streams previews, ends with the images and their run card."""
        text = validation.text("Prompt", prompt_text)
        settings = ImageSettings.checked(
            cfg_scale, temperature, top_k, top_p, num_images, candidates, codebook_size=ctx.codebook_size
        )
        with ctx.stop_watch(request, "text_to_image") as stopped:
            yield from image_tab.stream_run(
                ctx,
                entry_point="text_to_image",
                text=text,
                settings=settings,
                seed=validation.seed(seed, randomize),
                start=lambda **kw: pipeline.text_to_image_stream(text, **kw),
                title=f"Text → Image: “{text}”",
                stopped=stopped,
            )

    gr.on(
        triggers=[generate.click, prompt.submit],
        fn=text_to_image,
        inputs=[prompt, *controls.all()],
        outputs=panel.outputs(controls.seed, run_state),
        show_progress="minimal",
        **ctx.model_event("text_to_image"),
    )
    image_tab.wire_common(ctx, panel, controls, prompt, stop, entry_point="text_to_image")
    return TabParts(run_state, panel.to_routing)
