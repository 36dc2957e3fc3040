"""Mamba, Mamba-2 and the Mamba-2/attention hybrid backbones."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from lit_seqrl.backbones.mamba import MambaBackbone, MambaConfig
from lit_seqrl.backbones.mamba2 import Mamba2Backbone, Mamba2Block, Mamba2Config
from lit_seqrl.backbones.mambadm import MambaDMConfig
from lit_seqrl.backbones.transformer import Block as AttentionBlock
from lit_seqrl.ops.backend import KernelUnavailableError, probe
from lit_seqrl.registry import build_backbone, get_backbone_class
from lit_seqrl.testing import check_backbone

# Official names and shapes, written out by hand from mamba_ssm's module definitions.
# mamba_simple.Mamba(d_model=16): d_inner = 32, dt_rank = ceil(16 / 16) = 1, d_state = 16, d_conv = 4
OFFICIAL_MAMBA_16 = {
    "in_proj.weight": (64, 16),
    "conv1d.weight": (32, 1, 4),
    "conv1d.bias": (32,),
    "x_proj.weight": (1 + 2 * 16, 32),
    "dt_proj.weight": (32, 1),
    "dt_proj.bias": (32,),
    "A_log": (32, 16),
    "D": (32,),
    "out_proj.weight": (16, 32),
}
# mamba2.Mamba2(d_model=32, d_state=16, headdim=16, ngroups=1): d_inner = 64, nheads = 4,
# conv_dim = 64 + 2 * 16 = 96, in_proj out = 2 * 64 + 2 * 16 + 4 = 164 ([z, x, B, C, dt])
OFFICIAL_MAMBA2_32 = {
    "in_proj.weight": (164, 32),
    "conv1d.weight": (96, 1, 4),
    "conv1d.bias": (96,),
    "dt_bias": (4,),
    "A_log": (4,),
    "D": (4,),
    "norm.weight": (64,),
    "out_proj.weight": (32, 64),
}


def random_state_dict(spec: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=g) for name, shape in spec.items()}


VARIANTS = [
    ("mamba", {}),
    ("mamba", {"norm": "layernorm", "d_state": 4}),
    ("mamba2", {}),
    ("mamba2", {"ngroups": 2, "headdim": 8, "chunk_size": 4}),
    ("mamba2_hybrid", {}),
    ("mamba2_hybrid", {"attn_layers": [0, 1], "n_heads": 2}),
]


@pytest.mark.parametrize(("name", "kwargs"), VARIANTS)
def test_conformance(name, kwargs):
    torch.manual_seed(0)
    check_backbone(build_backbone(name, d_model=16, n_layers=2, **kwargs))


def test_official_mamba_state_dict_loads_strictly():
    mixer = MambaBackbone(d_model=16, n_layers=1).layers[0].mixer
    assert {k: tuple(v.shape) for k, v in mixer.state_dict().items()} == OFFICIAL_MAMBA_16
    sd = random_state_dict(OFFICIAL_MAMBA_16)
    mixer.load_state_dict(sd, strict=True)
    torch.testing.assert_close(mixer.A_log, sd["A_log"])


def test_official_mamba2_state_dict_loads_strictly():
    mixer = Mamba2Backbone(d_model=32, n_layers=1, d_state=16, headdim=16).layers[0].mixer
    assert {k: tuple(v.shape) for k, v in mixer.state_dict().items()} == OFFICIAL_MAMBA2_32
    mixer.load_state_dict(random_state_dict(OFFICIAL_MAMBA2_32), strict=True)


def test_stack_uses_mixer_model_names():
    """``layers.i.mixer.*``, ``layers.i.norm.weight``, ``norm_f.weight`` as mamba_ssm's MixerModel (RMSNorm)."""
    backbone = MambaBackbone(d_model=16, n_layers=2)
    expected = {f"layers.{i}.mixer.{k}": s for i in range(2) for k, s in OFFICIAL_MAMBA_16.items()}
    expected |= {"layers.0.norm.weight": (16,), "layers.1.norm.weight": (16,), "norm_f.weight": (16,)}
    backbone.load_state_dict(random_state_dict(expected), strict=True)
    assert set(backbone.state_dict()) == set(expected)


def test_mamba_initialisation_matches_official():
    torch.manual_seed(0)
    mixer = MambaBackbone(d_model=64, n_layers=1).layers[0].mixer
    assert mixer.dt_rank == math.ceil(64 / 16) and mixer.d_inner == 128
    torch.testing.assert_close(torch.exp(mixer.A_log), torch.arange(1.0, 17.0).repeat(128, 1))  # S4D-real
    assert torch.equal(mixer.D.data, torch.ones(128))
    dt = F.softplus(mixer.dt_proj.bias)  # log-uniform in [dt_min, dt_max]
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    assert mixer.dt_proj.weight.abs().max() <= mixer.dt_rank**-0.5
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None and mixer.conv1d.bias is not None
    for p in (mixer.A_log, mixer.D, mixer.dt_proj.bias):
        assert p._optim["weight_decay"] == 0.0


