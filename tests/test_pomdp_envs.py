"""Rules of the POMDP environments: rewards, what is observable when, step limits, seeding."""

from __future__ import annotations

import importlib
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import lit_seqrl.envs as envs
from lit_seqrl.envs import CarFlagEnv, CountingHallwayEnv, HallwayEnv, HeavenHellEnv, MemoryCardsEnv, TMazeEnv
from lit_seqrl.envs.hallway import DOWN, FORWARD, LEFT, RIGHT, STAY, TURN_AROUND, TURN_LEFT, TURN_RIGHT, UP

CORE_IDS = [
    "lit_seqrl/CarFlag-v0",
    "lit_seqrl/HeavenHell-v0",
    "lit_seqrl/MemoryCards-v0",
    "lit_seqrl/Hallway-v0",
    "lit_seqrl/TMaze-v0",
    "lit_seqrl/CountingHallway-v0",
]


def rollout(env: gym.Env, actions: list[int], seed: int) -> list[tuple]:
    obs, _ = env.reset(seed=seed)
    out = [(np.asarray(obs).tolist(),)]
    for a in actions:
        obs, r, term, trunc, _ = env.step(a)
        out.append((np.asarray(obs).tolist(), r, term, trunc))
        if term or trunc:
            break
    return out


# ---------------------------------------------------------------- registration and API
def test_import_registers_all_ids_idempotently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # re-registering would warn "Overriding environment"
        importlib.reload(envs)
        envs.register_envs()
    for env_id in envs.ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize("env_id", CORE_IDS)
