"""Mamba and Mamba-2 blocks against from-the-equations references (float64 loops, no shared code).

The references below are written from the papers (Gu & Dao 2023, Algorithm 2 and Section 3;
Dao & Gu 2024, Section 7 and the Mamba-2 block of Figure 6) and the documented parameter layout
of ``mamba_ssm`` (Mamba: in_proj -> [x, z]; Mamba-2: in_proj -> [z, x, B, C, Δ], heads grouped
contiguously onto the B/C groups). They read the module's weights by their official names and
import nothing from ``lit_seqrl``: a bug shared by our fast path and our ops reference (the gate,
the sign of A, the Δ bias, the head-to-group map) shows up here.
"""

from __future__ import annotations

import pytest
import torch

from lit_seqrl.backbones.mamba import MambaBackbone
from lit_seqrl.backbones.mamba2 import Mamba2Backbone


def silu(x: torch.Tensor) -> torch.Tensor:
    return x / (1 + torch.exp(-x))


def softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(x))


def linear(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    y = x @ sd[f"{name}.weight"].T
    return y + sd[f"{name}.bias"] if f"{name}.bias" in sd else y


def causal_depthwise_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x (L, C)``, ``weight (C, 1, W)``: y_t = Σ_j w[:, j] x_{t-W+1+j}, zeros before t = 0."""
    L, C = x.shape
    W = weight.shape[-1]
    y = torch.zeros(L, C, dtype=x.dtype)
    for t in range(L):
        for j in range(W):
            s = t - W + 1 + j
            if s >= 0:
                y[t] += weight[:, 0, j] * x[s]
    return y + bias if bias is not None else y


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def mamba_mixer_reference(u: torch.Tensor, sd: dict[str, torch.Tensor], d_state: int) -> torch.Tensor:
    """One Mamba mixer on one sequence ``u (L, d_model)``, float64, from Algorithm 2 of the paper."""
    L = u.shape[0]
    E = sd["D"].shape[0]
    R = sd["dt_proj.weight"].shape[1]
    xz = linear(u, sd, "in_proj")  # (L 2E)
    x, z = xz[:, :E], xz[:, E:]
    x = silu(causal_depthwise_conv(x, sd["conv1d.weight"], sd.get("conv1d.bias")))  # (L E)
    x_dbl = linear(x, sd, "x_proj")  # (L R+2N)
    dt_low, B, C = x_dbl[:, :R], x_dbl[:, R : R + d_state], x_dbl[:, R + d_state :]
    dt = softplus(linear(dt_low, sd, "dt_proj"))  # (L E)
    A = -torch.exp(sd["A_log"])  # (E N)
    h = torch.zeros(E, d_state, dtype=u.dtype)
    ys = []
    for t in range(L):
        # Zero-order hold for A, Euler for B (the paper's simplification): h = exp(ΔA) h + Δ B x.
        h = torch.exp(dt[t][:, None] * A) * h + (dt[t] * x[t])[:, None] * B[t][None, :]
        ys.append(h @ C[t] + sd["D"] * x[t])
    y = torch.stack(ys) * silu(z)  # (L E), gated by silu(z)
    return linear(y, sd, "out_proj")


def mamba2_mixer_reference(
    u: torch.Tensor, sd: dict[str, torch.Tensor], d_state: int, headdim: int, ngroups: int
) -> torch.Tensor:
    """One Mamba-2 mixer on one sequence ``u (L, d_model)``, float64, from the SSD recurrence."""
    L = u.shape[0]
    H = sd["A_log"].shape[0]
    E, N, G, P = H * headdim, d_state, ngroups, headdim
    zxbcdt = linear(u, sd, "in_proj")
    z, xBC, dt = zxbcdt[:, :E], zxbcdt[:, E : 2 * E + 2 * G * N], zxbcdt[:, 2 * E + 2 * G * N :]
    xBC = silu(causal_depthwise_conv(xBC, sd["conv1d.weight"], sd.get("conv1d.bias")))
    x = xBC[:, :E].reshape(L, H, P)
    B = xBC[:, E : E + G * N].reshape(L, G, N)
    C = xBC[:, E + G * N :].reshape(L, G, N)
    dt = softplus(dt + sd["dt_bias"])  # (L H)
    A = -torch.exp(sd["A_log"])  # (H) one scalar decay per head
    heads_per_group = H // G
    y = torch.zeros(L, H, P, dtype=u.dtype)
    for head in range(H):
        g = head // heads_per_group  # heads 0..H/G-1 read group 0, and so on
        S = torch.zeros(P, N, dtype=u.dtype)
        for t in range(L):
            S = torch.exp(dt[t, head] * A[head]) * S + dt[t, head] * torch.outer(x[t, head], B[t, g])
            y[t, head] = S @ C[t, g] + sd["D"][head] * x[t, head]
    # Gated RMSNorm (norm after the gate), normalised per group of E/G channels.
    gated = (y.reshape(L, E) * silu(z)).reshape(L, G, E // G)
    normed = gated / torch.sqrt((gated * gated).mean(-1, keepdim=True) + 1e-5)
    return linear(normed.reshape(L, E) * sd["norm.weight"], sd, "out_proj")


def stack_reference(x, sd, n_layers, mixer, eps=1e-5):
    """Pre-norm residual stack ``x <- x + mixer(RMSNorm(x))`` and a final RMSNorm (MixerModel)."""
    for i in range(n_layers):
        mix = {k[len(f"layers.{i}.mixer.") :]: v for k, v in sd.items() if k.startswith(f"layers.{i}.mixer.")}
        x = x + mixer(rms_norm(x, sd[f"layers.{i}.norm.weight"], eps), mix)
    return rms_norm(x, sd["norm_f.weight"], eps)


def randomize(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Random values in every parameter (so each term of the block matters); float64 copies."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            scale = 0.3 if p.dim() >= 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * scale)
            if name.endswith("A_log"):  # decay rates exp(A_log) between about 0.3 and 3
                p.copy_(torch.rand(p.shape, generator=g) * 2.3 - 1.2)
            if name.endswith("norm.weight") or name.endswith("norm_f.weight"):
                p.add_(1.0)
    return {k: v.detach().double() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("d_state", [4, 16])
def test_mamba_backbone_equals_the_equations(d_state):
    torch.manual_seed(0)
    model = MambaBackbone(d_model=16, n_layers=2, d_state=d_state, dt_rank=3, backend="torch").eval()
    sd = randomize(model, seed=1)
    x = torch.randn(2, 11, 16)
    with torch.no_grad():
        out = model(x)
    mixer = lambda u, s: mamba_mixer_reference(u, s, d_state)  # noqa: E731
    for b in range(2):
        ref = stack_reference(x[b].double(), sd, 2, mixer)
        torch.testing.assert_close(out[b].double(), ref, rtol=1e-4, atol=1e-4)


@torch.no_grad()
def step_by_step(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The outputs ``(L, D)`` of ``model.step`` over one sequence ``x (1, L, D)`` from its initial state."""
    state, outs = model.init_state(1), []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state)
        outs.append(y[0])
    return torch.stack(outs)