def test_mamba2_initialisation_matches_official():
    torch.manual_seed(0)
    mixer = Mamba2Backbone(d_model=64, n_layers=1).layers[0].mixer
    assert mixer.headdim == 64 and mixer.nheads == 2  # default headdim: gcd(d_inner, 64)
    A = torch.exp(mixer.A_log)
    assert A.min() >= 1.0 and A.max() <= 16.0
    dt = F.softplus(mixer.dt_bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001
    assert torch.equal(mixer.norm.weight.data, torch.ones(128))
    for p in (mixer.A_log, mixer.D, mixer.dt_bias):
        assert p._optim["weight_decay"] == 0.0
    with pytest.raises(ValueError, match="headdim"):
        Mamba2Backbone(d_model=16, headdim=12)


@pytest.mark.parametrize("name", ["mamba", "mamba2", "mamba2_hybrid"])
def test_builds_and_runs_without_kernels(name):
    backbone = build_backbone(name, d_model=16, n_layers=2)  # backend="auto"
    y = backbone(torch.randn(2, 7, 16))
    assert y.shape == (2, 7, 16) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_backend_cuda_without_kernels_is_a_clear_error(name):
    backbone = build_backbone(name, d_model=16, n_layers=1, backend="cuda")
    # Here the kernels are missing, or the tensors are on the CPU: either way, no silent fallback.
    with pytest.raises(KernelUnavailableError, match='backend="cuda"'):
        backbone(torch.randn(1, 5, 16))


def test_step_state_is_constant_size():
    mamba = MambaBackbone(d_model=16, n_layers=2, d_state=8).eval()
    mamba2 = Mamba2Backbone(d_model=16, n_layers=2, d_state=8, headdim=8).eval()
    for backbone, shapes in (
        (mamba, {"conv": (3, 32, 4), "ssm": (3, 32, 8)}),
        (mamba2, {"conv": (3, 32 + 2 * 8, 4), "ssm": (3, 4, 8, 8)}),
    ):
        state = backbone.init_state(3)
        with torch.no_grad():
            for _ in range(5):
                _, state = backbone.step(torch.randn(3, 16), state)
        assert len(state) == 2
        assert all({k: tuple(v.shape) for k, v in s.items()} == shapes for s in state)


def test_hybrid_layout_and_cache():
    hybrid = build_backbone("mamba2_hybrid", d_model=16, n_layers=3, max_seq_len=3).eval()
    assert type(hybrid) is Mamba2Backbone and hybrid.attn_layers == [1]
    assert [type(b) for b in hybrid.layers] == [Mamba2Block, AttentionBlock, Mamba2Block]
    state = hybrid.init_state(2)  # one state per layer: the attention layer's is its KV cache
    assert set(state[0]) == {"conv", "ssm"} and state[1]["k"].shape == (2, 1, 3, 16)
    with torch.no_grad():
        for _ in range(3):
            _, state = hybrid.step(torch.randn(2, 16), state)
        with pytest.raises(ValueError, match="KV cache is full"):
            hybrid.step(torch.randn(2, 16), state)
    with pytest.raises(ValueError, match="attn_layers"):
        Mamba2Backbone(d_model=16, n_layers=2, attn_layers=[2])
    pure = build_backbone("mamba2_hybrid", d_model=16, n_layers=2, attn_layers=[])
    assert all(isinstance(b, Mamba2Block) for b in pure.layers)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_official_kernels_match_torch_path_in_backbone(name):
    module = (
        "mamba_ssm.ops.selective_scan_interface" if name == "mamba" else "mamba_ssm.ops.triton.ssd_combined"
    )
    if probe(module) is None or probe("causal_conv1d") is None:
        pytest.skip("mamba_ssm / causal_conv1d kernels are not importable")
    torch.manual_seed(0)
    fast = build_backbone(name, d_model=64, n_layers=2, backend="cuda").cuda().eval()
    slow = build_backbone(name, d_model=64, n_layers=2, backend="torch").cuda().eval()
    slow.load_state_dict(fast.state_dict())
    x = torch.randn(2, 200, 64, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(fast(x), slow(x), rtol=6e-4, atol=2e-3)


@pytest.mark.parametrize(
    ("name", "config"), [("mamba", MambaConfig), ("mamba2", Mamba2Config), ("mambadm", MambaDMConfig)]
)
def test_options_are_the_config_dataclass_fields(name, config):
    # One list of options: the dataclass. The constructor's signature shows exactly its fields.
    cls = get_backbone_class(name)
    params = inspect.signature(cls).parameters
    assert list(params) == [f.name for f in dataclasses.fields(config)]
    assert all(params[f.name].default == f.default for f in dataclasses.fields(config) if f.name != "d_model")
    backbone = build_backbone(name, d_model=16, n_layers=1, d_state=8, dropout=0.25)
    assert (backbone.config.n_layers, backbone.config.d_state, backbone.config.dropout) == (1, 8, 0.25)
    with pytest.raises(TypeError, match="n_head"):
        build_backbone(name, d_model=16, n_head=2)
    with pytest.warns(UserWarning, match="activation"):  # what an agent's strict=False drops
        build_backbone(name, d_model=16, n_layers=1, strict=False, activation="relu")
