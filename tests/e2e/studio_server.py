"""Shared by the studio tests: a locally launched studio, and pacing.

The studio tests run on the embedded default model (`assets/unix-shapes`). It makes a 64-code image in well
under a second, so tests that must see several previews or stop a run mid-way slow each forward pass with
`paced` (a forward hook that sleeps); everything else runs at full speed.
"""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager


@contextmanager
def paced(pipe, seconds_per_forward: float = 0.02, calls: list | None = None):
    """Within the block every forward pass of `pipe`'s model takes at least `seconds_per_forward` longer
    (and is recorded in `calls` when given), so that a run lasts long enough to be watched or stopped.
    With 0 seconds it only counts forward passes."""

    def hook(*_):
        if calls is not None:
            calls.append(1)
        if seconds_per_forward:
            time.sleep(seconds_per_forward)

    handle = pipe.model.model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def launched(demo):
    """Serve `demo` on 127.0.0.1 on a free port for the duration of the block; yields its URL."""
    from studio.app import launch_options

    _, url, _ = demo.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, **launch_options()
    )
    try:
        yield url
    finally:
        demo.close()
