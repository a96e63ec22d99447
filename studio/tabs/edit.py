"""Edit tab: image + instruction → edited image, with the same live preview, controls, Stop and run card.

Named API endpoint: ``/edit``.
"""

from __future__ import annotations

import gradio as gr

from studio import image_tab, validation
from studio.context import StudioContext, TabParts
from studio.image_settings import ImageSettings, build_controls


def build(ctx: StudioContext) -> TabParts:
    pipeline = ctx.pipeline
    defaults = pipeline.templates.defaults.get("edit", {})
    with gr.Row():
        with gr.Column(scale=1):
            source = validation.image_input(
                label="Image to edit",
                type="filepath",
                sources=["upload", "clipboard"],
                height=260,
                elem_id="edit-image",
            )
            instruction = gr.Textbox(
                label="Instruction",
                lines=1,
                max_length=validation.MAX_PROMPT_CHARS,
                elem_id="edit-instruction",
                placeholder="make the circle blue",
            )
            controls = build_controls(defaults, ctx.codebook_size, prefix="edit")
            with gr.Row():
                generate = gr.Button("Edit", variant="primary", elem_id="edit-generate")
                stop = gr.Button("Stop", variant="stop", elem_id="edit-stop")
            gr.Examples(
                examples=[list(pair) for pair in ctx.examples.edit],
                inputs=[source, instruction],
                label="Examples (shapes world)",
            )
        with gr.Column(scale=1):
            panel = image_tab.build_result_panel("edit")
    run_state = gr.State(None)

    def edit(
        image_path,
        instruction_text,
        cfg_scale,
        temperature,
        top_k,
        top_p,
        num_images,
        seed,
        randomize,
        request: gr.Request,
    ):
        """Edit an image as instructed; streams previews, ends with the edited images and their run card."""
        image = validation.image("Image to edit", image_path)
        text = validation.text("Instruction", instruction_text)
        settings = ImageSettings.checked(
            cfg_scale, temperature, top_k, top_p, num_images, codebook_size=ctx.codebook_size
        )
        with ctx.stop_watch(request, "edit") as stopped:
            yield from image_tab.stream_run(
                ctx,
                entry_point="edit",
                text=text,
                settings=settings,
                seed=validation.seed(seed, randomize),
                start=lambda **kw: pipeline.edit_stream(image, text, **kw),
                title=f"Edit: “{text}”",
                stopped=stopped,
                input_image=image,
            )

    gr.on(
        triggers=[generate.click, instruction.submit],
        fn=edit,
        inputs=[source, instruction, *controls.all()],
        outputs=panel.outputs(controls.seed, run_state),
        show_progress="minimal",
        **ctx.model_event("edit"),
    )
    image_tab.wire_common(ctx, panel, controls, instruction, stop, entry_point="edit")
    return TabParts(run_state, panel.to_routing)
