"""The official-kernel paths, driven on CPU through stand-in kernel packages.

``tests/kernel_standins.py`` writes ``mamba_ssm`` / ``causal_conv1d`` stand-ins that enforce the
real kernels' argument checks; the ``kernels`` fixture puts them on ``sys.path`` and makes
CPU tensors count as CUDA ones (``lit_seqrl.ops.backend.on_cuda``). Every registered backbone
and every backbone in configs/ then runs forward, backward and step through them and must
match the pure-PyTorch path, with no kernel error.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from lit_seqrl.ops import backend
from lit_seqrl.ops.backend import KernelUnavailableError
from lit_seqrl.ops.causal_conv import causal_conv1d, causal_conv1d_update
from lit_seqrl.ops.selective_scan import selective_scan, selective_state_update
from lit_seqrl.ops.ssd import ssd_state_update
from lit_seqrl.registry import build_backbone, list_backbones
from tests.kernel_standins import purge_standins, write_standins

REPO = Path(__file__).resolve().parents[1]
TOL = {"rtol": 1e-4, "atol": 1e-5}


class Kernels:
    """Switches between the stand-in kernel path and the PyTorch path inside one test."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        self._real_on_cuda = backend.on_cuda

    def install(self, **options: bool) -> None:
        purge_standins()
        shutil.rmtree(self.root, ignore_errors=True)  # no file of an earlier install may linger
        write_standins(self.root, **options)
        self.monkeypatch.syspath_prepend(str(self.root))  # also invalidates the import caches
        backend.clear_probes()
        self.force(True)

    def force(self, on: bool) -> None:
        """``on``: CPU tensors count as CUDA ones, so ``backend="auto"`` picks the kernels."""
        self.monkeypatch.setattr(backend, "on_cuda", (lambda *t: True) if on else self._real_on_cuda)

    @property
    def calls(self):
        import standin_calls

        return standin_calls.CALLS


@pytest.fixture
def kernels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kernels]:
    k = Kernels(tmp_path / "site", monkeypatch)
    k.install()
    yield k
    monkeypatch.undo()
    purge_standins()
    backend.clear_probes()


