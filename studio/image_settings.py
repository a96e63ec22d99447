"""Sampling settings of the image tabs (Text → Image, Edit): ranges, controls and validation in one place.

The same ranges drive the sliders, the server-side checks of every request (API clients bypass the
sliders) and the validation of loaded run cards, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import gradio as gr

from studio import validation

CFG_RANGE = (0.0, 20.0)
TEMPERATURE_RANGE = (0.0, 3.0)
TOP_P_RANGE = (0.01, 1.0)
NUM_IMAGES_RANGE = (1, 4)
CANDIDATES_RANGE = (1, 16)  # unix_core.sampling.MAX_CANDIDATES


@dataclass(frozen=True)
class ImageSettings:
    cfg_scale: float
    temperature: float
    top_k: int
    top_p: float
    num_images: int
    candidates: int | None = None  # text to image's self-check; None where it does not apply (edit)

    @classmethod
    def checked(
        cls, cfg_scale, temperature, top_k, top_p, num_images, candidates=None, *, codebook_size: int
    ) -> "ImageSettings":
        """Validated settings (gr.Error naming the setting and its range otherwise)."""
        return cls(
            cfg_scale=validation.number("CFG scale", cfg_scale, *CFG_RANGE),
            temperature=validation.number("Temperature", temperature, *TEMPERATURE_RANGE),
            top_k=validation.integer("Top-k", top_k, 0, codebook_size),
            top_p=validation.number("Top-p", top_p, *TOP_P_RANGE),
            num_images=validation.integer("Number of images", num_images, *NUM_IMAGES_RANGE),
            candidates=None
            if candidates is None
            else validation.integer("Self-check candidates", candidates, *CANDIDATES_RANGE),
        )

    def to_dict(self) -> dict:
        """The pipeline's keyword arguments (and the run card's settings)."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    def values(self) -> list:
        """The controls' values, in :meth:`ImageControls.settings` order."""
        return list(self.to_dict().values())


@dataclass
class ImageControls:
    """The Gradio components holding the settings, in the order handlers receive them."""

    cfg_scale: gr.Slider
    temperature: gr.Slider
    top_k: gr.Slider
    top_p: gr.Slider
    num_images: gr.Slider
    seed: gr.Number
    randomize: gr.Checkbox
    candidates: gr.Slider | None = None

    def settings(self) -> list:
        out = [self.cfg_scale, self.temperature, self.top_k, self.top_p, self.num_images]
        return out + ([self.candidates] if self.candidates is not None else [])

    def all(self) -> list:
        return [*self.settings(), self.seed, self.randomize]


def build_controls(defaults: dict, codebook_size: int, *, prefix: str, self_check: bool = False) -> ImageControls:
    """Seed and image count in view, the sampling knobs in an accordion (with ``self_check``, text to image,
    also the number of self-check candidates)."""
    with gr.Row():
        num_images = gr.Slider(
            *NUM_IMAGES_RANGE, value=1, step=1, label="Number of images", elem_id=f"{prefix}-num-images"
        )
        seed = gr.Number(
            value=0, precision=0, minimum=0, maximum=validation.MAX_SEED, label="Seed", elem_id=f"{prefix}-seed"
        )
        randomize = gr.Checkbox(value=True, label="Randomize seed", elem_id=f"{prefix}-randomize")
    with gr.Accordion("Sampling", open=False, elem_id=f"{prefix}-sampling"):
        cfg_scale = gr.Slider(
            *CFG_RANGE,
            value=float(defaults.get("cfg_scale", 1.0)),
            step=0.5,
            label="CFG scale",
            info="Classifier-free guidance; 1 = off",
            elem_id=f"{prefix}-cfg",
        )
        temperature = gr.Slider(
            *TEMPERATURE_RANGE,
            value=float(defaults.get("temperature", 1.0)),
            step=0.05,
            label="Temperature",
            info="0 = greedy",
            elem_id=f"{prefix}-temperature",
        )
        top_k = gr.Slider(
            0,
            codebook_size,
            value=int(defaults.get("top_k", 0)),
            step=1,
            label="Top-k",
            info="0 = off",
            elem_id=f"{prefix}-top-k",
        )
        top_p = gr.Slider(
            *TOP_P_RANGE,
            value=float(defaults.get("top_p", 1.0)),
            step=0.01,
            label="Top-p",
            info="1 = off",
            elem_id=f"{prefix}-top-p",
        )
        candidates = None
        if self_check:
            candidates = gr.Slider(
                *CANDIDATES_RANGE,
                value=int(defaults.get("candidates", 1)),
                step=1,
                label="Self-check candidates",
                info="Draw this many images per result and keep the one the model's own captioner finds the "
                "prompt most likely for; 1 = off",
                elem_id=f"{prefix}-candidates",
            )
    return ImageControls(cfg_scale, temperature, top_k, top_p, num_images, seed, randomize, candidates)
