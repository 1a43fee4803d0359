"""Tests for envs/mpe.py against docs/mpe.md: the API of envs/__init__.py, the first author's partial observations,
the 25-step time-out, seeding, pickling (checkpoints) and the scripted prey."""

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpe2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmark.studies.mpe_heuristics import play  # noqa: E402
from envs import make_env  # noqa: E402

PRESETS = ["mpe-spread", "mpe-tag", "mpe-adversary"]
SHAPES = {"mpe-spread": (3, 10), "mpe-tag": (3, 12), "mpe-adversary": (2, 11), "mpe-spread-full": (3, 18),
          "mpe-tag-full": (3, 16), "mpe-adversary-full": (2, 10)}  # fmt: skip


def random_episode(env, rng):
    """Observations, rewards and flags of one episode under uniform-random actions."""
    trajectory = [env.reset()[0]]
    done = False
    while not done:
        obs, rewards, terminated, truncated, info = env.step(rng.integers(env.n_actions, size=env.n_agents))
        trajectory.append((obs, rewards, terminated, truncated))
        done = terminated or truncated
    return trajectory, info


def world(env):
    return env.env.env.unwrapped.world  # RecordEpisode -> MPEEnv -> mpe2's parallel env


@pytest.mark.parametrize("name", list(SHAPES))
def test_api_spaces_and_the_time_out(name):
    env = make_env(name, 0)
    n_agents, obs_size = SHAPES[name]
    assert (env.n_agents, env.obs_size, env.n_actions, env.episode_limit) == (n_agents, obs_size, 5, 25)
    trajectory, info = random_episode(env, np.random.default_rng(0))
    assert len(trajectory) == 26 and info["episode"]["l"] == 25
    for obs, rewards, terminated, truncated in trajectory[1:]:
        assert len(obs) == n_agents and all(o.shape == (obs_size,) and o.dtype == np.float32 for o in obs)
        assert len(rewards) == n_agents and all(isinstance(r, float) for r in rewards)
        assert not terminated  # these tasks only time out
    assert [step[3] for step in trajectory[1:]] == [False] * 24 + [True]
    assert info["episode"]["r"] == pytest.approx(sum(sum(step[1]) for step in trajectory[1:]))


@pytest.mark.parametrize("name", list(SHAPES))
def test_the_direct_world_step_is_the_parallel_wrappers(name):
    """MPEEnv.step steps mpe2's world itself; stepping it through mpe2's parallel wrapper, agent by agent, gives the same
    observations, rewards, time-outs and world, bit for bit, over 30 random episodes (resets included)."""

    direct, wrapped = make_env(name, 3).env, make_env(name, 3).env  # the MPEEnv inside RecordEpisode
    rng = np.random.default_rng(0)
    for _ in range(30):
        a, b = direct.reset()[0], wrapped.reset()[0]
        assert all(np.array_equal(x, y) for x, y in zip(a, b))
        done = False
        while not done:
            actions = rng.integers(direct.n_actions, size=direct.n_agents)
            obs_a, rew_a, _, done, _ = direct.step(actions)
            obs_b, rew_b, _, done_b, _ = wrapped.step_through_wrapper(actions)
            assert all(np.array_equal(x, y) for x, y in zip(obs_a, obs_b)) and rew_a == rew_b and done == done_b
        positions = [[e.state.p_pos.tolist() for e in env.env.unwrapped.world.entities] for env in (direct, wrapped)]
        assert positions[0] == positions[1]


@pytest.mark.parametrize("name", PRESETS)
def test_same_seed_same_episodes(name):
    def episodes(seed):
        env, rng = make_env(name, seed), np.random.default_rng(0)
        return [np.concatenate([np.concatenate(s[0]) for s in random_episode(env, rng)[0][1:]]) for _ in range(3)]

    first, again, other = episodes(5), episodes(5), episodes(6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], other[0])
    assert not np.array_equal(first[0], first[1])  # later resets continue the generator


def expected_partial(name, agent, entities):
    """The author's -v2 observation, written out from the world state by plain argmin over distances."""
    def rel(e):
        return e.state.p_pos - agent.state.p_pos

    def nearest(group):
        return group[int(np.argmin([np.linalg.norm(rel(e)) for e in group]))]

    others = [a for a in entities.agents if a is not agent]
    if name == "mpe-spread":
        other = nearest(others)
        own = [agent.state.p_vel, agent.state.p_pos]
        return np.concatenate(own + [rel(nearest(entities.landmarks)), rel(other), other.state.c])
    if name == "mpe-tag":
        prey = nearest([a for a in others if not a.adversary])
        return np.concatenate([agent.state.p_vel, agent.state.p_pos, rel(nearest(entities.landmarks)),
                               rel(nearest([a for a in others if a.adversary])), rel(prey), prey.state.p_vel])  # fmt: skip
    other = nearest(others)
    return np.concatenate([rel(agent.goal_a), *[rel(lm) for lm in entities.landmarks], rel(other), other.color])


@pytest.mark.parametrize("name", PRESETS)
def test_partial_observations_are_the_authors(name):
    """Every learner's observation at every step equals its recomputation from the world state; for Spread the wrapper
    returns mpe2's own neighbour option, so this also checks that option against the written-out view."""
    env, rng = make_env(name, 1), np.random.default_rng(1)
    env.reset()
    learner_is = {"mpe-spread": lambda a: True, "mpe-tag": lambda a: a.adversary, "mpe-adversary": lambda a: not a.adversary}
    checked = 0
    for _ in range(60):
        obs, _, terminated, truncated, _ = env.step(rng.integers(5, size=env.n_agents))
        learners = [a for a in world(env).agents if learner_is[name](a)]
        for agent, o in zip(learners, obs):
            np.testing.assert_allclose(o, expected_partial(name, agent, world(env)).astype(np.float32), atol=1e-6)
            checked += 1
        if terminated or truncated:
            env.reset()
    assert checked == 60 * env.n_agents


@pytest.mark.parametrize("name", PRESETS)
def test_a_pickled_env_continues_as_the_original(name):
    """Checkpoints pickle the envs; mpe2 itself pickles only its constructor's arguments."""
    env, rng = make_env(name, 3), np.random.default_rng(3)
    random_episode(env, rng)
    obs, _ = env.reset()
    copy = pickle.loads(pickle.dumps(env))
    for _ in range(2):  # the rest of this episode, then a whole new one from the env's own generator
        for step in range(25):
            actions = rng.integers(5, size=env.n_agents)
            a, b = env.step(actions), copy.step(actions)
            assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0])) and a[1:4] == b[1:4]
        assert np.array_equal(np.concatenate(env.reset()[0]), np.concatenate(copy.reset()[0]))


def test_frames_are_drawn_headless():
    env = make_env("mpe-tag", 0)
    env.reset()
    first = env.render()
    env.step([2, 2, 2])
    env.step([2, 2, 2])  # mpe2 moves a body by its previous velocity: the first step leaves every position as it was
    second = env.render()
    assert first.shape == (700, 700, 3) and first.dtype == np.uint8 and (first != second).any()


def test_the_scripted_prey_evades():
    """Three greedy chasers catch a prey that stands still about 6 times an episode; the scripted prey far less often."""
    _, caught_still, _ = play("mpe-tag", "heuristic", 20, 0, still_opponent=True)
    _, caught, _ = play("mpe-tag", "heuristic", 20, 0)
    assert caught_still > 4 and caught < caught_still / 5, (caught, caught_still)


def test_unknown_mpe_name_lists_the_presets():
    with pytest.raises(ValueError, match="mpe-spread, mpe-tag, mpe-adversary"):
        make_env("mpe-push", 0)
