"""DecisionAgent: token layouts, masking, losses, optimiser groups, window == recurrent acting."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lit_seqrl.agents import DecisionAgent
from lit_seqrl.agents.base import param_groups
from lit_seqrl.agents.decision_policy import DecisionPolicy
from tests.helpers import PENDULUM_SPEC

PENDULUM = {**PENDULUM_SPEC, "context_len": 6}
CARTPOLE = {**PENDULUM, "obs_dim": 4, "act_dim": 2, "discrete": True, "env_id": "CartPole-v1", "max_timestep": 501,
            "action_low": None, "action_high": None, "target_returns": [500.0]}  # fmt: skip
SMALL_TF = {"name": "transformer", "d_model": 32, "n_layers": 2, "n_heads": 2, "dropout": 0.0}


def _agent(spec=PENDULUM, **kw) -> DecisionAgent:
    torch.manual_seed(0)
    kw.setdefault("backbone", SMALL_TF)
    return DecisionAgent(data_spec=spec, embed_dropout=0.0, **kw).eval()


def _batch(spec, B=4, K=6, pad=2):
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[:, :pad] = False
    if spec["discrete"]:
        actions = torch.randint(0, spec["act_dim"], (B, K), generator=g)
    else:
        actions = torch.rand(B, K, spec["act_dim"], generator=g) * 4 - 2
    return {
        "observations": torch.randn(B, K, spec["obs_dim"], generator=g),
        "actions": actions,
        "returns_to_go": torch.randn(B, K, 1, generator=g),
        "timesteps": torch.arange(K).expand(B, K).clone(),
        "mask": mask,
    }


@pytest.mark.parametrize("layout", ["interleaved", "stacked"])
@pytest.mark.parametrize("spec", [PENDULUM, CARTPOLE], ids=["continuous", "discrete"])
def test_padding_does_not_change_the_loss(layout, spec):
    agent = _agent(spec, token_layout=layout)
    batch = _batch(spec)
    loss, _ = agent._loss(batch)
    noisy = {k: v.clone() for k, v in batch.items()}
    noisy["observations"][:, :2] += 100.0
    noisy["returns_to_go"][:, :2] -= 50.0
    loss2, _ = agent._loss(noisy)
    assert torch.allclose(loss, loss2, atol=1e-6)


def test_continuous_loss_is_mse_in_unit_action_scale_on_real_steps():
    agent = _agent()
    batch = _batch(PENDULUM)
    pred = agent(**batch)
    assert pred.shape == (4, 6, 1) and pred.abs().max() <= 1.0  # tanh head
    target = batch["actions"] / 2.0  # bounds [-2, 2] -> [-1, 1]
    m = batch["mask"]
    expected = ((pred - target)[m] ** 2).mean()
    torch.testing.assert_close(agent._loss(batch)[0], expected)


def test_discrete_loss_is_masked_cross_entropy():
    agent = _agent(CARTPOLE)
    batch = _batch(CARTPOLE)
    logits = agent(**batch)
    m = batch["mask"]
    expected = F.cross_entropy(logits[m], batch["actions"][m])
    torch.testing.assert_close(agent._loss(batch)[0], expected)


def test_interleaved_predicts_from_state_token_only():
    """Changing a step's own action must not change that step's prediction (nor earlier ones)."""
    agent = _agent()
    batch = _batch(PENDULUM, pad=0)
    pred = agent(**batch)
    changed = {k: v.clone() for k, v in batch.items()}
    changed["actions"][:, 3] *= -1
    pred2 = agent(**changed)
    torch.testing.assert_close(pred[:, :4], pred2[:, :4])
    assert not torch.allclose(pred[:, 4:], pred2[:, 4:])


def test_param_groups_decay_only_weight_matrices():
    agent = _agent()
    groups = param_groups(agent, weight_decay=0.1, lr=1e-3)
    by_id = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert by_id[id(agent.head.weight)] == 0.1
    assert by_id[id(agent.head.bias)] == 0.0
    assert by_id[id(agent.embed_ln.weight)] == 0.0
    assert by_id[id(agent.embed_timestep.weight)] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(agent.parameters()))


@pytest.mark.parametrize("layout", ["interleaved", "stacked"])
@pytest.mark.parametrize("spec", [PENDULUM, CARTPOLE], ids=["continuous", "discrete"])
def test_window_and_recurrent_acting_agree_within_the_first_window(layout, spec):
    """Before the context is full, window mode (left-padded, masked) sees exactly what the
    recurrent state has seen since the episode start, so both choose the same actions."""
    agent = _agent(spec, token_layout=layout)
    # The GPT-2 head init leaves an untrained agent's logits within float noise of each other;
    # a wide head makes the argmax a real decision that both modes must reproduce.
    torch.nn.init.normal_(agent.head.weight, std=1.0)
    rng = np.random.default_rng(0)
    m, K = 3, spec["context_len"]
    window, recurrent = (DecisionPolicy(agent, -150.0, mode) for mode in ("window", "recurrent"))
    for p in (window, recurrent):
        p.reset(np.ones(m, dtype=bool))
    for t in range(K):
        obs = rng.normal(size=(m, spec["obs_dim"])).astype(np.float32)
        a_w, a_r = window.act(obs), recurrent.act(obs)
        np.testing.assert_allclose(a_w, a_r, rtol=1e-4, atol=1e-5, err_msg=f"step {t}")
        rewards = rng.normal(size=m)
        window.observe(rewards)
        recurrent.observe(rewards)
        if t == 2:  # an episode ends in row 1: both modes restart that row only
            rows = np.array([False, True, False])
            window.reset(rows)
            recurrent.reset(rows)


def test_return_to_go_is_decremented_by_scaled_rewards():
    policy = DecisionPolicy(_agent(), target_return=-150.0)
    policy.reset(np.ones(2, dtype=bool))
    policy.act(np.zeros((2, 3), dtype=np.float32))
    policy.observe(np.array([-10.0, -20.0]))
    torch.testing.assert_close(policy.rtg.float(), torch.tensor([-1.4, -1.3]))
    delayed = DecisionPolicy(_agent({**PENDULUM, "delayed_reward": True}), target_return=-150.0)
    delayed.reset(np.ones(2, dtype=bool))
    delayed.observe(np.array([-10.0, -20.0]))
    torch.testing.assert_close(delayed.rtg.float(), torch.tensor([-1.5, -1.5]))


def test_bounded_actions_map_to_the_box_and_unbounded_ones_stay_raw():
    """tanh outputs in [-1, 1] map linearly onto [low, high] (asymmetric here); without bounds the
    head's output is the action, unsquashed, and the loss reads raw actions."""
    bounded = _agent({**PENDULUM, "act_dim": 2, "action_low": [-3.0, 0.0], "action_high": [1.0, 10.0]})
    unit = torch.tensor([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [0.5, -0.5]])
    expected = torch.tensor([[-3.0, 0.0], [-1.0, 5.0], [1.0, 10.0], [0.0, 2.5]])
    torch.testing.assert_close(bounded.denormalize_actions(unit), expected)
    torch.testing.assert_close(bounded.normalize_actions(expected), unit)
    free = _agent({**PENDULUM, "action_low": None, "action_high": None})
    assert not free.squash and bounded.squash
    h = torch.full((2, 1, 32), 5.0)
    torch.nn.init.constant_(free.head.weight, 1.0)
    torch.testing.assert_close(free.predict(h), free.head(h))  # no tanh: far outside [-1, 1]
    assert free.predict(h).abs().min() > 1.0


