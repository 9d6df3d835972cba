"""A demo backend over tiny models: the embedded default encoder, a tiny SD-1.5 pipeline and a tiny random LMM
saved to disk, and an 8-scene gallery index in a temporary cache."""

import pytest
from diffusion.conftest import tiny_sd15
from lmm.lmm_parts import tiny_lmm

from vision_long.demo import DemoBackend, DemoConfig
from vision_long.lmm import save_lmm

GALLERY = 8


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every demo test on one thread (tests/conftest.py: one_thread)."""


@pytest.fixture(scope="session")
def demo_config(tmp_path_factory) -> DemoConfig:
    root = tmp_path_factory.mktemp("demo")
    pipeline = root / "pipeline"
    tiny_sd15(root).save_pretrained(str(pipeline))
    lmm = save_lmm(tiny_lmm(), root / "lmm")
    return DemoConfig(pipeline=str(pipeline), lmm=str(lmm), gallery_size=GALLERY, cache_dir=root / "cache", steps=2)


@pytest.fixture(scope="session")
def backend(demo_config) -> DemoBackend:
    return DemoBackend(demo_config, progress=False)