def test_check_env_passes(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the checker reports problems as warnings
        check_env(gym.make(env_id).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", CORE_IDS)
def test_seeding_is_deterministic(env_id: str) -> None:
    env = gym.make(env_id)
    actions = [int(a) for a in np.random.default_rng(0).integers(env.action_space.n, size=60)]
    assert rollout(env, actions, seed=3) == rollout(env, actions, seed=3)
    firsts = {str(rollout(env, actions[:30], seed=s)) for s in range(8)}
    assert len(firsts) > 1, "different seeds should give different episodes"


# ---------------------------------------------------------------- Car Flag
def drive(env: CarFlagEnv, seed: int, policy) -> tuple[float, bool, bool, int, list[np.ndarray]]:
    obs, _ = env.reset(seed=seed)
    seen = [obs]
    total, t = 0.0, 0
    while True:
        obs, r, term, trunc, _ = env.step(policy(obs))
        seen.append(obs)
        total, t = total + r, t + 1
        if term or trunc:
            return total, term, trunc, t, seen


def test_car_flag_priest_signal_only_near_priest_and_reward_by_side() -> None:
    env = CarFlagEnv()
    sides = set()
    for seed in range(12):
        total, term, _, _, seen = drive(env, seed, lambda o: 2)  # always push right
        assert term and seen[-1][0] >= 1.0
        signals = {float(o[2]) for o in seen if abs(o[0] - 0.5) <= 0.2}
        assert len(signals) == 1 and signals <= {-1.0, 1.0}, "the priest reveals one side, consistently"
        assert all(o[2] == 0.0 for o in seen if abs(o[0] - 0.5) > 0.2 + 1e-6), (
            "no signal away from the priest"
        )
        side = signals.pop()
        sides.add(side)
        assert total == (1.0 if side > 0 else -1.0), "the right flag pays +1 only when heaven is on the right"
    assert sides == {-1.0, 1.0}


def test_car_flag_memory_policy_always_wins_and_step_limit() -> None:
    env = CarFlagEnv()
    for seed in range(10):
        memory: dict[str, float] = {}

        def policy(o: np.ndarray, memory: dict[str, float] = memory) -> int:
            if o[2] != 0:
                memory["side"] = float(o[2])
            return 2 if memory.get("side", 1.0) > 0 else 0

        total, term, _, _, _ = drive(env, seed, policy)
        assert term and total == 1.0
    total, term, trunc, t, _ = drive(env, 0, lambda o: 1)  # never push: the car stays put
    assert (total, term, trunc, t) == (0.0, False, True, 200)


# ---------------------------------------------------------------- T-maze (small Heaven/Hell)
def heaven_side(env: TMazeEnv) -> int:
    """Walk to the priest and read the answer: 0 = left, 1 = right."""
    obs, *_ = env.step(2)  # down to the priest
    answer = obs[-2:]
    assert answer.sum() == 1.0
    return int(answer.argmax())


@pytest.mark.parametrize("go_to_heaven", [True, False])
def test_tmaze_rewards(go_to_heaven: bool) -> None:
    env = TMazeEnv(corridor_length=3)
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        assert obs[-2:].sum() == 0.0, "no answer at the start"
        side = heaven_side(env)
        for _ in range(env.corridor_length + 1):
            obs, r, term, trunc, _ = env.step(0)  # up to the junction
            assert obs[-2:].sum() == 0.0, "the priest's answer is visible on his cell only"
            assert r == 0.0 and not term
        target = side if go_to_heaven else 1 - side
        obs, r, term, trunc, info = env.step(3 if target == 0 else 1)
        assert term and not trunc
        assert r == (1.0 if go_to_heaven else -1.0) and info["is_success"] == go_to_heaven
        assert env._t == env.corridor_length + 3, "the optimal path's length, as documented"


def test_tmaze_walls_and_step_limit() -> None:
    env = TMazeEnv(max_steps=50)
    obs0, _ = env.reset(seed=0)
    obs, *_ = env.step(1)  # a wall to the right of the start: stay
    np.testing.assert_array_equal(obs, obs0)
    for t in range(2, 51):
        _, r, term, trunc, _ = env.step(1)
        assert r == 0.0 and not term
        assert trunc == (t == 50)


# ---------------------------------------------------------------- Memory Cards
def test_memory_cards_rules() -> None:
    env = MemoryCardsEnv(n_pairs=3)
    obs, _ = env.reset(seed=1)
    faces = env._faces  # hidden state, read by the test only
    assert (obs > 0).sum() == 1 and obs[env.shown] == faces[env.shown], "exactly the shown card is face up"
    shown = env.shown
    _, r, term, _, _ = env.step(shown)  # naming the shown card itself is wrong
    assert r == -1.0 and not term
    shown = env.shown
    wrong = next(i for i in range(env.n_cards) if faces[i] != faces[shown])
    _, r, _, _, _ = env.step(wrong)
    assert r == -1.0
    removed = 0
    while True:
        shown = env.shown
        partner = next(i for i in range(env.n_cards) if i != shown and faces[i] == faces[shown])
        obs, r, term, trunc, info = env.step(partner)
        removed += 2
        assert r == 0.0
        assert (obs == env.removed).sum() == removed
        if term:
            break
    assert info["is_success"] and not trunc and removed == env.n_cards


def test_memory_cards_step_limit() -> None:
    env = MemoryCardsEnv(n_pairs=5, max_steps=50)
    env.reset(seed=0)
    for t in range(1, 51):
        _, r, term, trunc, info = env.step(env.shown)  # always wrong
        assert r == -1.0 and not term
        assert trunc == (t == 50)
    assert info["is_success"] is False


# ---------------------------------------------------------------- counting hallway
def test_counting_hallway_observations_are_aliased_and_counting_wins() -> None:
    env = CountingHallwayEnv(length=8, goal=5)
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        assert env.position != env.goal
        while obs[0] != 1.0:  # walk left until the wall is seen
            obs, *_ = env.step(0)
        assert env.position == 0
        inner = set()
        for _ in range(env.goal):
            obs, *_ = env.step(1)
            inner.add(tuple(obs))
        assert len(inner) == 1, "every inner cell, the door included, looks the same"
        _, r, term, _, info = env.step(2)
        assert (r, term, info["is_success"]) == (1.0, True, True)
    env.reset(seed=0)
    env.step(1 if env.position < env.goal - 1 else 0)
    if env.position != env.goal:
        _, r, term, _, info = env.step(2)
        assert (r, term, info["is_success"]) == (-1.0, True, False)


def test_counting_hallway_step_limit() -> None:
    env = CountingHallwayEnv(length=6)
    env.reset(seed=0)
    for t in range(1, 25):
        _, r, term, trunc, _ = env.step(0)
        assert r == 0.0 and not term and trunc == (t == 24)


# ---------------------------------------------------------------- MiniGrid (optional)
def test_minigrid_memory_wrapper() -> None:
    pytest.importorskip("minigrid")
    env = gym.make("lit_seqrl/MiniGridMemory-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the checker only notes that a wrapper is being checked
        check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (7 * 7 * 3 + 4,) and obs.dtype == np.float32
    assert env.observation_space.contains(obs)
    assert obs[-4:].sum() == 1.0
    actions = [2, 2, 1, 2, 0, 2]
    assert rollout(env, actions, seed=5) == rollout(env, actions, seed=5)


# ---------------------------------------------------------------- Heaven/Hell (gym-pomdps' heavenhell_3)
# The specification's moves, cell label -> next label per action; any other move stays put.
# Written out from the published heavenhell_3 file; shares nothing with the environment's code.
HH3_MOVES = {
    0: {0: 1, 1: 2, 2: 3, 10: 0},  # N
    1: {0: 10, 1: 0, 2: 1, 3: 2},  # S
    2: {3: 7, 4: 3, 5: 4, 7: 8, 8: 9, 10: 11, 11: 12, 12: 13},  # E
    3: {3: 4, 4: 5, 5: 6, 7: 3, 8: 7, 9: 8, 11: 10, 12: 11, 13: 12},  # W
}


def place(env: HeavenHellEnv, label: int) -> None:
    env._cell = next(cell for cell, k in env.cells.items() if k == label)


@pytest.mark.parametrize("heaven_left", [True, False])
def test_heaven_hell_transitions_and_observations_match_the_specification(heaven_left: bool) -> None:
    env = HeavenHellEnv()
    env.reset(seed=0)
    env._heaven_left = heaven_left
    assert env.observation_space.n == 15 and env.action_space.n == 4
    for label in range(14):
        if label in (6, 9):
            continue
        for action in range(4):
            place(env, label)
            env._t = 0
            obs, r, term, trunc, _ = env.step(action)
            expected = HH3_MOVES[action].get(label, label)
            assert env.cells[env.cell] == expected, (label, action)
            want_obs = expected if expected != 13 else (13 if heaven_left else 14)
            assert obs == want_obs and r == 0.0 and not term and not trunc
    for end, heaven in ((6, heaven_left), (9, not heaven_left)):
        for action in range(4):  # any action at an arm's end ends the episode
            place(env, end)
            _, r, term, _, info = env.step(action)
            assert term and r == (1.0 if heaven else -1.0) and info["is_success"] == heaven


def test_heaven_hell_shortest_win_and_start() -> None:
    env = HeavenHellEnv()
    worlds = set()
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        assert obs == 0 and env.cells[env.cell] == 0, "the start cell, in either world"
        for a in (1, 2, 2, 2):  # down, then east to the priest
            obs, *_ = env.step(a)
        assert obs in (13, 14)
        worlds.add(obs)
        arm = 3 if obs == 13 else 2  # 'left' -> west
        for a in (3, 3, 3, 0, 0, 0, 0, arm, arm, arm, 0):
            obs, r, term, _, info = env.step(a)
        assert (r, term, info["is_success"], env._t) == (1.0, True, True, 15)
    assert worlds == {13, 14}


def test_heaven_hell_step_limit() -> None:
    env = HeavenHellEnv(max_steps=100)
    env.reset(seed=0)
    for t in range(1, 101):
        _, r, term, trunc, info = env.step(2)  # east from the start: a wall
        assert r == 0.0 and not term and trunc == (t == 100)
    assert info["is_success"] is False


# ---------------------------------------------------------------- Littman's Hallway
def test_hallway_layout_walls_landmarks_and_goal() -> None:
    env = HallwayEnv(p_action=1.0, p_wall_hit=1.0, p_wall_false=0.0)  # noise off
    env.reset(seed=0)
    assert len(env.cells) * 4 == 60 and len(env.starts) == 56
    assert env.observation_space.n == 20 and env.action_space.n == 5
    # (cell, heading) -> walls as front + 2 right + 4 back + 8 left, from the published layout
    cases = {
        ((0, 0), UP): 1 + 4 + 8,
        ((0, 1), RIGHT): 2 + 8,
        ((0, 2), UP): 1,  # an alcove behind
        ((0, 10), LEFT): 2 + 4 + 8,
        ((1, 2), UP): 2 + 4 + 8,
        ((1, 4), LEFT): 1 + 4 + 8,
    }
    for (cell, heading), pattern in cases.items():
        env._cell, env._heading = cell, heading
        assert env._obs() == pattern, (cell, heading)
    for k, col in enumerate((2, 4, 6)):  # facing south in a non-goal alcove: its landmark
        env._cell, env._heading = (1, col), DOWN
        assert env._obs() == 16 + k
    env._cell, env._heading, env._t = (0, 8), DOWN, 0
    obs, r, term, trunc, info = env.step(FORWARD)
    assert (obs, r, term, trunc, info["is_success"]) == (19, 1.0, True, False, True)
    env._cell, env._heading = (0, 0), LEFT
    env.step(FORWARD)
    assert env.state == ((0, 0), LEFT), "forward into a wall stays"
    for action, heading in ((TURN_RIGHT, UP), (TURN_LEFT, DOWN), (TURN_AROUND, RIGHT), (STAY, LEFT)):
        env._cell, env._heading = (0, 5), LEFT
        env.step(action)
        assert env.state == ((0, 5), heading)


def test_hallway_noise_rates() -> None:
    env = HallwayEnv()
    env.reset(seed=1)
    env._cell, env._heading = (0, 0), UP  # walls in front, behind and left; open to the right
    bits = np.array([[(env._obs() >> b) & 1 for b in range(4)] for _ in range(4000)])
    np.testing.assert_allclose(bits.mean(0), [0.9, 0.05, 0.9, 0.9], atol=0.025)
    outcomes = {h: 0 for h in range(4)}
    moved = 0
    for _ in range(4000):
        env._cell, env._heading, env._t = (0, 5), UP, 0
        env.step(TURN_RIGHT)
        outcomes[env._heading] += 1
        moved += env._cell != (0, 5)
    # turn right 0.8; stay, forward (into the wall), turn left, turn around 0.05 each
    freq = {h: n / 4000 for h, n in outcomes.items()}
    assert abs(freq[RIGHT] - 0.8) < 0.03 and abs(freq[LEFT] - 0.05) < 0.015 and abs(freq[DOWN] - 0.05) < 0.015
    assert abs(freq[UP] - 0.10) < 0.02 and moved == 0


def test_hallway_step_limit() -> None:
    env = HallwayEnv()
    env.reset(seed=0)
    env._cell = (0, 0)
    for t in range(1, 101):
        _, r, term, trunc, info = env.step(STAY)
        assert r == 0.0 and not term and trunc == (t == 100)
    assert info["is_success"] is False
