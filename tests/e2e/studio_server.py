"""Shared by the studio tests: which checkpoint they run on, and a locally launched studio.

Switching the studio tests to the embedded default model is one line in `studio_checkpoint`.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager
from pathlib import Path

from tests.pipeline_fixture import build_checkpoint


def studio_checkpoint(tmp_root: Path, fixtures_dir: Path) -> str | None:
    """The model the studio tests run on (None = the embedded default in assets/unix-shapes)."""
    return str(build_checkpoint(tmp_root / "studio-tiny", fixtures_dir))


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
