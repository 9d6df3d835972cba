"""Test-wide settings: fully offline, Triton kernels in interpreter mode, caches in a temporary folder."""

import os
import tempfile

# Set before anything imports triton: the interpreter is chosen when a kernel is decorated.
os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("VISION_LONG_CACHE", tempfile.mkdtemp(prefix="vision_long_cache_"))

import pytest  # noqa: E402
import torch  # noqa: E402
from proclip_fixtures import tiny_llm_dir  # noqa: E402, F401  (shared by encoder and service tests)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """Run a test on one intra-op thread: tiny models gain nothing from more, and idle threads spin on a busy
    machine. Folders make it autouse with a fixture of their own that requests it."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
