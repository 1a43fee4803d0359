"""Level-Based Foraging (lbforaging 2.0) behind the API described in envs/__init__.py."""

import gymnasium as gym
import lbforaging  # noqa: F401  (registers the Foraging-* ids)
import numpy as np

# preset -> (lbforaging id, keyword overrides); see the README and specs/lbf.md
PRESETS = {
    "lbf-easy": ("Foraging-10x10-3p-3f-v3", {}),
    "lbf-medium": ("Foraging-2s-10x10-3p-3f-v3", {}),
    "lbf-hard": ("Foraging-15x15-4p-4f-v3", {"max_num_food": 5}),
}


class LBFEnv:
    def __init__(self, name: str, seed: int):
        env_id, kwargs = PRESETS.get(name, (name, {}))
        if env_id not in gym.registry:
            raise ValueError(f"unknown lbforaging id {env_id!r}; presets are {', '.join(PRESETS)}")
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
