"""What the text-answer tabs (Understand, Few-shot) share: sampling controls and the streaming handler.

The handler sends an update every `streaming.UPDATE_INTERVAL_S` (and the final one) and checks the
tab's Stop signal at every token, so Stop ends the run within one step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import gradio as gr

from studio import streaming, validation
from studio.context import RunRecord, StudioContext

MAX_NEW_TOKENS_RANGE = (1, 256)
TEMPERATURE_RANGE = (0.0, 3.0)


@dataclass
class TextControls:
    temperature: gr.Slider
    max_new_tokens: gr.Slider
    seed: gr.Number

    def all(self) -> list:
        return [self.temperature, self.max_new_tokens, self.seed]


@dataclass
class TextSettings:
    temperature: float
    max_new_tokens: int
    seed: int | None

    @classmethod
    def checked(cls, temperature, max_new_tokens, seed) -> "TextSettings":
        return cls(
            temperature=validation.number("Temperature", temperature, *TEMPERATURE_RANGE),
            max_new_tokens=validation.integer("Max new tokens", max_new_tokens, *MAX_NEW_TOKENS_RANGE),
            seed=validation.seed(seed, randomize=False),
        )

    def to_kwargs(self) -> dict:
        return {"temperature": self.temperature, "max_new_tokens": self.max_new_tokens, "seed": self.seed}


def build_controls(ctx: StudioContext, *, prefix: str) -> TextControls:
    defaults = ctx.pipeline.templates.defaults.get("text", {})
    default_tokens = int(min(max(defaults.get("max_new_tokens", 48), 1), MAX_NEW_TOKENS_RANGE[1]))
    with gr.Accordion("Sampling", open=False, elem_id=f"{prefix}-sampling"):
        temperature = gr.Slider(
            *TEMPERATURE_RANGE,
            value=float(defaults.get("temperature", 0.0)),
            step=0.05,
            label="Temperature",
            info="0 = greedy (deterministic)",
            elem_id=f"{prefix}-temperature",
        )
        max_new_tokens = gr.Slider(
            *MAX_NEW_TOKENS_RANGE, value=default_tokens, step=1, label="Max new tokens", elem_id=f"{prefix}-max-tokens"
        )
        seed = gr.Number(
            value=None,
            precision=0,
            minimum=0,
            maximum=validation.MAX_SEED,
            label="Seed (empty = random)",
            elem_id=f"{prefix}-seed",
        )
    return TextControls(temperature, max_new_tokens, seed)


def stream_answer(
    start: Callable[[], Iterator], *, entry_point: str, title: str, stopped: Callable[[], bool]
) -> Iterator[tuple]:
    """Drive one text stream until done or `stopped()`; yields (answer, status, run state)."""
    with validation.user_errors():
        stream = start()
    throttle = streaming.Throttle()
    with contextlib.closing(stream), validation.user_errors():
        for event in stream:
            if event.done:
                record = RunRecord(entry_point, f"{title} (seed {event.seed})", list(event.sequence_ids))
                yield event.text, streaming.text_status(event.step, event.elapsed, True, event.seed), record
            elif stopped():
                yield event.text, f"Stopped after {event.step} tokens · seed {event.seed}", gr.skip()
                return
            elif throttle.ready():
                yield event.text, streaming.text_status(event.step, event.elapsed, False, event.seed), gr.skip()
