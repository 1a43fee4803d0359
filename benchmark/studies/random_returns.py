"""Team return of the uniform-random policy on env presets: the floor that learning curves are drawn against.

    python -m benchmark.studies.random_returns --envs lbf-easy lbf-medium lbf-hard lbf-easy-2.0 lbf-medium-2.0 lbf-hard-2.0
"""

from dataclasses import dataclass

import numpy as np
import tyro

from benchmark.checks import at_least_one, numpy_seeds
from envs import make_env


@dataclass
class Args:
    envs: tuple[str, ...] = ("lbf-easy", "lbf-medium", "lbf-hard")
    """env presets (or raw lbforaging ids)"""
    episodes: int = 2000
    """random episodes per env"""
    seed: int = 0
    """seed of the env and of the random actions"""


def random_returns(name: str, episodes: int, seed: int):
    env, rng = make_env(name, seed), np.random.default_rng(seed)
    returns = []
    for _ in range(episodes):
        env.reset()
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(rng.integers(env.n_actions, size=env.n_agents))
            done = terminated or truncated
        returns.append(info["episode"]["r"])
    return np.array(returns)


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.random_returns")
    at_least_one(episodes=args.episodes)
    numpy_seeds(seed=args.seed)
    print(f"| env | uniform-random team return (mean ± s.e., {args.episodes} episodes, seed {args.seed}) |\n|---|---|")
    for name in args.envs:
        returns = random_returns(name, args.episodes, args.seed)
        print(f"| `{name}` | {returns.mean():.3f} ± {returns.std() / np.sqrt(len(returns)):.3f} |", flush=True)