def run_backbone(bb: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Forward without and with a mask, gradients of both, and a few steps: everything a kernel touches."""
    xg = x.clone().requires_grad_(True)
    y, y_masked = bb(xg), bb(xg, mask)
    params = [p for p in bb.parameters() if p.requires_grad]
    loss = (y * torch.linspace(-1, 1, y.shape[-1], device=y.device)).sum() + y_masked[mask].pow(2).sum()
    grads = torch.autograd.grad(loss, [xg, *params], allow_unused=True)
    out = [y.detach(), y_masked[mask].detach(), *(g for g in grads if g is not None)]
    if getattr(bb, "supports_step", True):
        with torch.no_grad():
            state = bb.init_state(x.shape[0], device=x.device)
            for t in range(4):
                y_t, state = bb.step(x[:, t], state)
                out.append(y_t)
    return out


def backbone_inputs(d_model: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(2, 12, d_model, device=device)
    mask = torch.ones(2, 12, dtype=torch.bool, device=device)
    mask[0, :3] = False  # left padding on one row
    return x, mask


def compare_paths(kernels: Kernels, bb: torch.nn.Module, d_model: int) -> None:
    x, mask = backbone_inputs(d_model)
    bb = bb.eval()  # dropout off: both runs see the same function
    kernels.force(True)
    fast = run_backbone(bb, x, mask)
    kernels.force(False)
    slow = run_backbone(bb, x, mask)
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(list_backbones()))
def test_every_backbone_on_the_gpu_matches_pytorch(name, monkeypatch):
    # The real kernels (where installed) against the PyTorch path on the same device; without
    # the kernels both runs are PyTorch and agree trivially.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # F.conv1d of the torch path
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    bb = build_backbone(name, strict=False, d_model=16, n_layers=2).cuda().eval()
    x, mask = backbone_inputs(16, "cuda")
    fast = run_backbone(bb, x, mask)
    monkeypatch.setattr(backend, "on_cuda", lambda *t: False)  # every dispatcher takes PyTorch
    slow = run_backbone(bb, x, mask)
    for a, b in zip(fast, slow):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3 * scale)


#: Kernels each built-in backbone must reach on the kernel path (forward / backward / step).
EXPECTED_CALLS = {
    "mamba": {"causal_conv1d_fwd", "selective_scan_fwd", "causal_conv1d_update", "selective_state_update"},
    "mamba2": {
        "causal_conv1d_fwd",
        "mamba_chunk_scan_combined",
        "causal_conv1d_update",
        "selective_state_update",
    },
    "mamba2_hybrid": {
        "causal_conv1d_fwd",
        "mamba_chunk_scan_combined",
        "causal_conv1d_update",
        "selective_state_update",
    },
    "mambadm": {"causal_conv1d_fwd", "selective_scan_fwd", "causal_conv1d_update", "selective_state_update"},
}


@pytest.mark.parametrize("name", sorted(list_backbones()))
def test_every_backbone_runs_through_the_kernels_as_through_pytorch(kernels, name):
    torch.manual_seed(0)
    bb = build_backbone(name, strict=False, d_model=16, n_layers=2)
    compare_paths(kernels, bb, 16)
    assert EXPECTED_CALLS.get(name, set()) <= set(kernels.calls)


def _backbone_specs(node: object) -> Iterator[dict]:
    if isinstance(node, dict):
        spec = node.get("backbone")
        if isinstance(spec, dict) and "name" in spec:
            yield spec
        for value in node.values():
            yield from _backbone_specs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _backbone_specs(value)


CONFIG_SPECS = sorted(
    {
        (str(path.relative_to(REPO)), yaml.safe_dump(spec, sort_keys=True))
        for path in sorted((REPO / "configs").rglob("*.yaml"))
        for spec in _backbone_specs(yaml.safe_load(path.read_text()))
    }
)
#: Backbones that call a kernel dispatcher; the others only have to run (slow at full config size).
KERNEL_BACKBONES = {*EXPECTED_CALLS, "dc", "dc_hybrid"}


def test_configs_name_backbones():
    assert {yaml.safe_load(s)["name"] for _, s in CONFIG_SPECS} >= {"mamba", "mambadm", "dc", "transformer"}


@pytest.mark.parametrize(
    ("config", "spec"),
    [
        pytest.param(
            c,
            s,
            id=f"{c}:{yaml.safe_load(s)['name']}",
            marks=() if yaml.safe_load(s)["name"] in KERNEL_BACKBONES else pytest.mark.slow,
        )
        for c, s in CONFIG_SPECS
    ],
)
def test_config_backbones_run_through_the_kernels_as_through_pytorch(kernels, config, spec):
    spec = dict(yaml.safe_load(spec))
    torch.manual_seed(0)
    bb = build_backbone(spec.pop("name"), **spec)
    compare_paths(kernels, bb, spec["d_model"])


# --- the crashes named in the issue, one by one ---------------------------------------------------


def test_scan_module_without_compiled_extension_falls_back(kernels):
    # mamba-ssm built without MAMBA_KEEP_CUDA_BUILD=TRUE: the interface imports, the extension does not.
    kernels.install(scan_extension=False)
    torch.manual_seed(0)
    bb = build_backbone("mamba", d_model=16, n_layers=2)
    with pytest.warns(UserWarning, match="selective_scan_cuda.*MAMBA_KEEP_CUDA_BUILD=TRUE"):
        compare_paths(kernels, bb, 16)  # and the user is told why, once
    assert "selective_scan_fwd" not in kernels.calls
    assert kernels.calls["causal_conv1d_fwd"] > 0  # the other kernels still run
    kernels.force(True)
    u, delta, z = torch.randn(3, 2, 8, 10).unbind(0)
    A, B, C = -torch.rand(8, 4), torch.randn(2, 4, 10), torch.randn(2, 4, 10)
    with pytest.raises(KernelUnavailableError, match="MAMBA_KEEP_CUDA_BUILD=TRUE"):
        selective_scan(u, delta, A, B, C, z=z, backend="cuda")


def test_scan_kernel_returns_the_last_state_as_pytorch_does(kernels):
    torch.manual_seed(0)
    u, delta, z = torch.randn(3, 2, 8, 10).unbind(0)
    A, B, C, D = -torch.rand(8, 4), torch.randn(2, 4, 10), torch.randn(2, 4, 10), torch.randn(8)
    options = dict(D=D, z=z, delta_softplus=True, return_last_state=True)
    kernels.force(True)
    fast = selective_scan(u, delta, A, B, C, **options)
    assert kernels.calls["selective_scan_fwd"] == 1
    kernels.force(False)
    slow = selective_scan(u, delta, A, B, C, **options)
    assert isinstance(fast, tuple) and len(fast) == len(slow) == 2  # (out, last state)
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize(("name", "kwargs"), [("dc", {"window": 6}), ("mambadm", {"local_window": 6})])
def test_conv_wider_than_four_falls_back(kernels, name, kwargs):
    torch.manual_seed(0)
    bb = build_backbone(name, d_model=16, n_layers=2, **kwargs)
    compare_paths(kernels, bb, 16)


def test_conv_width_and_dtype_rules(kernels):
    x, w, b = torch.randn(2, 8, 10), torch.randn(8, 6), torch.randn(8)
    kernels.force(False)
    expected = causal_conv1d(x, w, b, "silu")
    kernels.force(True)
    with pytest.warns(UserWarning, match="width 6"):
        torch.testing.assert_close(causal_conv1d(x, w, b, "silu"), expected)
    assert "causal_conv1d_fwd" not in kernels.calls
    with pytest.raises(KernelUnavailableError, match="width 6"):
        causal_conv1d(x, w, b, "silu", backend="cuda")
    with pytest.raises(KernelUnavailableError, match="width 6"):
        causal_conv1d_update(x[..., 0], torch.zeros(2, 8, 6), w, b, "silu", backend="cuda")
    with pytest.raises(KernelUnavailableError, match="float64"):
        causal_conv1d(x.double(), w[:, :4].double(), b.double(), backend="cuda")
    with pytest.raises(KernelUnavailableError, match="conv_state"):
        causal_conv1d_update(
            x[..., 0], torch.zeros(2, 8, 4, dtype=torch.float64), w[:, :4], b, backend="cuda"
        )
    # and the same calls in "auto" give the PyTorch result instead of an error
    y64 = causal_conv1d(x.double(), w[:, :4].double(), b.double())
    assert y64.dtype == torch.float64


def test_mamba2_unmasked_forward_passes_a_layout_the_conv_kernel_takes(kernels):
    # d_model=16: in_proj is 193 wide, so xBC.transpose(1, 2) is channel-last with stride 193.
    torch.manual_seed(0)
    bb = build_backbone("mamba2", d_model=16, n_layers=1).eval()
    x = torch.randn(2, 12, 16)
    y = bb(x)
    assert kernels.calls["causal_conv1d_fwd"] == 1
    kernels.force(False)
    torch.testing.assert_close(y, bb(x), **TOL)


def test_kernel_layout():
    from lit_seqrl.ops.causal_conv import kernel_layout

    wide = torch.randn(2, 12, 193)
    strided = wide[..., :160].transpose(1, 2)  # (B D L), channel-last, stride(2) = 193
    fixed = kernel_layout(strided)
    assert fixed.stride(2) == 1 and torch.equal(fixed, strided)
    good = torch.randn(2, 12, 16).transpose(1, 2)  # channel-last, D = 16, strides multiples of 8
    assert kernel_layout(good) is good
    odd = torch.randn(2, 12, 12).transpose(1, 2)  # channel-last, D = 12 is not a multiple of 8
    assert kernel_layout(odd).stride(2) == 1
    first = torch.randn(2, 5, 12)
    assert kernel_layout(first) is first


def test_grouped_state_update_stays_on_pytorch(kernels):
    torch.manual_seed(0)
    b, d, n, g = 2, 8, 4, 2
    state, x, dt, z = torch.randn(b, d, n), torch.randn(b, d), torch.rand(b, d), torch.randn(b, d)
    A, B, C = -torch.rand(d, n), torch.randn(b, g, n), torch.randn(b, g, n)
    kernels.force(False)
    expected = selective_state_update(state, x, dt, A, B, C, z=z, dt_softplus=True)
    kernels.force(True)
    got = selective_state_update(state, x, dt, A, B, C, z=z, dt_softplus=True)
    assert "selective_state_update" not in kernels.calls
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, **TOL)
    with pytest.raises(KernelUnavailableError, match="G = 1"):
        selective_state_update(state, x, dt, A, B, C, backend="cuda")
    # G = 1 goes to the kernel and matches
    got = selective_state_update(state, x, dt, A, B[:, :1], C[:, :1], z=z, dt_softplus=True)
    kernels.force(False)
    expected = selective_state_update(state, x, dt, A, B[:, :1], C[:, :1], z=z, dt_softplus=True)
    assert kernels.calls["selective_state_update"] == 1
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, **TOL)


@pytest.mark.parametrize("d_per_channel", [False, True])
def test_ssd_state_update_kernel_matches_pytorch_and_keeps_the_state(kernels, d_per_channel):
    torch.manual_seed(0)
    b, h, p, n, g = 2, 4, 3, 5, 2
    state = torch.randn(b, h, p, n)
    x, z = torch.randn(b, h, p), torch.randn(b, h, p)
    dt, A, dt_bias = torch.randn(b, h), -torch.rand(h), torch.randn(h)
    B, C = torch.randn(b, g, n), torch.randn(b, g, n)
    D = torch.randn(h, p) if d_per_channel else torch.randn(h)
    before = state.clone()
    got = ssd_state_update(state, x, dt, A, B, C, D, z, dt_bias, True)
    assert kernels.calls["selective_state_update"] == 1
    assert torch.equal(state, before)  # the caller's state is not written in place
    kernels.force(False)
    expected = ssd_state_update(state, x, dt, A, B, C, D, z, dt_bias, True)
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, **TOL)


def test_mamba2_step_uses_the_state_update_kernel(kernels):
    torch.manual_seed(0)
    bb = build_backbone("mamba2", d_model=16, n_layers=2).eval()
    state = bb.init_state(2)
    with torch.no_grad():
        bb.step(torch.randn(2, 16), state)
    assert kernels.calls["selective_state_update"] == 2  # one per layer


def test_auto_falls_back_when_kernels_are_absent(monkeypatch):
    # No stand-ins at all: "auto" on (pretend) CUDA tensors uses PyTorch, "cuda" says what to install.
    purge_standins()
    backend.clear_probes()
    monkeypatch.setattr(backend, "on_cuda", lambda *t: True)
    x, w = torch.randn(2, 8, 10), torch.randn(8, 4)
    monkeypatch.setitem(__import__("sys").modules, "causal_conv1d", None)  # import fails
    try:
        torch.testing.assert_close(causal_conv1d(x, w), causal_conv1d(x, w, backend="torch"))
        with pytest.raises(KernelUnavailableError, match="lit-seqrl\\[cuda\\]"):
            causal_conv1d(x, w, backend="cuda")
    finally:
        backend.clear_probes()


@pytest.mark.parametrize("name", ["mamba", "mamba2", "mambadm"])
def test_mixed_precision_through_the_kernels(kernels, name):
    # bf16 autocast (bf16-mixed training): activations in bf16, A / D / states in fp32. Every call
    # either meets the kernels' dtype rules or falls back; the result matches the PyTorch path.
    torch.manual_seed(0)
    bb = build_backbone(name, d_model=16, n_layers=2).eval()
    x, mask = backbone_inputs(16)

    def run() -> list[torch.Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return [t.float() for t in run_backbone(bb, x, mask)]

    kernels.force(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # fallbacks for fp32 conv states are expected
        fast = run()
    scan = "mamba_chunk_scan_combined" if name == "mamba2" else "selective_scan_fwd"
    assert kernels.calls[scan] == kernels.calls["causal_conv1d_fwd"] == 4  # 2 layers x (unmasked, masked)
    kernels.force(False)
    slow = run()
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=3e-2, atol=5e-2 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("d_model", [12, 16])
def test_dc_with_a_short_window_uses_the_conv_kernel(kernels, d_model):
    # window 4 fits the kernel; d_model 12 makes the transposed (B, L, D) view an invalid
    # channel-last layout (D % 8 != 0), which must reach the kernel as a contiguous copy.
    torch.manual_seed(0)
    bb = build_backbone(
        "dc", d_model=d_model, n_layers=2, window=4, token_types=1
    )  # one filter bank: the kernel path
    compare_paths(kernels, bb, d_model)
    assert kernels.calls["causal_conv1d_fwd"] == 4  # 2 blocks x (unmasked, masked)