def test_discounted_return_to_go_does_not_drift_on_long_episodes():
    """Rewards r_t = x_t - gamma x_{t+1} keep the exact return-to-go on the bounded path x. Each
    (rtg - r) / gamma multiplies the rounding error by 1 / gamma (1.4e9 over 200 steps at
    gamma = 0.9), so float32 arithmetic leaves x far behind; float64 stays within 1e-6."""
    gamma, steps = 0.9, 200
    x = np.random.default_rng(0).uniform(1.0, 2.0, size=steps + 1)
    policy = DecisionPolicy(_agent({**PENDULUM, "gamma": gamma, "reward_scale": 1.0}), float(x[0]))
    policy.reset(np.ones(2, dtype=bool))
    for t in range(steps):
        policy.observe(np.full(2, x[t] - gamma * x[t + 1]))
    np.testing.assert_allclose(policy.rtg.cpu().numpy(), x[-1], rtol=1e-6)


def test_bad_agent_options_are_clear_errors():
    with pytest.raises(ValueError, match="token_layout"):
        DecisionAgent(token_layout="diagonal")
    with pytest.raises(ValueError, match="eval_mode"):
        DecisionAgent(eval_mode="batch")
    with pytest.raises(ValueError, match="needs a 'name'"):
        DecisionAgent(backbone={"d_model": 8})


