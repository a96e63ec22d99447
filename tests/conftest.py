"""Shared pytest configuration: markers for slow and GPU-only tests."""

import os
import pathlib
import tempfile

import pytest
import torch

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def pytest_configure(config):
    # Tests use tiny models: one thread avoids oversubscription stalls on shared 2-core machines.
    torch.set_num_threads(1)
    # Preview palettes built by tests go to a throw-away cache, not the user's home.
    os.environ.setdefault("UNIX_STUDIO_CACHE", tempfile.mkdtemp(prefix="unix-studio-test-cache-"))
    config.addinivalue_line("markers", "slow: takes more than a few seconds on 2 CPU cores")
    config.addinivalue_line("markers", "gpu: needs a CUDA device")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def fixtures_dir() -> pathlib.Path:
    return FIXTURES


@pytest.fixture(scope="module")
def vq_tiny():
    """The golden tiny taming VQGAN (64 codes, 16x16 grid at 64 px)."""
    from unix_core.vq import VQImageTokenizer

    return VQImageTokenizer.from_pretrained(FIXTURES / "vqgan_tiny")
