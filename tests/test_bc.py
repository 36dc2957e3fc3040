"""BC and %BC: no return tokens, one evaluation row, checkpoints, and the exact top-X% selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_seqrl.agents import BCAgent, DecisionAgent, load_agent
from lit_seqrl.data import OfflineTrajectoryDataModule
from lit_seqrl.data.episodes import Episode
from lit_seqrl.data.store import write_dataset
from tests.helpers import PENDULUM_SPEC, quiet_trainer

SPEC = {**PENDULUM_SPEC, "context_len": 4}
TINY = {"name": "transformer", "d_model": 16, "n_layers": 1, "n_heads": 1, "dropout": 0.0}
N_EPISODES = 40


@pytest.fixture(scope="module")
def ranked_dataset(tmp_path_factory):
    """40 Pendulum-shaped episodes whose observations carry their episode id; returns shuffled,
    lengths unrelated to returns (so a selection by length or order would be caught)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("datasets")))
        rng = np.random.default_rng(0)
        returns = rng.permutation(N_EPISODES).astype(np.float64) * -10.0  # distinct: 0, -10, ..., -390
        episodes = []
        for i in range(N_EPISODES):
            T = int(rng.integers(5, 15))
            rewards = np.full(T, returns[i] / T, dtype=np.float32)
            episodes.append(
                Episode(
                    observations=np.full((T, 3), i, dtype=np.float32),
                    actions=rng.uniform(-2, 2, (T, 1)).astype(np.float32),
                    rewards=rewards,
                    terminated=False,
                    truncated=True,
                    id=i,
                    final_observation=np.full(3, i, dtype=np.float32),
                )
            )
        write_dataset("test/ranked-v0", episodes, "Pendulum-v1")
        yield (
            "test/ranked-v0",
            {i: float(np.sum(ep.rewards, dtype=np.float64)) for i, ep in enumerate(episodes)},
        )


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 1.0])
@pytest.mark.parametrize("val_fraction", [0.0, 0.2])
def test_top_fraction_selects_exactly_the_top_episodes(ranked_dataset, fraction, val_fraction):
    dataset, returns = ranked_dataset
    dm = OfflineTrajectoryDataModule(
        dataset, context_len=4, batch_size=8, windows_per_epoch=256, val_fraction=val_fraction,
        top_fraction=fraction,
    )  # fmt: skip
    dm.setup()
    val_ids = {int(ep.observations[0, 0]) for ep in dm.val_episodes}
    pool = sorted((i for i in returns if i not in val_ids), key=lambda i: returns[i], reverse=True)
    expected = set(pool[: round(fraction * len(pool))])  # top X% of the training split, by return
    kept = {int(ep.observations[0, 0]) for ep in dm.train_episodes}
    assert kept == expected
    assert len(kept) == round(fraction * (N_EPISODES - len(val_ids)))
    # ... and training windows only come from those episodes.
    batch = next(iter(dm.train_dataloader()))
    seen = set(batch["observations"][batch["mask"]][:, 0].long().tolist())
    assert seen <= kept
    # The data's default target is the best return among the kept episodes.
    assert dm.data_spec()["target_returns"] == [max(returns[i] for i in kept)]


def test_bc_has_no_return_tokens_and_ignores_returns():
    torch.manual_seed(0)
    agent = BCAgent(backbone=TINY, data_spec=SPEC, embed_dropout=0.0).eval()
    assert agent.hparams.return_conditioned is False
    B, K = 2, 4
    obs, act = torch.randn(B, K, 3), torch.rand(B, K, 1) * 4 - 2
    ts, mask = torch.arange(K).expand(B, K), torch.ones(B, K, dtype=torch.bool)
    tokens, token_mask = agent.embed(obs, act, torch.zeros(B, K, 1), ts, mask)
    assert tokens.shape == (B, 2 * K, 16) and token_mask.shape == (B, 2 * K)  # s, a per step
    with torch.no_grad():
        y1 = agent(obs, act, torch.zeros(B, K, 1), ts, mask)
        y2 = agent(obs, act, 100 * torch.randn(B, K, 1), ts, mask)
    torch.testing.assert_close(y1, y2)
    with pytest.raises(ValueError, match="never return-conditioned"):
        BCAgent(backbone=TINY, data_spec=SPEC, return_conditioned=True)


@pytest.mark.parametrize("make", [BCAgent, lambda **kw: DecisionAgent(return_conditioned=False, **kw)])
def test_bc_evaluates_one_row_whatever_the_targets(make):
    """BCAgent, and any unconditioned DecisionAgent, ignore target returns: one row."""
    torch.manual_seed(0)
    agent = make(backbone={"name": "dc", "d_model": 8, "n_layers": 1}, data_spec=SPEC)
    report = agent.evaluate_policy(episodes=1, num_envs=1, target_returns=[-100.0, -500.0])
    assert report["return_conditioned"] is False and len(report["results"]) == 1
    row = report["results"][0]
    assert row["target_return"] == -150.0 and row["length_mean"] == 200  # the data's, for table alignment
    assert row["normalized_score"] is not None


@pytest.mark.parametrize(
    ("backbone", "layout"), [("mambadm", "interleaved"), ("s4", "stacked"), ("dc_hybrid", "interleaved")]
)
def test_bc_trains_with_any_backbone(backbone, layout):
    torch.manual_seed(0)
    agent = BCAgent(
        backbone={"name": backbone, "d_model": 8, "n_layers": 1}, token_layout=layout, data_spec=SPEC
    )
    g = torch.Generator().manual_seed(1)
    batch = {
        "observations": torch.randn(3, 4, 3, generator=g),
        "actions": torch.rand(3, 4, 1, generator=g) * 4 - 2,
        "returns_to_go": torch.randn(3, 4, 1, generator=g),
        "timesteps": torch.arange(4).expand(3, 4),
        "mask": torch.ones(3, 4, dtype=torch.bool),
    }
    loss, _ = agent._loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and agent.embed_return.weight.grad is None  # returns never used


def test_bc_checkpoint_rebuilds_a_bc_agent(ranked_dataset, tmp_path):
    dataset, _ = ranked_dataset
    dm = OfflineTrajectoryDataModule(
        dataset, context_len=4, batch_size=8, windows_per_epoch=16, top_fraction=0.5
    )
    agent = BCAgent(backbone=TINY, eval_episodes=0, warmup_steps=1, data_spec=dm.data_spec())
    trainer = quiet_trainer(
        max_steps=2, enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path
    )
    trainer.fit(agent, datamodule=dm)
    trainer.save_checkpoint(tmp_path / "bc.ckpt")
    loaded = load_agent(str(tmp_path / "bc.ckpt"), expected=DecisionAgent)
    assert type(loaded) is BCAgent and loaded.hparams.return_conditioned is False
    for p, q in zip(agent.parameters(), loaded.parameters()):
        torch.testing.assert_close(p.detach(), q)
