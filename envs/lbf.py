"""Level-Based Foraging (lbforaging 2.0) behind the API described in envs/__init__.py.

The presets follow the rules of lbforaging 1.x, the version of the paper's era (see the README, "Environments"):
a food's level is drawn from 1..L-1 (L = sum of the three lowest agent levels) and no agent starts on the last row
or column. The same tasks under lbforaging 2.0's rules are the presets with the suffix "-2.0"; raw ids keep 2.0's.
"""

import gymnasium as gym
import lbforaging  # noqa: F401  (registers the Foraging-* ids)
import numpy as np
from lbforaging.foraging import ForagingEnv

# preset -> (lbforaging id, keyword overrides); see docs/environments.md and docs/lbf.md
PRESETS = {
    "lbf-easy": ("Foraging-10x10-3p-3f-v3", {}),
    "lbf-medium": ("Foraging-2s-10x10-3p-3f-v3", {}),
    "lbf-hard": ("Foraging-15x15-4p-4f-v3", {"max_num_food": 5}),
    # the first author's two other 15x15 tasks, to test which tasks Table 1's Medium and Hard were (docs/lbf-gap.md)
    "lbf-15x15-3p-5f": ("Foraging-15x15-3p-4f-v3", {"max_num_food": 5}),
    "lbf-15x15-4p-3f": ("Foraging-15x15-4p-3f-v3", {}),
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
        """RGB frame (H, W, 3) uint8 of the grid, drawn headless with matplotlib's Agg canvas (lbforaging's own viewer
        needs a display or EGL): food as red squares, agents as numbered circles, each with its level."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle, Rectangle

        rows, cols = self.env.field.shape
        fig = Figure(figsize=(0.45 * cols, 0.45 * rows + 0.3), dpi=100)  # a 0.3-inch strip on top for the caption
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.005, 0.005, 0.99, 0.45 * rows / (0.45 * rows + 0.3) - 0.01))
        ax.set(xlim=(0, cols), ylim=(rows, 0), aspect="equal", xticks=[], yticks=[])  # row 0 at the top, as lbforaging
        ax.hlines(range(rows + 1), 0, cols, color="lightgrey", lw=0.5)
        ax.vlines(range(cols + 1), 0, rows, color="lightgrey", lw=0.5)
        for r, c in zip(*np.nonzero(self.env.field)):
            ax.add_patch(Rectangle((c + 0.15, r + 0.15), 0.7, 0.7, color="tab:red"))
            ax.text(c + 0.5, r + 0.5, str(self.env.field[r, c]), ha="center", va="center", color="w", fontsize=9)
        for i, player in enumerate(self.env.players):
            r, c = player.position
            ax.add_patch(Circle((c + 0.5, r + 0.5), 0.4, color=f"C{i}"))
            ax.text(c + 0.5, r + 0.5, f"{i}:{player.level}", ha="center", va="center", color="w", fontsize=7)
        fig.text(0.02, 0.99, f"t={self.env.current_step}  (agent:level, food level)", fontsize=8, va="top")
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()

    def close(self):
        self.env.close()
