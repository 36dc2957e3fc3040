"""Return-conditioned sequence policy: DT, Decision Mamba, DS4, DC and MambaDM in one class.

They differ only by backbone (asked from the registry by name) and token layout:

* ``interleaved`` — tokens R_1, s_1, a_1, R_2, ... (Decision Transformer); the action a_t is
  predicted from the hidden state of the s_t token.
* ``stacked`` — one token per step, embed(R_t) + embed(s_t) + embed(a_{t-1}) (DS4, DTQN style).

Every token gets a learned embedding of its absolute timestep. Continuous actions are rescaled
to [-1, 1] from the action space bounds and predicted with tanh + MSE; discrete ones with
cross-entropy. Padded steps never contribute to the loss.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lit_seqrl.agents.base import SeqRLAgent, adamw, lr_factor, param_groups
from lit_seqrl.agents.callbacks import LatestCheckpoint, RNGStateCheckpoint, StopOnNonFiniteLoss
from lit_seqrl.agents.decision_policy import DecisionPolicy
from lit_seqrl.data.scores import normalized_score
from lit_seqrl.errors import ConfigError
from lit_seqrl.evaluation.callbacks import RolloutEvaluation
from lit_seqrl.evaluation.rollout import check_env_matches, run_episodes, summarize
from lit_seqrl.registry import build_backbone

TokenLayout = Literal["interleaved", "stacked"]
EvalMode = Literal["window", "recurrent"]
LRSchedule = Literal["constant", "cosine"]

DEFAULT_BACKBONE: dict[str, Any] = {
    "name": "transformer",
    "d_model": 128,
    "n_layers": 3,
    "n_heads": 1,
    "dropout": 0.1,
}


def _floats(values: Any) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float32).clone()


class DecisionAgent(SeqRLAgent):
    """Return-conditioned sequence policy (Decision Transformer and its backbone variants).

    Args:
        backbone: registry spec, ``{"name": ..., "d_model": ..., **backbone kwargs}``.
        token_layout: ``"interleaved"`` (R, s, a tokens per step) or ``"stacked"`` (one per step).
        return_conditioned: False drops the return tokens (behaviour cloning with the same machinery).
        lr, weight_decay, betas, warmup_steps: AdamW with linear warm-up (DT paper defaults).
        lr_schedule: after warm-up, ``"constant"`` (DT's gym setting) or ``"cosine"`` decay to
            ``final_lr_ratio * lr`` at the trainer's last step (steadier final checkpoints).
        embed_dropout: dropout on the token embeddings.
        target_returns: returns to condition on at evaluation (first = the headline number);
            default: the data module's (the best return in the dataset).
        eval_mode: ``"window"`` (re-encode the last K steps, what training saw) or ``"recurrent"``
            (carry the backbone state with ``step``; exact when training windows start at t=0).
        eval_compile: act in window mode through ``torch.compile`` of :meth:`forward`: one graph
            whose element-wise work is fused: more env-steps/s than eager acting, after a one-off
            compile (speed-up and compile time in benchmarks/README.md; needs a C++ compiler on
            CPU; if compiling fails, acting falls back to eager with a warning).
        eval_episodes, eval_num_envs: rollouts after each validation (0 episodes: none); the
            best checkpoint is chosen by the return at the first target.
        checkpoint_every_n_steps: also refresh ``last.ckpt`` every n optimizer steps, so a killed
            run resumes (``--ckpt_path last``) from mid-epoch instead of the last validation.
        data_spec: what the network is built from and evaluated with: dims, env id, scales,
            action bounds and observation normalisation, as ``OfflineTrajectoryDataModule.data_spec()``
            returns it (the command line links it from ``--data``). Required: the network is
            built here, so it exists before ``fit``. It is saved with the checkpoint, so
            ``evaluate`` needs nothing else. Needed keys: ``obs_dim``, ``act_dim``, ``discrete``,
            ``max_timestep``; optional: ``action_low``/``action_high`` (tanh head),
            ``obs_mean``/``obs_std`` (else 0/1), ``env_id``, ``target_returns``, reference scores.
    """

    def __init__(
        self,
        backbone: dict[str, Any] | None = None,
        token_layout: TokenLayout = "interleaved",
        return_conditioned: bool = True,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 10_000,
        lr_schedule: LRSchedule = "constant",
        final_lr_ratio: float = 0.1,
        embed_dropout: float = 0.1,
        target_returns: list[float] | None = None,
        eval_mode: EvalMode = "window",
        eval_compile: bool = False,
        eval_episodes: int = 10,
        eval_num_envs: int = 10,
        checkpoint_every_n_steps: int | None = None,
        data_spec: dict[str, Any] | None = None,
    ) -> None:  # pragma: no mutate block (mutmut's wrapper hides the args save_hyperparameters reads)
        super().__init__()
        if token_layout not in ("interleaved", "stacked"):
            raise ConfigError(f"token_layout must be 'interleaved' or 'stacked', got {token_layout!r}")
        if eval_mode not in ("window", "recurrent"):
            raise ConfigError(f"eval_mode must be 'window' or 'recurrent', got {eval_mode!r}")
        if lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        if not 0.0 <= final_lr_ratio <= 1.0:
            raise ConfigError(f"final_lr_ratio must be in [0, 1], got {final_lr_ratio}")
        if checkpoint_every_n_steps is not None and checkpoint_every_n_steps < 1:
            raise ConfigError(f"checkpoint_every_n_steps must be >= 1, got {checkpoint_every_n_steps}")
        backbone = dict(backbone or DEFAULT_BACKBONE)
        if "name" not in backbone:
            raise ConfigError("backbone spec needs a 'name' (see `lit-seqrl backbones`)")
        backbone.setdefault("d_model", DEFAULT_BACKBONE["d_model"])
        self.save_hyperparameters()
        self.hparams.backbone = backbone
        self.val_loss, self.val_action_error = MeanMetric(), MeanMetric()
        if data_spec is None:
            raise ConfigError(
                f"{type(self).__name__} needs data_spec=...: pass your data module's data_spec() "
                "(the command line links it from --data)"
            )
        self._build(data_spec)

    # ----------------------------------------------------------------- construction
    def _build(self, spec: dict[str, Any]) -> None:
        missing = {"obs_dim", "act_dim", "discrete", "max_timestep"} - spec.keys()
        if missing:
            raise ConfigError(f"data_spec is missing {sorted(missing)}")
        self.spec = spec
        bb = dict(self.hparams.backbone)
        name, d = bb.pop("name"), bb.pop("d_model")
        # strict=False: options meant for another backbone (after --model.backbone.name=...) are
        # dropped with a warning instead of failing the swap.
        self.backbone = build_backbone(name, d_model=d, strict=False, **bb)
        obs_dim, act_dim = spec["obs_dim"], spec["act_dim"]
        self.embed_timestep = nn.Embedding(spec["max_timestep"], d)
        self.embed_return = nn.Linear(1, d)
        self.embed_state = nn.Linear(obs_dim, d)
        # Discrete: one extra index means "no previous action" (stacked layout, first step).
        self.embed_action = nn.Embedding(act_dim + 1, d) if spec["discrete"] else nn.Linear(act_dim, d)
        self.embed_ln = nn.LayerNorm(d)
        self.embed_drop = nn.Dropout(self.hparams.embed_dropout)
        self.head = nn.Linear(d, act_dim)
        # GPT-2 initialisation for the agent's own layers too, as Hugging Face's Decision Transformer
        # does; the original DT code leaves them at PyTorch's defaults (the timestep embedding at
        # N(0, 1)). That default lets the timestep vectors swamp the state token and slowed
        # learning on the default Pendulum job (returns in benchmarks/README.md).
        for layer in (self.embed_timestep, self.embed_return, self.embed_state, self.embed_action, self.head):
            nn.init.normal_(layer.weight, mean=0.0, std=0.02)
            if getattr(layer, "bias", None) is not None:
                nn.init.zeros_(layer.bias)
        # From the data (checkpoints also restore them as buffers); 0 and 1 if the spec has none.
        obs_mean, obs_std = spec.get("obs_mean"), spec.get("obs_std")
        self.register_buffer("obs_mean", torch.zeros(obs_dim) if obs_mean is None else _floats(obs_mean))
        self.register_buffer("obs_std", torch.ones(obs_dim) if obs_std is None else _floats(obs_std))
        low, high = spec.get("action_low"), spec.get("action_high")
        self.squash = not spec["discrete"] and low is not None and high is not None
        self.register_buffer(
            "action_low", torch.tensor(low if self.squash else [-1.0] * act_dim, dtype=torch.float32)
        )
        self.register_buffer(
            "action_high", torch.tensor(high if self.squash else [1.0] * act_dim, dtype=torch.float32)
        )

    # ----------------------------------------------------------------- tokens and forward
    def normalize_actions(self, actions: Tensor) -> Tensor:
        """Continuous actions from env bounds to [-1, 1] (identity for unbounded spaces)."""
        return (actions - self.action_low) / (self.action_high - self.action_low) * 2 - 1

    def denormalize_actions(self, actions: Tensor) -> Tensor:
        return (actions + 1) / 2 * (self.action_high - self.action_low) + self.action_low

    def _embed_actions(self, actions: Tensor) -> Tensor:
        if self.spec["discrete"]:
            return self.embed_action(actions.long())
        return self.embed_action(self.normalize_actions(actions))

    def _time(self, timesteps: Tensor) -> Tensor:
        return self.embed_timestep(timesteps.clamp(max=self.spec["max_timestep"] - 1))

    def _finish(self, tokens: Tensor) -> Tensor:
        return self.embed_drop(self.embed_ln(tokens))

    def _embed_state(self, observations: Tensor) -> Tensor:
        return self.embed_state((observations - self.obs_mean) / self.obs_std)

    def embed(
        self, observations: Tensor, actions: Tensor, returns_to_go: Tensor, timesteps: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Tokens ``(B, T, D)`` and token mask ``(B, T)`` for windows of K steps.

        Shapes: observations (B K obs), actions (B K A) or (B K) discrete, returns_to_go (B K 1),
        timesteps (B K), mask (B K) bool. T = 3K / 2K (interleaved with / without returns) or K.
        """
        B, K = mask.shape
        t = self._time(timesteps)  # (B K D)
        s = self._embed_state(observations) + t  # (B K D)
        rc = self.hparams.return_conditioned
        if self.hparams.token_layout == "stacked":
            tokens = s + self._embed_previous_actions(actions)
            if rc:
                tokens = tokens + self.embed_return(returns_to_go)
            return self._finish(tokens), mask
        a = self._embed_actions(actions) + t  # (B K D)
        parts = [self.embed_return(returns_to_go) + t, s, a] if rc else [s, a]
        tokens = torch.stack(parts, dim=2).reshape(B, len(parts) * K, -1)  # (B nK D)
        return self._finish(tokens), mask.repeat_interleave(len(parts), dim=1)

    def embed_step(
        self,
        observations: Tensor,
        returns_to_go: Tensor,
        timesteps: Tensor,
        prev_actions: Tensor,
        has_prev: Tensor,
    ) -> list[Tensor]:
        """The tokens ``[(B, D), ...]`` of one step before its action, in feeding order.

        Interleaved: [R_t, s_t] (or [s_t]); stacked: [R_t + s_t + a_{t-1}] with the "none" action
        in rows where ``has_prev`` (B) is False. The interleaved layout's action token comes from
        :meth:`embed_action_step` once the action is chosen.
        """
        t = self._time(timesteps)  # (B D)
        s = self._embed_state(observations) + t
        rc = self.hparams.return_conditioned
        if self.hparams.token_layout == "stacked":
            none = self._embed_none_action(observations.shape[0])
            token = s + torch.where(has_prev[:, None], self._embed_actions(prev_actions), none)
            if rc:
                token = token + self.embed_return(returns_to_go)
            return [self._finish(token)]
        parts = [self.embed_return(returns_to_go) + t, s] if rc else [s]
        return [self._finish(p) for p in parts]

    def embed_action_step(self, actions: Tensor, timesteps: Tensor) -> Tensor:
        """Token ``(B, D)`` of the action just taken (interleaved layout)."""
        return self._finish(self._embed_actions(actions) + self._time(timesteps))

    def _embed_none_action(self, batch: int) -> Tensor:
        if self.spec["discrete"]:
            none = torch.full((batch,), self.spec["act_dim"], dtype=torch.long, device=self.obs_mean.device)
            return self.embed_action(none)
        return self.embed_action(torch.zeros(batch, self.spec["act_dim"], device=self.obs_mean.device))

    def _embed_previous_actions(self, actions: Tensor) -> Tensor:
        """Embedding of a_{t-1} per step ``(B K D)``; the "none" action at the window start."""
        none = self._embed_none_action(actions.shape[0])[:, None]  # (B 1 D)
        return torch.cat([none, self._embed_actions(actions[:, :-1])], dim=1)

    def state_token_index(self) -> slice | None:
        """Positions of the tokens from which actions are predicted (None: every token)."""
        if self.hparams.token_layout == "stacked":
            return None
        return slice(1, None, 3) if self.hparams.return_conditioned else slice(0, None, 2)

    def predict(self, h: Tensor) -> Tensor:
        """Hidden states ``(..., D)`` -> action logits (discrete) or actions in [-1, 1] (continuous)."""
        out = self.head(h)
        return torch.tanh(out) if self.squash else out

    def forward(
        self,
        observations: Tensor,
        actions: Tensor,
        returns_to_go: Tensor,
        timesteps: Tensor,
        mask: Tensor,
        last_step_only: bool = False,
    ) -> Tensor:
        """Predicted actions (or logits) ``(B, K, A)`` for every step of the windows, or
        ``(B, 1, A)`` for the newest step only (``last_step_only``: what a policy acting reads)."""
        tokens, token_mask = self.embed(observations, actions, returns_to_go, timesteps, mask)
        index = self.state_token_index()
        if last_step_only:
            last = range(tokens.shape[1])[index or slice(None)][-1]
            index = slice(last, last + 1)
        # Only the tokens actions are read from: the backbone may skip the others' last layer.
        return self.predict(self.backbone.forward_at(tokens, token_mask, index))

    # ----------------------------------------------------------------- training
    def _loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        pred = self(
            batch["observations"], batch["actions"], batch["returns_to_go"], batch["timesteps"], batch["mask"]
        )
        mask = batch["mask"]
        if self.spec["discrete"]:
            logits, target = pred[mask], batch["actions"][mask].long()
            return F.cross_entropy(logits, target), (logits.argmax(-1) != target).float().mean()
        target = self.normalize_actions(batch["actions"]) if self.squash else batch["actions"]
        loss = F.mse_loss(pred[mask], target[mask])
        return loss, loss.detach()

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss, _ = self._loss(batch)
        # A plain tensor, not a MeanMetric: per-step values need no state, and it is cheaper.
        self.log("train/loss", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        loss, err = self._loss(batch)
        self.val_loss(loss)
        self.val_action_error(err)
        self.log("val/loss", self.val_loss, prog_bar=True)
        # Discrete: error rate; continuous: MSE in the [-1, 1] action scale.
        self.log("val/action_error", self.val_action_error)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        opt = adamw(param_groups(self, hp.weight_decay, hp.lr), lr=hp.lr, betas=tuple(hp.betas))
        total = None
        if hp.get("lr_schedule", "constant") == "cosine":
            total = self.trainer.estimated_stepping_batches
            if not math.isfinite(total):
                raise ConfigError(
                    "lr_schedule='cosine' needs a finite run: set trainer.max_steps or max_epochs"
                )
        final = hp.get("final_lr_ratio", 0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: lr_factor(step, hp.warmup_steps, None if total is None else int(total), final)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ----------------------------------------------------------------- evaluation
    def configure_callbacks(self) -> list[Callback]:
        hp = self.hparams
        callbacks: list[Callback] = [StopOnNonFiniteLoss(), RNGStateCheckpoint()]
        if hp.eval_episodes >= 1:
            callbacks.append(RolloutEvaluation(episodes=hp.eval_episodes, num_envs=hp.eval_num_envs))
        # Ours replace the trainer's default ModelCheckpoint; with enable_checkpointing=False
        # there is none, and nothing is written.
        if not self.trainer.checkpoint_callbacks:
            return callbacks
        monitor = ("val/loss", "min") if hp.eval_episodes < 1 else ("eval/return", "max")
        best = ModelCheckpoint(monitor=monitor[0], mode=monitor[1], filename="best-{step}")
        every = hp.get("checkpoint_every_n_steps") or 0
        return [*callbacks, best, LatestCheckpoint(best, every_n_train_steps=every)]

    def default_target_returns(self) -> list[float]:
        targets = self.hparams.target_returns or self.spec.get("target_returns")
        if not targets:
            raise ConfigError("no target_returns configured and none stored with the data spec")
        return [float(r) for r in targets]

    @torch.no_grad()
    def evaluate_policy(
        self,
        episodes: int = 10,
        num_envs: int = 10,
        seed: int = 0,
        target_returns: list[float] | None = None,
        mode: EvalMode | None = None,
        progress: bool = False,
        env_id: str | None = None,
    ) -> dict[str, Any]:
        """Rollouts on a vector env, one row of results per target return.

        An unconditioned policy (``return_conditioned=False``, e.g. :class:`BCAgent`) ignores the
        target returns: one row, labelled with the data's default target (the best training
        return) so tables line up with DT's, and the report says ``"return_conditioned": false``.
        """
        if self.hparams.return_conditioned:
            targets = target_returns or self.default_target_returns()
            return self._rollouts(targets, episodes, num_envs, seed, mode, progress, env_id)
        report = self._rollouts([0.0], episodes, num_envs, seed, mode, progress, env_id)  # 0: never embedded
        dataset_target = (self.spec.get("target_returns") or [None])[0]
        report["results"][0]["target_return"] = None if dataset_target is None else float(dataset_target)
        report["return_conditioned"] = False
        return report

    def _rollouts(
        self,
        targets: list[float],
        episodes: int,
        num_envs: int,
        seed: int,
        mode: EvalMode | None,
        progress: bool,
        env_id: str | None,
    ) -> dict[str, Any]:
        """The report of :meth:`evaluate_policy`: a row of statistics per target return."""
        env_id = env_id or self.spec.get("env_id")
        if not env_id:
            raise ConfigError("this agent's data had no env id; pass env_id=... to evaluate it")
        mode = mode or self.hparams.eval_mode
        check_env_matches(env_id, self.spec["obs_dim"], self.spec["act_dim"], self.spec["discrete"])
        was_training = self.training
        self.eval()
        rows = []
        try:
            for target in targets:
                policy = DecisionPolicy(self, target_return=target, mode=mode)
                stats = summarize(run_episodes(env_id, policy, episodes, num_envs, seed, progress=progress))
                stats["normalized_score"] = normalized_score(
                    stats["return_mean"], self.spec.get("ref_min_score"), self.spec.get("ref_max_score")
                )
                rows.append({"target_return": float(target), **stats})
        finally:
            self.train(was_training)
        return {"episodes": episodes, "mode": mode, "env_id": env_id, "results": rows}
