"""Which backend varlen_attention picks, with device, dtype and installed packages mocked."""

import pytest
import torch

from vision_long.kernels import attention, available_backends, choose_backend, varlen_attention


@pytest.fixture
def installed(monkeypatch):
    """Pretend exactly the given optional packages are importable; the interpreter is on."""

    def pretend(*names):
        monkeypatch.setattr(attention, "_module_available",
                            lambda name: name in names or name.startswith("torch."))
        monkeypatch.setenv("TRITON_INTERPRET", "1")

    return pretend


@pytest.mark.parametrize(
    "device, dtype, packages, needs_grad, expected",
    [
        ("cpu", torch.float32, ("triton", "xformers"), False, "sdpa"),
        ("cpu", torch.float16, ("triton", "xformers"), True, "sdpa"),
        ("cuda", torch.float16, ("triton", "xformers"), False, "xformers"),
        ("cuda", torch.bfloat16, ("triton", "xformers"), True, "xformers"),
        ("cuda", torch.float32, ("triton", "xformers"), False, "triton"),
        ("cuda", torch.float16, ("triton",), False, "triton"),
        ("cuda", torch.float16, ("triton",), True, "sdpa"),
        ("cuda", torch.float32, ("triton", "xformers"), True, "sdpa"),
        ("cuda", torch.bfloat16, (), False, "sdpa"),
    ],
)
def test_auto_choice(installed, device, dtype, packages, needs_grad, expected):
    installed(*packages)
    assert choose_backend("auto", device, dtype, needs_grad) == expected


def test_available_backends(installed, monkeypatch):
    installed("triton", "xformers")
    assert available_backends("cuda", torch.bfloat16) == ["triton", "xformers", "sdpa", "flex", "math"]
    assert available_backends("cpu", torch.float32) == ["triton", "sdpa", "flex", "math"]
    assert available_backends("cpu", torch.bfloat16) == ["sdpa", "flex", "math"]  # interpreter gets bf16 wrong
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert available_backends(torch.device("cpu"), torch.float32) == ["sdpa", "flex", "math"]
    installed()
    assert available_backends("cuda", torch.float16) == ["sdpa", "flex", "math"]


def test_explicit_choices(installed):
    installed("triton")
    assert choose_backend("math", "cpu", torch.float32, needs_grad=True) == "math"
    assert choose_backend("flex", "cuda", torch.float16, needs_grad=True) == "flex"
    assert choose_backend("triton", "cuda", torch.float16, needs_grad=False) == "triton"
    with pytest.warns(UserWarning, match="no backward"):
        assert choose_backend("triton", "cuda", torch.float16, needs_grad=True) == "sdpa"
    with pytest.raises(ValueError, match="'flex' has no backward on cpu"):
        choose_backend("flex", "cpu", torch.float32, needs_grad=True)
    with pytest.raises(ValueError, match=r"'xformers' cannot run on device=cpu.*available here: triton, sdpa"):
        choose_backend("xformers", "cpu", torch.float16, needs_grad=False)
    with pytest.raises(ValueError, match="valid backends: auto, triton, xformers, sdpa, flex, math"):
        choose_backend("flash_attn", "cpu", torch.float32, needs_grad=False)


def test_needs_grad_follows_grad_mode(monkeypatch, packed_qkv):
    """The dispatcher is asked for a differentiable backend only when autograd will record."""
    seen = []
    real_choose = attention.choose_backend

    def spy(backend, device, dtype, needs_grad):
        seen.append(needs_grad)
        return real_choose(backend, device, dtype, needs_grad)

    monkeypatch.setattr(attention, "choose_backend", spy)
    q, k, v, cu = packed_qkv([3, 5], requires_grad=True)
    out = varlen_attention(q, k, v, cu, 5)
    assert out.requires_grad
    with torch.no_grad():
        varlen_attention(q, k, v, cu, 5)
    varlen_attention(q.detach(), k.detach(), v.detach(), cu, 5)
    assert seen == [True, False, False]
