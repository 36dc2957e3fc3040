"""Online Q-learning over observation histories: DQN, DRQN and DTQN in one LightningModule.

* DQN  — ``history: none``: an MLP on the current observation.
* DRQN — ``backbone: {name: lstm}`` (or ``gru``).
* DTQN — ``backbone: {name: dtqn_transformer, ...}`` (Esslinger, Platt & Amato, 2022; the default),
  the paper's block with its GRU-gate and identity-map-reordering switches, with learned position
  embeddings added here. Any other registered backbone (``transformer``: GPT-style) works the same way.

Training follows the DTQN paper: history windows of up to ``context_len`` steps from an episodic
replay, Q-values at every position of a window and the loss averaged over all real positions
("intermediate Q-value prediction"), Double-DQN targets from a target network synced every
``target_update_interval`` gradient steps, epsilon-greedy acting with linear annealing, Adam.

The environment runs inside Lightning's loop: the training dataloader is an ``IterableDataset``
that steps the environments (``env_steps_per_update`` steps of every env) and then yields a replay
batch, so ``lit-seqrl fit`` needs no data module. The replay buffer goes into checkpoints only
with ``checkpoint_replay=True``; otherwise a resumed run refills it with random steps. With DDP every rank runs its own environments (seeds offset by rank).
"""

from __future__ import annotations

import copy
import inspect
from collections import deque
from typing import Any, Literal

import gymnasium as gym
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor

import lit_seqrl.envs  # noqa: F401  (registers our environments for gym.make)
from lit_seqrl.agents.base import SeqRLAgent, adamw, param_groups
from lit_seqrl.agents.callbacks import StopOnNonFiniteLoss
from lit_seqrl.agents.dtqn_policy import ActMode, HistoryActor, QNetwork
from lit_seqrl.data.env_loop import success_rate
from lit_seqrl.data.online import EnvCollector, ReplayStream, flat_obs_dim
from lit_seqrl.data.replay import EpisodicReplay
from lit_seqrl.errors import ConfigError, ConfigTypeError
from lit_seqrl.evaluation.rollout import run_episodes, summarize
from lit_seqrl.registry import build_backbone, get_backbone_class

REPLAY_KEY = "lit_seqrl_replay"  # checkpoint entry of the replay buffer (``checkpoint_replay``)

DEFAULT_BACKBONE: dict[str, Any] = {  # the paper's DTQN
    "name": "dtqn_transformer",
    "d_model": 128,
    "n_layers": 2,
    "n_heads": 8,
    "dropout": 0.0,
}


def double_dqn_targets(
    q_next_online: Tensor | None, q_next_target: Tensor, rewards: Tensor, dones: Tensor, gamma: float
) -> Tensor:
    """``y = r + γ (1 - done) Q_target(h', argmax_a Q_online(h', a))`` for every position.

    Shapes: ``q_next_* (..., A)``, ``rewards, dones (...)``. With ``q_next_online=None`` the
    plain DQN target ``max_a Q_target(h', a)`` is used.
    """
    if q_next_online is None:
        next_value = q_next_target.max(dim=-1).values
    else:
        best = q_next_online.argmax(dim=-1, keepdim=True)
        next_value = q_next_target.gather(-1, best).squeeze(-1)
    return rewards + gamma * (1.0 - dones) * next_value


def observation_bounds(space: gym.Space, env_id: str = "the environment") -> tuple[Tensor, Tensor]:
    """``(low, high)`` of ``space`` flattened as the agents see it (one-hot for discrete parts).

    Raises :class:`ConfigError` when a dimension is unbounded (nothing to scale it by).
    """
    flat = gym.spaces.flatten_space(space)
    low, high = (torch.as_tensor(b, dtype=torch.float32).reshape(-1) for b in (flat.low, flat.high))
    bad = (~torch.isfinite(low) | ~torch.isfinite(high) | (high <= low)).nonzero().flatten().tolist()
    if bad:
        raise ConfigError(
            f"obs_norm='bounds' needs finite bounds, but {env_id}'s observation dimensions {bad} "
            f"have low {low[bad].tolist()} and high {high[bad].tolist()}; use obs_norm='none'"
        )
    return low, high


