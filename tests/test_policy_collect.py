"""``lit-seqrl data collect --policy``: a Python callable or one of our checkpoints, rolled out into a
minari dataset with exploration noise."""

from __future__ import annotations

import lightning
import numpy as np
import pytest
import torch

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.agents.policies import CheckpointPolicy, collect_with_policy, load_policy
from lit_seqrl.data.collect import rollout_policy
from lit_seqrl.data.episodes import load_offline_dataset
from tests.helpers import run_cli

POLICY_FILE = """
import numpy as np

def damp(obs):
    return np.array([-2.0 * obs[2]], dtype=np.float32)

def push_right(obs):
    return 1
"""


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    return tmp_path / "datasets"


@pytest.fixture
def policy_file(tmp_path):
    path = tmp_path / "my_policies.py"
    path.write_text(POLICY_FILE)
    return path


def test_collect_a_callable_policy_through_the_cli(root, policy_file, tmp_path):
    proc = run_cli(
        "data", "collect", "--policy", f"{policy_file}:push_right", "--env", "CartPole-v1",
        "--id", "test/cartpole/right-v0", "--episodes", "3", "--epsilon", "0.5", "--seed", "7",
        cwd=tmp_path,
    )  # fmt: skip
    assert "test/cartpole/right-v0: 3 episodes" in proc.stdout
    data = load_offline_dataset(str(root / "test" / "cartpole" / "right-v0"))
    assert data.env_id == "CartPole-v1" and len(data.episodes) == 3
    actions = np.concatenate([ep.actions for ep in data.episodes])
    share_right = float(np.mean(actions == 1))
    assert 0.6 < share_right < 0.9  # half the steps random (50/50), the rest always 1: about 0.75


def test_collect_a_module_function_in_process_is_seeded(root, policy_file, monkeypatch):
    monkeypatch.syspath_prepend(str(policy_file.parent))
    first = collect_with_policy(
        "my_policies:damp", "test/pend/a-v0", "Pendulum-v1", episodes=2, action_noise=0.3, progress=False
    )
    again = collect_with_policy(
        "my_policies:damp", "test/pend/b-v0", "Pendulum-v1", episodes=2, action_noise=0.3, progress=False
    )
    for x, y in zip(first.episodes, again.episodes):
        np.testing.assert_array_equal(x.actions, y.actions)  # same seeds: the same noise
    clean = collect_with_policy(
        "my_policies:damp", "test/pend/c-v0", "Pendulum-v1", episodes=1, progress=False
    )
    ep = clean.episodes[0]
    np.testing.assert_allclose(ep.actions[:, 0], np.clip(-2.0 * ep.observations[:, 2], -2, 2), rtol=1e-6)


def test_bad_policy_specs_are_clear_errors(root):
    with pytest.raises(ValueError, match="must be 'ckpt:PATH', 'module:function'"):
        load_policy("no_colon_here")
    with pytest.raises(ValueError, match="has no callable 'nope'"):
        load_policy("numpy:nope")
    with pytest.raises(ValueError, match="--env is required"):
        collect_with_policy("numpy:zeros_like", "test/x-v0", None, episodes=1, progress=False)


def test_stateful_policies_get_reset_and_rewards():
    class Counting:  # a VectorPolicy over one env
        def __init__(self):
            self.resets, self.rewards = [], []

        def reset(self, rows):
            self.resets.append(rows.tolist())

        def act(self, obs):
            assert obs.shape == (1, 4)
            return np.zeros(1, dtype=np.int64)

        def observe(self, rewards):
            self.rewards.extend(rewards.tolist())

    policy = Counting()
    episodes = rollout_policy("CartPole-v1", policy, 2, seed=0)
    assert policy.resets == [[True], [True]]
    assert policy.rewards == [r for ep in episodes for r in ep.rewards.tolist()]


def test_collect_from_a_checkpoint(root, tmp_path):
    torch.manual_seed(0)
    spec = {
        "obs_dim": 3, "act_dim": 1, "discrete": False, "env_id": "Pendulum-v1", "context_len": 4,
        "max_timestep": 201, "reward_scale": 0.01, "gamma": 1.0, "delayed_reward": False,
        "action_low": [-2.0], "action_high": [2.0], "target_returns": [-150.0],
    }  # fmt: skip
    agent = DecisionAgent(backbone={"name": "dc", "d_model": 8, "n_layers": 1}, data_spec=spec)
    ckpt = tmp_path / "dt.ckpt"
    # What Lightning writes, minus the trainer state: enough for load_from_checkpoint.
    checkpoint = {
        "state_dict": agent.state_dict(),
        "hyper_parameters": dict(agent.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    agent.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, ckpt)

    policy = load_policy(f"ckpt:{ckpt}", target_return=-300.0)
    assert isinstance(policy, CheckpointPolicy) and policy.env_id == "Pendulum-v1"
    data = collect_with_policy(f"ckpt:{ckpt}", "test/pend/dt-v0", episodes=2, epsilon=0.1, progress=False)
    assert data.env_id == "Pendulum-v1" and [ep.length for ep in data.episodes] == [200, 200]
    # The policy's return-to-go followed the rewards it observed: it conditions like evaluation does.
    policy.reset(np.ones(1, dtype=bool))
    policy.act(np.zeros((1, 3), dtype=np.float32))
    policy.observe(np.array([-5.0]))
    assert float(policy.rtg[0]) == pytest.approx((-300.0 + 5.0) * 0.01)