def test_mamba_step_equals_the_equations():
    torch.manual_seed(0)
    model = MambaBackbone(d_model=8, n_layers=1, d_state=4, backend="torch").eval()
    sd = randomize(model, seed=2)
    x = torch.randn(1, 7, 8)
    ref = stack_reference(x[0].double(), sd, 1, lambda u, s: mamba_mixer_reference(u, s, 4))
    torch.testing.assert_close(step_by_step(model, x).double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("ngroups", "headdim"), [(1, 8), (2, 4), (4, 4)])
def test_mamba2_backbone_equals_the_equations(ngroups, headdim):
    torch.manual_seed(0)
    d_state = 6
    model = Mamba2Backbone(
        d_model=16,
        n_layers=2,
        d_state=d_state,
        headdim=headdim,
        ngroups=ngroups,
        chunk_size=4,
        backend="torch",
    ).eval()
    sd = randomize(model, seed=3)
    x = torch.randn(2, 10, 16)
    with torch.no_grad():
        out = model(x)
    mixer = lambda u, s: mamba2_mixer_reference(u, s, d_state, headdim, ngroups)  # noqa: E731
    for b in range(2):
        ref = stack_reference(x[b].double(), sd, 2, mixer)
        torch.testing.assert_close(out[b].double(), ref, rtol=1e-4, atol=1e-4)


def test_mamba2_step_equals_the_equations():
    torch.manual_seed(0)
    model = Mamba2Backbone(d_model=16, n_layers=1, d_state=4, headdim=4, ngroups=2, backend="torch").eval()
    sd = randomize(model, seed=4)
    x = torch.randn(1, 6, 16)
    mixer = lambda u, s: mamba2_mixer_reference(u, s, 4, 4, 2)  # noqa: E731
    ref = stack_reference(x[0].double(), sd, 1, mixer)
    torch.testing.assert_close(step_by_step(model, x).double(), ref, rtol=1e-4, atol=1e-4)
