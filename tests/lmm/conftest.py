"""Shared fixtures of the LMM tests; the tiny models themselves are built in `lmm_parts`."""

import pytest
import torch

from vision_long import load_encoder


@pytest.fixture(scope="session")
def default_encoder():
    """The embedded ShapeScenes Long-CLIP (64-pixel images), the real encoder text-conditioned zoom uses."""
    return load_encoder("default")


@pytest.fixture(autouse=True)
def _one_thread():
    """Run these tiny models on one thread: they are dominated by per-operation overhead, which more threads only
    add to (by a factor of 30 on a machine whose cores are busy). The previous setting is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
