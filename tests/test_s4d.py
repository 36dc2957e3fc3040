"""S4D against a from-the-equations reference (Gu et al. 2022, "On the Parameterization and
Initialization of Diagonal State Space Models", Section 3), sharing no code with the layer.

Continuous SSM x' = Λx + Bu, y = 2 Re(Cx) with complex diagonal Λ (N/2 conjugate pairs kept);
zero-order hold with step Δ: Ā = exp(ΔΛ), B̄ = (exp(ΔΛ) − 1)/Λ · B, and the convolution kernel
K_k = 2 Re Σ_n C_n Ā_n^k B̄_n. The layer is y = K ∗ u + D u, then GELU, a linear map and a GLU.
"""

from __future__ import annotations

import math

import pytest
import torch

from lit_seqrl.backbones.s4d import DiagonalKernel, S4DBackbone


def s4d_kernel_reference(
    log_lambda_re: torch.Tensor,
    lambda_im: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    log_dt: torch.Tensor,
    L: int,
) -> torch.Tensor:
    """``K (H, L)`` in complex128 by explicit scalar powers, from the raw parameters.

    Λ = −exp(log Re Λ) + i Im Λ (stable by construction), Δ = exp(log Δ); B, C are real views
    ``(H, N/2, 2)`` of complex numbers.
    """
    log_lambda_re, lambda_im, B, C, log_dt = (
        t.detach().double() for t in (log_lambda_re, lambda_im, B, C, log_dt)
    )
    H, N2 = lambda_im.shape
    K = torch.zeros(H, L, dtype=torch.float64)
    for h in range(H):
        dt = math.exp(float(log_dt[h]))
        for n in range(N2):
            lam = complex(-math.exp(float(log_lambda_re[h, n])), float(lambda_im[h, n]))
            b = complex(float(B[h, n, 0]), float(B[h, n, 1]))
            c = complex(float(C[h, n, 0]), float(C[h, n, 1]))
            a_bar = complex(math.e ** (dt * lam.real) * math.cos(dt * lam.imag),
                            math.e ** (dt * lam.real) * math.sin(dt * lam.imag))  # fmt: skip
            b_bar = (a_bar - 1) / lam * b
            power = complex(1.0, 0.0)
            for k in range(L):
                K[h, k] += 2 * (c * power * b_bar).real
                power *= a_bar
    return K


def causal_conv_reference(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``y_t = Σ_{k<=t} K_k u_{t-k}`` by a double loop: ``u (L, H)``, ``K (H, L)`` -> ``(L, H)``."""
    L = u.shape[0]
    y = torch.zeros_like(u)
    for t in range(L):
        for k in range(t + 1):
            y[t] += K[:, k] * u[t - k]
    return y


def _randomize(kernel: DiagonalKernel, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        kernel.log_Lambda_re.copy_(torch.rand(kernel.log_Lambda_re.shape, generator=g) * 3 - 2.5)
        kernel.Lambda_im.copy_(torch.randn(kernel.Lambda_im.shape, generator=g) * 3)
        kernel.B.copy_(torch.randn(kernel.B.shape, generator=g))
        kernel.C.copy_(torch.randn(kernel.C.shape, generator=g))
        kernel.log_dt.copy_(torch.rand(kernel.log_dt.shape, generator=g) * 3 - 3)  # Δ in [0.05, 1]


@pytest.mark.parametrize("init", ["lin", "inv", "legs"])
def test_s4d_kernel_equals_the_equations(init):
    torch.manual_seed(0)
    kernel = DiagonalKernel(3, 8, init=init)
    if init == "lin":
        _randomize(kernel, seed=1)  # the others keep their paper initialisation
    with torch.no_grad():
        K = kernel(40)
    ref = s4d_kernel_reference(kernel.log_Lambda_re, kernel.Lambda_im, kernel.B, kernel.C, kernel.log_dt, 40)
    torch.testing.assert_close(K.double(), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_s4d_backbone_equals_the_equations():
    torch.manual_seed(0)
    model = S4DBackbone(d_model=6, n_layers=2, d_state=8, init="lin").eval()
    for i, block in enumerate(model.layers):
        _randomize(block.mixer.kernel, seed=10 + i)
    x = torch.randn(2, 12, 6)
    with torch.no_grad():
        out = model(x)
    ln = torch.nn.functional.layer_norm
    for b in range(2):
        h = x[b].double()
        for norm, layer in ((block.norm, block.mixer) for block in model.layers):
            k = layer.kernel
            K = s4d_kernel_reference(k.log_Lambda_re, k.Lambda_im, k.B, k.C, k.log_dt, 12)
            z = ln(h, (6,), norm.weight.double(), norm.bias.double(), norm.eps)
            y = causal_conv_reference(z, K) + layer.D.double() * z
            y = torch.nn.functional.gelu(y) @ layer.out.weight.double().T + layer.out.bias.double()
            h = h + y[:, :6] * torch.sigmoid(y[:, 6:])  # GLU
        f = model.norm_f
        ref = ln(h, (6,), f.weight.double(), f.bias.double(), f.eps)
        torch.testing.assert_close(out[b].double(), ref, rtol=1e-4, atol=1e-4)
