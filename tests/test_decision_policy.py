"""DecisionPolicy in a real rollout: what the model sees at each step equals the training window
of the same episode, after the window has slid, with a discounted return-to-go (γ < 1).

The agent is not return-conditioned, so its actions do not depend on the return-to-go: a first
rollout measures the episode's discounted return R_0, and a second one, conditioned on exactly
R_0, replays the same episode. Then at every step t the return-to-go the policy carries must be
R_t = Σ_{k>=t} γ^(k-t) r_k, which is what the training windows hold (γ R_{t+1} = R_t − r_t).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.windows import TrajectoryWindows
from lit_seqrl.evaluation.rollout import run_episodes
from tests.helpers import PENDULUM_SPEC

K, GAMMA, SCALE = 5, 0.99, 0.01
SPEC = {
    **PENDULUM_SPEC, "context_len": K, "reward_scale": SCALE, "gamma": GAMMA,
    "ref_min_score": None, "ref_max_score": None, "target_returns": [0.0],
}  # fmt: skip


class Recorder:
    """A VectorPolicy that passes everything through and records one row's episode."""

    def __init__(self, policy: DecisionPolicy) -> None:
        self.policy, self.obs, self.actions, self.rewards = policy, [], [], []

    def reset(self, rows: np.ndarray) -> None:
        self.policy.reset(rows)

    def act(self, obs: np.ndarray) -> np.ndarray:
        action = self.policy.act(obs)
        self.obs.append(np.array(obs[0], np.float32))
        self.actions.append(np.array(action[0], np.float32))
        return action

    def observe(self, rewards: np.ndarray) -> None:
        self.rewards.append(float(rewards[0]))
        self.policy.observe(rewards)


def _agent() -> DecisionAgent:
    torch.manual_seed(0)
    agent = DecisionAgent(
        backbone={"name": "transformer", "d_model": 16, "n_layers": 1, "n_heads": 1, "dropout": 0.0},
        return_conditioned=False,
        embed_dropout=0.0,
        data_spec=SPEC,
    ).eval()
    torch.nn.init.normal_(agent.head.weight, std=0.5)  # actions that vary with the inputs
    return agent


def _rollout(agent: DecisionAgent, target: float, seen: list | None = None) -> Recorder:
    rec = Recorder(DecisionPolicy(agent, target_return=target, mode="window"))
    if seen is not None:
        forward = agent.forward

        def recording_forward(*args, **kwargs):
            seen.append([a.clone() for a in args])
            return forward(*args, **kwargs)

        agent.forward = recording_forward  # the policy calls the module, which calls this
    try:
        run_episodes("Pendulum-v1", rec, episodes=1, num_envs=1, seed=3)
    finally:
        agent.__dict__.pop("forward", None)
    return rec


def test_window_inputs_equal_the_training_windows_of_the_same_episode():
    agent = _agent()
    first = _rollout(agent, target=0.0)
    R0 = sum(GAMMA**k * r for k, r in enumerate(first.rewards))  # discounted return, unscaled
    seen: list = []
    rec = _rollout(agent, target=R0, seen=seen)
    np.testing.assert_array_equal(np.array(rec.actions), np.array(first.actions))  # the same episode
    T = len(rec.rewards)
    assert T == 200 and len(seen) == T

    episode = Episode(
        np.array(rec.obs), np.array(rec.actions), np.array(rec.rewards, np.float32), False, True, 0
    )
    windows = TrajectoryWindows([episode], K, num_windows=2000, gamma=GAMMA, reward_scale=SCALE, seed=0)
    starts = windows.starts(np.arange(2000))
    checked = set()
    for i in np.flatnonzero(starts <= T - K):  # full windows: those the sliding policy window equals
        s = int(starts[i])
        if s in checked:
            continue
        checked.add(s)
        item = windows[int(i)]
        obs, act, rtg, ts, mask = seen[s + K - 1]  # the policy's input when acting at step s + K - 1
        assert mask[0].all()
        torch.testing.assert_close(obs[0], item["observations"])
        torch.testing.assert_close(ts[0], item["timesteps"])
        torch.testing.assert_close(act[0, :-1], item["actions"][:-1])  # the newest action is not chosen yet
        torch.testing.assert_close(rtg[0], item["returns_to_go"], rtol=1e-4, atol=2e-4)  # float32 drift
    assert len(checked) > 150  # most positions, early and late in the episode


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_return_to_go_after_each_reward_is_the_discounted_remainder(gamma):
    """rtg_{t+1} = (rtg_t − r_t · scale) / γ, per row, and a reset row starts again from the target."""
    agent = _agent()
    agent.spec = {**SPEC, "gamma": gamma}
    policy = DecisionPolicy(agent, target_return=-50.0)
    policy.reset(np.ones(2, dtype=bool))
    expected = np.array([-50.0, -50.0]) * SCALE
    for rewards in ([-3.0, -1.0], [-2.0, 0.0], [-5.0, -4.0]):
        policy.act(np.zeros((2, 3), np.float32))
        policy.observe(np.array(rewards))
        expected = (expected - np.array(rewards) * SCALE) / gamma
        np.testing.assert_allclose(policy.rtg.numpy(), expected, rtol=1e-6)
    policy.reset(np.array([False, True]))
    np.testing.assert_allclose(policy.rtg.numpy(), [expected[0], -50.0 * SCALE], rtol=1e-6)
