"""The LBF wrapper: the paper-era spawn rules of the presets, seeding, and how an episode ends."""

import numpy as np
import pytest

from envs import make_env
from envs.lbf import PRESETS

RAW = {name: f"{name}-2.0" for name in PRESETS}  # the same task under lbforaging 2.0's rules


def spawns(name, resets, seed=0):
    """(food levels, L = sum of the three lowest agent levels, agent positions) after each of `resets` resets."""
    env = make_env(name, seed)
    game = env.env.env  # RecordEpisode -> LBFEnv -> the lbforaging env
    for _ in range(resets):
        env.reset()
        levels = sorted(player.level for player in game.players)
        yield game.field[game.field > 0], sum(levels[:3]), [player.position for player in game.players], game.field.shape


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_use_the_1x_spawn_rules_and_2_0_does_not(preset):
    top_food, last_line = 0, 0
    for food, L, positions, shape in spawns(preset, 1000):
        assert len(food) > 0 and food.min() >= 1 and food.max() <= L - 1  # 1.x: randint(1, L), L excluded
        assert all(row < shape[0] - 1 and col < shape[1] - 1 for row, col in positions)  # 1.x: never the last row/col
    for food, L, positions, shape in spawns(RAW[preset], 1000):
        assert food.max() <= L
        top_food += (food == L).sum()
        last_line += sum(row == shape[0] - 1 or col == shape[1] - 1 for row, col in positions)
    assert top_food > 0 and last_line > 0  # lbforaging 2.0's rules reach both


def test_raw_ids_keep_lbforaging_2_0():
    assert any((food == L).any() for food, L, _, _ in spawns("Foraging-10x10-3p-3f-v3", 300))


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_are_deterministic_per_seed(preset):
    def starts(seed):
        return [(food.tolist(), positions) for food, _, positions, _ in spawns(preset, 20, seed)]

    assert starts(5) == starts(5)
    assert starts(5) != starts(6)


def test_a_time_out_is_truncated_and_clearing_the_food_terminates():
    env = make_env("lbf-easy", 0)
    env.reset()
    for t in range(env.episode_limit):
        _, _, terminated, truncated, info = env.step(np.zeros(env.n_agents, dtype=int))  # no-ops eat nothing
        assert not terminated and truncated == (t == env.episode_limit - 1)
    assert info["episode"] == {"r": 0.0, "l": env.episode_limit}

    env = make_env("Foraging-5x5-2p-1f-coop-v3", 0)  # one food that both agents must load together
    game = env.env.env
    env.reset()
    (food,) = np.argwhere(game.field > 0)
    for player, cell in zip(game.players, [food + [0, 1], food - [0, 1]]):  # stand the agents beside it
        player.position = tuple(int(x) for x in cell)
    game._gen_valid_moves()
    _, rewards, terminated, truncated, info = env.step(np.full(env.n_agents, 5))  # both load
    assert terminated and not truncated and sum(rewards) == pytest.approx(1.0) and info["episode"]["l"] == 1