def test_param_groups_honour_backbone_marks():
    agent = _agent(backbone={"name": "s4", "d_model": 16, "n_layers": 1, "d_state": 8})
    groups = param_groups(agent, weight_decay=0.1, lr=3e-3)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    ssm = [p for n, p in agent.backbone.named_parameters() if n.endswith("log_dt")]
    assert ssm, "expected S4's log_dt parameters"
    for p in ssm:  # capped at 1e-3 and no weight decay, as S4 trains them
        assert lr_of[id(p)] == (1e-3, 0.0)
    assert lr_of[id(agent.head.weight)] == (3e-3, 0.1)


@pytest.mark.parametrize("layout", ["interleaved", "stacked"])
@pytest.mark.parametrize("return_conditioned", [True, False])
def test_last_step_only_is_the_newest_prediction(layout, return_conditioned):
    agent = _agent(token_layout=layout, return_conditioned=return_conditioned)
    batch = _batch(PENDULUM)
    args = [batch[k] for k in ("observations", "actions", "returns_to_go", "timesteps", "mask")]
    full = agent(*args)
    last = agent(*args, last_step_only=True)
    assert last.shape == (4, 1, 1)
    torch.testing.assert_close(last, full[:, -1:])


def test_lr_factor_warms_up_then_holds_or_decays_by_cosine():
    from lit_seqrl.agents.base import lr_factor

    assert lr_factor(0, 10) == pytest.approx(0.1)
    assert lr_factor(9, 10) == 1.0 and lr_factor(5000, 10) == 1.0  # constant after warm-up
    assert lr_factor(4, 10, total=110) == pytest.approx(0.5)  # warm-up is the same with decay
    assert lr_factor(10, 10, total=110, final=0.1) == pytest.approx(1.0)
    assert lr_factor(60, 10, total=110, final=0.1) == pytest.approx(0.55)  # half-way: the mean
    assert lr_factor(110, 10, total=110, final=0.1) == pytest.approx(0.1)
    assert lr_factor(500, 10, total=110, final=0.1) == pytest.approx(0.1)  # stays at the floor


def test_cosine_schedule_follows_the_trainer_budget_and_bad_options_fail():
    agent = _agent(lr_schedule="cosine", warmup_steps=2, final_lr_ratio=0.2)
    agent.trainer = type("T", (), {"estimated_stepping_batches": 12})()
    sched = agent.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(14):
        lrs.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    assert lrs[1] == pytest.approx(1e-4) and lrs[12] == pytest.approx(2e-5) and lrs[13] == pytest.approx(2e-5)
    assert all(a >= b for a, b in itertools.pairwise(lrs[1:]))
    with pytest.raises(ValueError, match="lr_schedule"):
        _agent(lr_schedule="linear")
    with pytest.raises(ValueError, match="final_lr_ratio"):
        _agent(final_lr_ratio=1.5)


