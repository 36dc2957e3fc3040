"""Scripted controllers that generate the built-in datasets (the "expert" qualities).

They read the gymnasium observation and return an action, so ``rollout_policy`` can run them
exactly like a learned policy. Mean returns over the 100 episodes per quality of the default
datasets (gymnasium 1.4; std in brackets):

=============  ===========================================  ==============
env            quality                                      mean return
=============  ===========================================  ==============
Pendulum-v1    expert: energy swing-up + LQR near upright   -143 (82)
Pendulum-v1    medium: expert, noise 0.5, epsilon 0.5       -590 (176)
Pendulum-v1    random: uniform torque                       -1196 (280)
CartPole-v1    expert: linear feedback, sign -> push side   500 (0)
CartPole-v1    medium: expert, epsilon 0.45                 195 (156)
CartPole-v1    random: uniform push                         22 (11)
=============  ===========================================  ==============
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CartPoleController", "PendulumController"]


class PendulumController:
    """Energy-shaping swing-up, switching to an LQR regulator near the upright position.

    Pendulum-v1 integrates theta'' = 3g/(2l) sin(theta) + 3/(m l^2) u with g=10, m=l=1, i.e.
    theta'' = 15 sin(theta) + 3u, dt = 0.05, |u| <= 2 (theta = 0 is upright). Then
    E = theta'^2 / 2 + 15 cos(theta) has dE/dt = 3 u theta', and E = 15 at rest upright.
    The torque limit can hold the pole only within about 0.4 rad of upright, so away from it
    we pump energy towards E = 15; within ``switch_cos`` we regulate with LQR.
    """

    def __init__(self, energy_gain: float = 1.0, switch_cos: float = 0.85, max_torque: float = 2.0) -> None:
        self.energy_gain = energy_gain
        self.switch_cos = switch_cos
        self.max_torque = max_torque
        self.k_theta, self.k_omega = _pendulum_lqr_gains()

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """obs (3,) = [cos theta, sin theta, theta'] -> torque (1,) float32."""
        cos_t, sin_t, omega = float(obs[0]), float(obs[1]), float(obs[2])
        if cos_t > self.switch_cos:
            theta = math.atan2(sin_t, cos_t)
            u = -(self.k_theta * theta + self.k_omega * omega)
        else:
            energy = 0.5 * omega * omega + 15.0 * cos_t
            # Pushing along theta' changes E at rate 3 u theta'; the gain shrinks near E = 15
            # so the pole arrives slowly enough for the regulator to catch it.
            u = self.energy_gain * (15.0 - energy) * omega
        u = min(max(u, -self.max_torque), self.max_torque)
        return np.array([u], dtype=np.float32)


def _pendulum_lqr_gains(dt: float = 0.05) -> tuple[float, float]:
    """Infinite-horizon discrete LQR for the upright linearisation, costs taken from the reward.

    Semi-implicit Euler as in the env: w' = w + (15 th + 3u) dt; th' = th + w' dt.
    Reward = -(th^2 + 0.1 w^2 + 0.001 u^2) gives Q = diag(1, 0.1), R = 0.001.
    """
    a = np.array([[1.0 + 15.0 * dt * dt, dt], [15.0 * dt, 1.0]])
    b = np.array([[3.0 * dt * dt], [3.0 * dt]])
    q = np.diag([1.0, 0.1])
    r = np.array([[0.001]])
    p = q.copy()
    for _ in range(1000):  # Riccati iteration; converges in far fewer steps for this 2x2 system
        k = np.linalg.solve(r + b.T @ p @ b, b.T @ p @ a)
        p_next = q + a.T @ p @ (a - b @ k)
        if np.allclose(p_next, p, rtol=1e-12, atol=1e-12):
            break
        p = p_next
    return float(k[0, 0]), float(k[0, 1])


class CartPoleController:
    """Linear state feedback whose sign picks the push direction (bang-bang LQR-style).

    Positive gains on all four states: to move the cart back to the centre the pole must first
    lean towards the centre, so the cart is pushed *away* from it first (non-minimum phase).
    The angle terms dominate so balancing always wins over centring.
    """

    def __init__(
        self, k_x: float = 1.0, k_v: float = 2.0, k_theta: float = 20.0, k_omega: float = 3.0
    ) -> None:
        self.gains = (k_x, k_v, k_theta, k_omega)

    def __call__(self, obs: np.ndarray) -> int:
        """obs (4,) = [x, x', theta, theta'] -> 1 (push right) or 0 (push left)."""
        k_x, k_v, k_theta, k_omega = self.gains
        u = k_x * obs[0] + k_v * obs[1] + k_theta * obs[2] + k_omega * obs[3]
        return int(u > 0.0)
