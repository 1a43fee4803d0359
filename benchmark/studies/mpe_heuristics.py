"""Sanity bands for the MPE presets: the team return of the uniform-random policy and of a simple heuristic team, and for
Tag how often three greedy chasers catch the scripted prey against a prey that stands still.

    python -m benchmark.studies.mpe_heuristics --episodes 200
"""

from dataclasses import dataclass

import numpy as np
import tyro

from benchmark.checks import at_least_one, numpy_seeds
from envs import make_env
from envs.mpe import HEURISTICS, catches


@dataclass
class Args:
    envs: tuple[str, ...] = ("mpe-spread", "mpe-tag", "mpe-adversary")
    """MPE presets"""
    episodes: int = 200
    """episodes per policy"""
    seed: int = 0
    """seed of the env and of the random actions"""


def play(name: str, policy: str, episodes: int, seed: int, still_opponent: bool = False):
    """Team returns, catches per episode (Tag) and the opponent's last distance to the goal (Adversary)."""
    env, rng = make_env(name, seed), np.random.default_rng(seed)
    mpe = env.env  # the MPEEnv inside RecordEpisode
    if still_opponent:
        mpe.opponent = lambda agent, world: 0  # no-op: the opponent stands still
    returns, caught, goal_distance = [], [], []
    for _ in range(episodes):
        env.reset()
        done, n_caught = False, 0
        while not done:
            world = mpe.env.unwrapped.world
            agents = {a.name: a for a in world.agents}
            if policy == "random":
                actions = rng.integers(env.n_actions, size=env.n_agents)
            else:
                actions = [HEURISTICS[mpe.task](agents[name], world) for name in mpe.learners]
            _, _, terminated, truncated, info = env.step(actions)
            done = terminated or truncated
            n_caught += catches(mpe.env.unwrapped.world) if mpe.task == "tag" else 0
        returns.append(info["episode"]["r"])
        caught.append(n_caught)
        if mpe.task == "adversary":
            adversary = [a for a in mpe.env.unwrapped.world.agents if a.adversary][0]
            goal_distance.append(np.linalg.norm(adversary.state.p_pos - adversary.goal_a.state.p_pos))
    return np.array(returns), np.mean(caught), np.mean(goal_distance) if goal_distance else float("nan")


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.mpe_heuristics")
    at_least_one(episodes=args.episodes)
    numpy_seeds(seed=args.seed)
    print(f"{args.episodes} episodes, seed {args.seed}; mean ± s.e.")
    print("| env | policy | opponent | team return | catches per episode (Tag) | adversary's last distance to goal |")
    print("|---|---|---|---|---|---|")
    for name in args.envs:
        opponents = [False, True] if name.removesuffix("-full") != "mpe-spread" else [False]
        for policy in ["random", "heuristic"]:
            for still in opponents:
                returns, caught, goal_distance = play(name, policy, args.episodes, args.seed, still)
                print(f"| `{name}` | {policy} | {'still' if still else 'scripted' if len(opponents) > 1 else '-'} | "
                      f"{returns.mean():.2f} ± {returns.std() / np.sqrt(len(returns)):.2f} | "
                      f"{caught:.2f} | {goal_distance:.2f} |", flush=True)  # fmt: skip