def intermediate_q_loss(
    q: Tensor, actions: Tensor, targets: Tensor, mask: Tensor, kind: str = "mse"
) -> Tensor:
    """TD loss averaged over every real position of every history window.

    Shapes: ``q (B, L, A)``, ``actions, targets (B, L)``, ``mask (B, L)`` bool. Padded positions
    are dropped before the mean, so they get exactly zero gradient.
    """
    q_taken = q.gather(-1, actions.unsqueeze(-1)).squeeze(-1)[mask]  # (N real)
    y = targets[mask]
    if kind == "mse":
        return F.mse_loss(q_taken, y)
    if kind == "huber":
        return F.smooth_l1_loss(q_taken, y)
    raise ConfigError(f"loss must be 'mse' or 'huber', got {kind!r}")


class DTQNAgent(SeqRLAgent):
    """DQN / DRQN / DTQN agent trained online (defaults: the DTQN paper's hyper-parameters).

    Args:
        env_id, env_kwargs: the ``gymnasium.make`` environment (discrete actions).
        history: ``"context"`` (a backbone encodes up to ``context_len`` observations) or
            ``"none"`` (DQN: current observation only, ``backbone`` ignored).
        backbone: registry spec ``{"name": ..., "d_model": ..., **kwargs}``; a ``max_seq_len``
            argument (KV cache) defaults to ``context_len``.
        context_len: history length K in training windows and when acting.
        pos_embedding: learned position embeddings added to the observation tokens.
        obs_norm: ``"none"`` (the paper's: raw observations) or ``"bounds"``: each observation
            dimension mapped from the observation space's ``[low, high]`` to ``[-1, 1]`` (needs
            finite bounds; discrete parts are one-hot, already in ``[0, 1]``). Car Flag's velocity
            lies in ``±0.07``, so unscaled it barely moves the embedding.
        d_model: width of the DQN MLP (``history: none``).
        batch_size, gamma, lr, weight_decay: as usual (Adam; AdamW when weight decay > 0).
        buffer_size: replay capacity in transitions.
        learning_starts: random-action transitions collected before learning.
        num_envs: environments stepped together; env_steps_per_update: steps of each per update.
        target_update_interval: gradient steps between hard target-network syncs.
        eps_start, eps_end, eps_decay_steps: linear epsilon schedule over gradient steps.
        double_q: Double-DQN targets (else max over the target network).
        loss: ``"mse"`` (paper) or ``"huber"``.
        grad_clip: max gradient norm (used when the Trainer sets no ``gradient_clip_val``).
        batches_per_epoch: gradient steps per Lightning epoch.
        act_mode: ``"window"`` (default, the paper's: re-encode the last ``context_len``
            observations at every step) or ``"recurrent"`` (carry the backbone's state, e.g. a
            KV cache; cheaper, but during training that state was computed by older weights).
        checkpoint_replay: also save the replay buffer (every stored episode, its sampler's state
            and the env-step count) in checkpoints, so a resumed run (``--ckpt_path``) continues
            with the same experience instead of refilling it with ``learning_starts`` random steps.
            Costs about ``4 · (obs_dim + 2)`` bytes per stored transition on disk.
        eval_episodes, eval_num_envs: greedy rollouts at the end of each epoch (0: none).
        seed: environment seed (default: derived from ``seed_everything``).
    """

    def __init__(
        self,
        env_id: str = "lit_seqrl/CarFlag-v0",
        env_kwargs: dict[str, Any] | None = None,
        history: Literal["context", "none"] = "context",
        backbone: dict[str, Any] | None = None,
        context_len: int = 50,
        pos_embedding: bool = True,
        obs_norm: Literal["none", "bounds"] = "none",
        d_model: int = 128,
        batch_size: int = 32,
        gamma: float = 0.99,
        lr: float = 3e-4,
        weight_decay: float = 0.0,
        buffer_size: int = 500_000,
        learning_starts: int = 50_000,
        num_envs: int = 1,
        env_steps_per_update: int = 1,
        target_update_interval: int = 10_000,
        eps_start: float = 1.0,
        eps_end: float = 0.1,
        eps_decay_steps: int = 200_000,
        double_q: bool = True,
        loss: Literal["mse", "huber"] = "mse",
        grad_clip: float | None = 1.0,
        batches_per_epoch: int = 1_000,
        act_mode: Literal["recurrent", "window"] = "window",
        checkpoint_replay: bool = False,
        eval_episodes: int = 0,
        eval_num_envs: int = 8,
        seed: int | None = None,
    ) -> None:  # pragma: no mutate block (mutmut's wrapper hides the args save_hyperparameters reads)
        super().__init__()
        if history not in ("context", "none"):
            raise ConfigError(f"history must be 'context' or 'none', got {history!r}")
        if loss not in ("mse", "huber"):
            raise ConfigError(f"loss must be 'mse' or 'huber', got {loss!r}")
        if context_len < 1:
            raise ConfigError(f"context_len must be >= 1, got {context_len}")
        if obs_norm not in ("none", "bounds"):
            raise ConfigError(f"obs_norm must be 'none' or 'bounds', got {obs_norm!r}")
        if act_mode not in ("recurrent", "window", None):
            raise ConfigError(f"act_mode must be 'window' or 'recurrent', got {act_mode!r}")
        spec = dict(backbone or DEFAULT_BACKBONE) if history == "context" else None
        if spec is not None:
            if "name" not in spec:
                raise ConfigError("backbone spec needs a 'name' (see `lit-seqrl backbones`)")
            spec.setdefault("d_model", DEFAULT_BACKBONE["d_model"])
            if "max_seq_len" in inspect.signature(get_backbone_class(spec["name"])).parameters:
                spec.setdefault("max_seq_len", context_len)  # the KV cache must hold a whole context
        self.save_hyperparameters()
        self.hparams.backbone = spec

        env = self._make_env()
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ConfigTypeError(
                f"{env_id} has action space {env.action_space}; Q-learning needs Discrete actions"
            )
        self.obs_space = env.observation_space
        self.obs_dim, self.n_actions = flat_obs_dim(env), int(env.action_space.n)
        env.close()

        encoder, width = None, d_model
        if spec is not None:
            width = spec["d_model"]
            extra = {k: v for k, v in spec.items() if k not in ("name", "d_model")}
            encoder = build_backbone(spec["name"], d_model=width, **extra)
        self.context = context_len if spec is not None else 1  # DQN: one observation
        bounds = observation_bounds(self.obs_space, env_id) if obs_norm == "bounds" else None
        self.q_net = QNetwork(
            self.obs_dim, self.n_actions, width, encoder, self.context, pos_embedding, obs_bounds=bounds
        )
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self._recent: deque[dict[str, float | None]] = deque(maxlen=20)  # recent training episodes
        self._collector: EnvCollector | None = None
        self._restored_replay: dict[str, Any] | None = None  # from a checkpoint, for the next collector

    # ----------------------------------------------------------------- pieces
    def _make_env(self, **overrides: Any) -> gym.Env:
        return gym.make(self.hparams.env_id, **{**(self.hparams.env_kwargs or {}), **overrides})

    @property
    def default_act_mode(self) -> ActMode:
        if self.q_net.backbone is None:
            return "markov"
        return self.hparams.act_mode or "window"  # None in checkpoints of older versions

    def make_actor(self, mode: ActMode | None = None, flatten: bool = False) -> HistoryActor:
        """A greedy actor over this agent's Q-network (``flatten``: raw env observations in)."""
        return HistoryActor(
            self.q_net, self.context, mode or self.default_act_mode, self.obs_space if flatten else None
        )

    def epsilon(self) -> float:
        hp = self.hparams
        frac = min(1.0, self.global_step / max(1, hp.eps_decay_steps))
        return hp.eps_start + frac * (hp.eps_end - hp.eps_start)

    def forward(self, obs: Tensor) -> Tensor:
        """Q-values ``(B, L, A)`` for histories ``obs (B, L, obs_dim)``."""
        return self.q_net(obs)

    # ----------------------------------------------------------------- data
    def train_dataloader(self) -> ReplayStream:
        hp = self.hparams
        rank = self.global_rank if self._trainer is not None else 0
        seed = (hp.seed if hp.seed is not None else torch.initial_seed() % 2**31) + 1_000 * rank
        buffer = EpisodicReplay(hp.buffer_size, self.obs_dim, seed=seed)
        if self._collector is not None:
            self._collector.close()
        self._collector = EnvCollector(self._make_env, hp.num_envs, buffer, seed=seed)
        if self._restored_replay is not None:
            buffer.load_state_dict(self._restored_replay["buffer"])
            self._collector.env_steps = self._restored_replay["env_steps"]
            self._restored_replay = None
        stream = ReplayStream(
            self._collector,
            self.make_actor(),
            batch_size=hp.batch_size,
            context_len=self.context,
            batches_per_epoch=hp.batches_per_epoch,
            env_steps_per_batch=hp.env_steps_per_update,
            learning_starts=hp.learning_starts,
            epsilon_fn=self.epsilon,
        )
        # The stream steps environments with this module's network, so it must stay in-process.
        # Handed to Lightning as is, not wrapped in a DataLoader(batch_size=None, num_workers=0),
        # which would only pass its batches through: Lightning then has no worker count to warn about.
        return stream

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        hp = self.hparams
        q = self.q_net(batch["obs"])  # (B L A)
        with torch.no_grad():
            q_next_target = self.target_net(batch["next_obs"])  # (B L A)
            q_next_online = self.q_net(batch["next_obs"]) if hp.double_q else None
            targets = double_dqn_targets(
                q_next_online, q_next_target, batch["rewards"], batch["dones"], hp.gamma
            )
        loss = intermediate_q_loss(q, batch["actions"], targets, batch["mask"], hp.loss)

        B = batch["obs"].shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=B)
        self.log("train/q_mean", q.detach()[batch["mask"]].mean(), batch_size=B)
        self.log("train/epsilon", self.epsilon(), batch_size=B)
        if self._collector is not None:
            self._recent.extend(self._collector.pop_finished())
            self.log("train/env_steps", float(self._collector.env_steps), batch_size=B)
        if self._recent:
            n = len(self._recent)
            self.log(
                "train/episode_return",
                sum(e["return"] for e in self._recent) / n,
                prog_bar=True,
                batch_size=B,
            )
            rate = success_rate([e["success"] for e in self._recent])
            if rate is not None:  # the same rule as eval/success_rate: only envs that report success
                self.log("train/success_rate", rate, batch_size=B)
            self.log("train/episode_length", sum(e["length"] for e in self._recent) / n, batch_size=B)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.hparams.checkpoint_replay and self._collector is not None:
            collector = self._collector
            checkpoint[REPLAY_KEY] = {
                "buffer": collector.buffer.state_dict(),
                "env_steps": collector.env_steps,
            }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self._restored_replay = checkpoint.get(REPLAY_KEY)  # used when training resumes

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.global_step % self.hparams.target_update_interval == 0:
            self.sync_target()

    def sync_target(self) -> None:
        """Copy the online network into the target network."""
        self.target_net.load_state_dict(self.q_net.state_dict())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        hp = self.hparams
        groups = param_groups(self.q_net, hp.weight_decay, hp.lr)
        if hp.weight_decay > 0:
            return adamw(groups, lr=hp.lr)
        return torch.optim.Adam(groups, lr=hp.lr)

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if gradient_clip_val is None and self.hparams.grad_clip:
            gradient_clip_val, gradient_clip_algorithm = self.hparams.grad_clip, "norm"
        self.clip_gradients(
            optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm
        )

    def configure_callbacks(self) -> list[Callback]:
        """Stop on a non-finite loss; checkpoints end in ``last.ckpt`` (what the README evaluates)."""
        callbacks: list[Callback] = [StopOnNonFiniteLoss()]
        # Replaces the trainer's default ModelCheckpoint; with enable_checkpointing=False there is
        # none and nothing is written.
        if self.trainer.checkpoint_callbacks:
            callbacks.append(ModelCheckpoint(save_last=True))
        return callbacks

    def on_train_epoch_end(self) -> None:
        hp = self.hparams
        if hp.eval_episodes < 1:
            return
        row = self.evaluate_policy(hp.eval_episodes, hp.eval_num_envs, seed=10_000)["results"][0]
        self.log("eval/return", row["return_mean"], prog_bar=True)
        if row["success_rate"] is not None:
            self.log("eval/success_rate", row["success_rate"], prog_bar=True)

    def on_train_end(self) -> None:
        if self._collector is not None:
            self._collector.close()

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate_policy(
        self,
        episodes: int = 10,
        num_envs: int = 8,
        seed: int = 0,
        mode: ActMode | None = None,
        env_id: str | None = None,
        progress: bool = False,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Greedy episodes; ``results[0]`` has return/length statistics and ``success_rate``.

        ``mode``: ``"recurrent"`` or ``"window"`` for history agents (DQN is always ``"markov"``).
        Other keyword arguments of ``lit-seqrl evaluate`` (target returns) do not apply and are ignored.
        """
        env_id = env_id or self.hparams.env_id
        actor = self.make_actor(mode if self.q_net.backbone is not None else None, flatten=True)
        was_training = self.training
        self.eval()
        try:
            results = run_episodes(
                env_id, actor, episodes, num_envs, seed, progress=progress, env_kwargs=self.hparams.env_kwargs
            )
        finally:
            self.train(was_training)
        return {
            "episodes": episodes,
            "mode": actor.mode,
            "env_id": env_id,
            "results": [{**summarize(results), "normalized_score": None}],
        }