def test_forward_compiles_to_one_graph_with_padding_and_dropout():
    """torch.compile(fullgraph=True) fails on any graph break: the padding check, or the CPU
    dropout's random_, would be one. Compiled acting must equal eager acting."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    agent = DecisionAgent(data_spec=PENDULUM, backbone={**SMALL_TF, "dropout": 0.1}, embed_dropout=0.1)
    batch = _batch(PENDULUM)
    args = [batch[k] for k in ("observations", "actions", "returns_to_go", "timesteps", "mask")]
    compiled = torch.compile(agent.forward, fullgraph=True, backend="aot_eager")
    out = compiled(*args)
    out.pow(2).sum().backward()
    assert out.shape == (4, 6, 1)
    grads = [p.grad for p in agent.backbone.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    agent.eval()
    with torch.no_grad():
        expected = agent(*args, last_step_only=True)
        torch.testing.assert_close(compiled(*args, last_step_only=True), expected, rtol=1e-5, atol=1e-6)


def _act_steps(policy: DecisionPolicy, steps: int = 8, m: int = 3) -> np.ndarray:
    """Actions ``(steps, m, A)`` over a run that restarts row 1 at step 2, window sliding past K."""
    rng = np.random.default_rng(0)
    policy.reset(np.ones(m, dtype=bool))
    out = []
    for t in range(steps):
        out.append(policy.act(rng.normal(size=(m, 3)).astype(np.float32)))
        policy.observe(rng.normal(size=m))
        if t == 2:
            policy.reset(np.array([False, True, False]))
    return np.stack(out)


def test_compiled_acting_equals_eager_and_falls_back_with_a_warning(monkeypatch):
    agent = _agent()
    torch.nn.init.normal_(agent.head.weight, std=1.0)
    eager = _act_steps(DecisionPolicy(agent, -150.0))
    calls, real_compile = [], torch.compile

    def compile_(fn, **kw):  # the real compile, on a backend that needs no C++ toolchain
        compiled = real_compile(fn, backend="aot_eager")
        return lambda *a, **k: calls.append(1) or compiled(*a, **k)

    torch._dynamo.reset()
    with monkeypatch.context() as mp:
        mp.setattr(torch, "compile", compile_)
        policy = DecisionPolicy(agent, -150.0, compile=True)
        np.testing.assert_allclose(_act_steps(policy), eager, rtol=1e-5, atol=1e-6)
        assert len(calls) == 8  # every step went through the compiled forward
        # Between validations the weights change: a new policy reuses the graph and sees them.
        graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        assert graphs >= 1
        with torch.no_grad():
            agent.head.weight.mul_(-2.0)
        np.testing.assert_allclose(
            _act_steps(DecisionPolicy(agent, -150.0, compile=True)),
            _act_steps(DecisionPolicy(agent, -150.0)),
            rtol=1e-5,
            atol=1e-6,
        )
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
        assert DecisionPolicy(agent, -150.0, mode="recurrent", compile=True).forward is agent

    def broken(fn, **kw):
        def fail(*a, **k):
            raise RuntimeError("no C++ compiler")

        return fail

    monkeypatch.setattr(torch, "compile", broken)
    policy = DecisionPolicy(agent, -150.0, compile=True)
    with pytest.warns(UserWarning, match="acting eagerly: no C\\+\\+ compiler"):
        np.testing.assert_allclose(_act_steps(policy), _act_steps(DecisionPolicy(agent, -150.0)))


def test_eval_compile_is_the_policys_default():
    agent = _agent(eval_compile=True)
    assert DecisionPolicy(agent, -150.0).forward is not agent
    assert DecisionPolicy(agent, -150.0, compile=False).forward is agent
    plain = _agent()
    assert DecisionPolicy(plain, -150.0).forward is plain
