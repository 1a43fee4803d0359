"""Level-Based Foraging (lbforaging 2.0) behind the API described in envs/__init__.py.

The presets follow the rules of lbforaging 1.x, the version of the paper's era (see the README, "Environments"):
a food's level is drawn from 1..L-1 (L = sum of the three lowest agent levels) and no agent starts on the last row
or column. The same tasks under lbforaging 2.0's rules are the presets with the suffix "-2.0"; raw ids keep 2.0's.
"""

import gymnasium as gym
import lbforaging  # noqa: F401  (registers the Foraging-* ids)
from lbforaging.foraging import ForagingEnv

# preset -> (lbforaging id, keyword overrides); see the README and specs/lbf.md
PRESETS = {
    "lbf-easy": ("Foraging-10x10-3p-3f-v3", {}),
    "lbf-medium": ("Foraging-2s-10x10-3p-3f-v3", {}),
    "lbf-hard": ("Foraging-15x15-4p-4f-v3", {"max_num_food": 5}),
}
PRESETS_2_0 = {f"{name}-2.0": task for name, task in PRESETS.items()}


class PaperEraForaging(ForagingEnv):
    """lbforaging 2.0 with the two spawn rules of 1.x (tags v1.0.15 to v1.1.1), which decide how hard a task is."""

    def spawn_food(self, max_num_food, min_levels, max_levels):
        # 1.x: randint(1, L), upper bound excluded, so no food needs all three lowest agents; 2.0 draws 1..L
        super().spawn_food(max_num_food, min_levels, max_levels - 1)

    def _is_empty_location(self, row, col):
        # 1.x draws agent positions from 0..size-2; rejecting the last row and column gives the same distribution.
        # Food never lands there anyway (2.0 draws it from 1..size-2), so only agent spawning sees this.
        return row < self.rows - 1 and col < self.cols - 1 and super()._is_empty_location(row, col)


class LBFEnv:
    def __init__(self, name: str, seed: int):
        env_id, kwargs = PRESETS.get(name) or PRESETS_2_0.get(name) or (name, {})
        if env_id not in gym.registry:
            raise ValueError(f"unknown lbforaging id {env_id!r}; presets are {', '.join([*PRESETS, *PRESETS_2_0])}")
        if name in PRESETS:
            self.env = PaperEraForaging(**{**gym.spec(env_id).kwargs, **kwargs})
        else:
            self.env = gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped
        self.seed = seed
        self.n_agents = self.env.n_agents
        self.obs_size = self.env.observation_space[0].shape[0]
        self.n_actions = self.env.action_space[0].n
        self.episode_limit = self.env._max_episode_steps

    def reset(self):
        # lbforaging only reproduces a start when a fresh instance is seeded, so seed the first reset only
        obs, info = self.env.reset(seed=self.seed)
        self.seed = None
        return obs, info

    def step(self, actions):
        obs, rewards, done, _, info = self.env.step(actions)
        # lbforaging reports its time limit as done; the episode was cut short if food is left
        truncated = done and self.env.field.sum() > 0 and self.env.current_step >= self.episode_limit
        return obs, rewards, done and not truncated, truncated, info

    def render(self):
        import pyglet

        pyglet.options["headless"] = True
        return self.env.render()

    def close(self):
        self.env.close()
