"""A sanity band for MARBLER's Warehouse: the team return of a scripted team that needs no learning, beside the
uniform-random policy's, acting and tallied as benchmark/evaluate.py acts and tallies a trained team.

    python -m benchmark.studies.marbler_heuristics --episodes 100 --env-seed 300001

The scripted team: each robot heads for the middle of its load zone (Green, even ids: lower right; Red: upper right),
and once loaded for the middle of its unload zone (Green: upper left; Red: lower left), moving along the axis where
it is farther from its target. The barrier certificate keeps the robots apart; nothing else coordinates them.
"""

import types
from dataclasses import dataclass

import numpy as np
import torch
import tyro

from benchmark.evaluate import EndTally, evaluate, mean_ci
from benchmark.checks import numpy_seeds
from envs import make_env


@dataclass
class Args:
    env: str = "marbler-warehouse-exact"
    """a Warehouse preset (marbler-warehouse or marbler-warehouse-exact)"""
    episodes: int = 100
    """episodes per policy"""
    env_seed: int = 300001
    """seed of the env and of the random actions"""


def warehouse_team(env):
    """A stand-in for a trained script (benchmark/evaluate.py calls its `q_step`): Q-values one-hot on the scripted
    action of every robot, read from the poses and load flags of `env` (make_env's wrapper around MarblerEnv)."""
    sim = env.env

    def q_step(agents, obs, hidden, device):
        x, y, loaded = sim.poses[0], sim.poses[1], sim.task.loaded
        green = np.arange(sim.n_agents) % 2 == 0
        dx = np.where(loaded, -1.2, 1.2) - x  # load zones at the right, unload zones at the left
        dy = np.where(green != loaded, -0.45, 0.45) - y  # Green loads below y = 0 and unloads above it; Red the mirror
        actions = np.where(abs(dx) > abs(dy), np.where(dx < 0, 0, 1), np.where(dy < 0, 2, 3))  # 0 -x, 1 +x, 2 -y, 3 +y
        return torch.nn.functional.one_hot(torch.as_tensor(actions), sim.n_actions).float(), hidden

    return types.SimpleNamespace(q_step=q_step)


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.marbler_heuristics")
    numpy_seeds(env_seed=args.env_seed)
    if not args.env.startswith("marbler-warehouse"):
        raise SystemExit(f"error: the scripted team plays Warehouse only; --env {args.env} is not a Warehouse preset")
    if args.episodes < 1:
        raise SystemExit(f"error: --episodes must be at least 1; got {args.episodes}")
    for policy, epsilon in (("scripted team", 0.0), ("uniform random", 1.0)):
        env, tally = make_env(args.env, args.env_seed), EndTally()
        team = warehouse_team(env)
        returns = evaluate(team, env, None, args.episodes, epsilon, np.random.default_rng(args.env_seed), tallies=[tally])
        mean, lo, hi = mean_ci(returns)
        print(f"{args.env}, {policy}, {args.episodes} episodes: mean return {mean:.2f} (95% CI {lo:.2f} to {hi:.2f})")
        print(f"  {tally.summary()}")
