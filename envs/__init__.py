"""Thin multi-agent environment wrappers shared by the six scripts.

Every environment returned by `make_env` has the same small API:

    env.n_agents, env.obs_size, env.n_actions, env.episode_limit
    obs, info = env.reset()                  # obs: tuple of n_agents float32 arrays of shape (obs_size,)
    obs, rewards, terminated, truncated, info = env.step(actions)   # rewards: list of n_agents floats

`terminated` means the task ended (no bootstrapping); `truncated` means the episode hit its time limit.
At the end of an episode `info["episode"] = {"r": team return, "l": length}`, where the team return is
the sum over time of the sum of the agents' rewards. The wrappers make no algorithm choices.
`env.render()` returns an RGB frame (H, W, 3) uint8, drawn headless; `env.film(path)` records the next episode.
`evaluate(act, env, episodes, epsilon, rng)` plays a policy for some episodes: the scripts' evaluation, and
benchmark/evaluate.py's. `Progress` prints a run's progress line (steps, SPS, ETA). `envs/graph.py` is the
communication graph the DVDN scripts' agents talk over.
"""

import os
import time

import numpy as np

LBF_PRESETS = ("lbf-easy", "lbf-medium", "lbf-hard")  # lbforaging 1.x spawn rules; "-2.0" gives the same task under 2.0's
LBF_PROBES = ("lbf-15x15-3p-5f", "lbf-15x15-4p-3f")  # same rules, other tasks, probed as the paper's (docs/lbf-gap.md)
MARBLER_PRESETS = ("marbler-arctic", "marbler-material", "marbler-pcp", "marbler-warehouse")  # "-exact": DAQP's QP
MPE_PRESETS = ("mpe-spread", "mpe-tag", "mpe-adversary")  # partially observable; "-full" gives mpe2's full observations
PRESETS = LBF_PRESETS + MARBLER_PRESETS + MPE_PRESETS
# a preset's version goes up whenever its task changes, so result records made before and after never merge
PRESET_VERSIONS = {"lbf-easy": 2, "lbf-medium": 2, "lbf-hard": 2}  # 2: lbforaging 1.x spawn rules; 1: as first made


class RecordEpisode:
    """Adds `info["episode"]` (team return and length) at the end of every episode; `film(path)` records the next episode
    (from its reset to its end) as an animated GIF at `path`. Rendering draws no random numbers, so filming changes nothing.
    """

    next_video = video_path = None  # class defaults, so checkpoints pickled before filming existed still load

    def __init__(self, env):
        self.env = env
        self.n_agents, self.obs_size, self.n_actions = env.n_agents, env.obs_size, env.n_actions
        self.episode_limit = env.episode_limit

    def film(self, path: str):
        self.next_video = path

    def reset(self):
        self.episode_return, self.episode_length = 0.0, 0
        obs, info = self.env.reset()
        self.video_path, self.next_video = self.next_video, None
        self.frames = [self.env.render()] if self.video_path else []
        return obs, info

    def step(self, actions):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self.episode_return += float(np.sum(rewards))
        self.episode_length += 1
        if self.video_path:
            self.frames.append(self.env.render())
        if terminated or truncated:
            info = {**info, "episode": {"r": self.episode_return, "l": self.episode_length}}
            if self.video_path:
                write_gif(self.frames, self.video_path)
                self.video_path, self.frames = None, []
        return obs, rewards, terminated, truncated, info

    def render(self):
        return self.env.render()

    def close(self):
        self.env.close()


def evaluate(act, env, episodes: int, epsilon: float, rng, video=None, watchers=()):
    """Team returns (an array) of `episodes` episodes of the policy that takes argmax_u of `act(obs, hidden)` -> (q-values
    (n_agents, n_actions), hidden), each agent exploring with probability `epsilon`. `rng` draws the exploration, every step
    whatever epsilon is, so its stream never depends on the q-values; `video`: film the first episode to this GIF file;
    each watcher's start(env) runs after every reset and its step(terminated, truncated, info) after every step."""
    returns = []
    for _ in range(episodes):
        if video and not returns:
            env.film(video)  # rendering draws no random numbers: filming changes nothing
        obs, _ = env.reset()
        hidden, done = None, False
        for watcher in watchers:
            watcher.start(env)
        while not done:
            q_values, hidden = act(obs, hidden)
            explore = rng.random(env.n_agents) < epsilon
            random_actions = rng.integers(env.n_actions, size=env.n_agents)
            obs, _, terminated, truncated, info = env.step(np.where(explore, random_actions, q_values.argmax(-1).numpy()))
            done = terminated or truncated
            for watcher in watchers:
                watcher.step(terminated, truncated, info)
        returns.append(info["episode"]["r"])
    return np.array(returns)


class Progress:
    """A run's progress line, `global_step=20000/2000000, SPS=370, ETA=89m11s`, every 10k steps and at least every 30
    seconds, and SPS to TensorBoard every 10k steps. SPS and ETA count from `start_step` (0, or the step resumed from)."""

    def __init__(self, start_step: int, total_steps: int, writer):
        self.start_step, self.total_steps, self.writer = start_step, total_steps, writer
        self.start_time = self.last_print = time.time()

    def update(self, steps: int):
        """`steps`: environment steps done so far."""
        if steps % 10_000 and time.time() - self.last_print <= 30:
            return
        sps = (steps - self.start_step) / (time.time() - self.start_time)
        eta = int((self.total_steps - steps) / sps)
        print(f"global_step={steps}/{self.total_steps}, SPS={int(sps)}, ETA={eta // 60}m{eta % 60:02d}s")
        self.last_print = time.time()
        if steps % 10_000 == 0:
            self.writer.add_scalar("charts/SPS", int(sps), steps)


def write_gif(frames, path: str, frames_per_second: int = 5):
    """Animated GIF (Pillow, which matplotlib installs): plays in any browser and in wandb, needs no ffmpeg."""
    from PIL import Image

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=1000 // frames_per_second, loop=0)


def env_family(name: str) -> str:
    """'lbf', 'marbler' or 'mpe' for an env name `make_env` takes; a ValueError that lists the choices for any other."""
    if name.removesuffix("-2.0") in LBF_PRESETS + LBF_PROBES or name.startswith("Foraging"):
        return "lbf"
    if name.removesuffix("-exact") in MARBLER_PRESETS:
        return "marbler"
    if name.removesuffix("-full") in MPE_PRESETS:
        return "mpe"
    names = LBF_PRESETS + LBF_PROBES + MARBLER_PRESETS + MPE_PRESETS  # each family's names together
    raise ValueError(f"unknown env {name!r}; choose one of {', '.join(names)}, "
                     "an LBF preset with the suffix -2.0, a MARBLER preset with the suffix -exact, "
                     "an MPE preset with the suffix -full, or a raw lbforaging id (Foraging-...-v3)")


def make_env(name: str, seed: int):
    """Builds the environment `name` (a preset or a raw lbforaging id); `seed` seeds its first reset."""
    family = env_family(name)
    if family == "lbf":
        from envs.lbf import LBFEnv

        return RecordEpisode(LBFEnv(name, seed))
    if family == "marbler":  # -exact: the barrier QP solved exactly by DAQP, not cvxopt
        from envs.marbler import MarblerEnv

        solver = "daqp" if name.endswith("-exact") else "cvxopt"
        return RecordEpisode(MarblerEnv(name.removesuffix("-exact"), seed, solver=solver))
    from envs.mpe import MPEEnv

    return RecordEpisode(MPEEnv(name, seed))
