"""What every tab builder gets: the pipeline, the example inputs and the serving rules for model calls."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from studio.examples import StudioExamples
from unix_core import UniXPipeline


@dataclass
class RunRecord:
    """The last run of a tab, kept per browser session in a `gr.State` (never in a module global)."""

    entry_point: str
    title: str
    sequence_ids: list[int]


class StopSignals:
    """Stop requests per (browser session, tab), so that a running handler ends at its next model step.

    The Stop button records a request here (an unqueued event, so it is not stuck behind the run); the run
    checks it at every generated token, closes the model stream and reports where it stopped. Gradio's
    own `cancels=` is not used for the button: it closes a generator only at its next yield (handlers
    yield every ~80 ms) and, in Gradio 6.31, leaves the outputs flagged as errors and drops the final
    status. API clients' `job.cancel()` still closes the generator through Gradio's /cancel route.
    Holds one timestamp per session and tab that pressed Stop, nothing else.
    """

    MAX_ENTRIES = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped_at: dict[tuple[str, str], float] = {}

    def request(self, session: str, tab: str) -> None:
        with self._lock:
            if len(self._stopped_at) >= self.MAX_ENTRIES:
                self._stopped_at.clear()
            self._stopped_at[(session, tab)] = time.monotonic()

    def watch(self, session: str, tab: str) -> Callable[[], bool]:
        """A check that turns true once Stop is pressed after this call (earlier presses do not count)."""
        started = time.monotonic()
        key = (session, tab)
        return lambda: self._stopped_at.get(key, float("-inf")) > started

    def done(self, session: str, tab: str) -> None:
        with self._lock:
            self._stopped_at.pop((session, tab), None)


@dataclass
class TabParts:
    """What a generation tab hands back to the app: its last run, and the button linking it to Routing."""

    run_state: Any  # gr.State holding a RunRecord or None
    to_routing: Any  # gr.Button


@dataclass
class StudioContext:
    pipeline: UniXPipeline
    examples: StudioExamples
    concurrency_limit: int = 1
    concurrency_id: str = field(init=False)
    stops: StopSignals = field(default_factory=StopSignals)

    def __post_init__(self) -> None:
        # One queue slot group per device: every event that runs the model shares it.
        self.concurrency_id = f"model@{self.pipeline.device}"

    def model_event(self, api_name: str | None = None) -> dict[str, Any]:
        """Event-listener keyword arguments for a handler that runs the model."""
        kwargs: dict[str, Any] = {"concurrency_id": self.concurrency_id, "concurrency_limit": self.concurrency_limit}
        if api_name is None:
            kwargs["api_visibility"] = "private"
        else:
            kwargs["api_name"] = api_name
        return kwargs

    def stop_handler(self, tab: str) -> Callable:
        """The Stop button's function for `tab`."""

        def stop(request: gr.Request) -> None:
            self.stops.request(request.session_hash or "", tab)

        return stop

    @contextlib.contextmanager
    def stop_watch(self, request: gr.Request | None, tab: str) -> Iterator[Callable[[], bool]]:
        """For the duration of a run: a check that is true once the tab's Stop button was pressed."""
        session = getattr(request, "session_hash", None) or ""
        try:
            yield self.stops.watch(session, tab)
        finally:
            self.stops.done(session, tab)

    @property
    def codebook_size(self) -> int:
        return self.pipeline.image_tokenizer.codebook_size
