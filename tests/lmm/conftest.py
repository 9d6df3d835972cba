"""Shared fixtures of the LMM tests; the tiny models themselves are built in `lmm_parts`."""

import pytest

from vision_long import load_encoder


@pytest.fixture(scope="session")
def default_encoder():
    """The embedded ShapeScenes Long-CLIP (64-pixel images), the real encoder text-conditioned zoom uses."""
    return load_encoder("default")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """These tiny models are dominated by per-operation overhead, which more threads only add to (a factor of 30
    on a machine whose cores are busy); tests/conftest.py: one_thread."""
