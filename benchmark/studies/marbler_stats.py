"""Uniform-random-policy statistics and speed of the MARBLER tasks (envs/marbler.py), next to docs/marbler-simulator.md §9.1.

    taskset -c 0 python -m benchmark.studies.marbler_stats                  # 200 episodes per task, cvxopt (default)
    taskset -c 0 python -m benchmark.studies.marbler_stats --solver daqp    # the exact, faster QP solver (deviation)

Protocol of the reference (§9.1): a RandomState seeded with `--seed` spawns the episodes and, after each reset, every
agent draws `randint(n_actions)` from the same RandomState (MARBLER used numpy's global RNG for both). With the
default solver and seed 0 this reproduces MARBLER's 200 reference episodes. Run it pinned to one core (`taskset -c 0`)
for the speed column: env steps per second over the whole run (reset, step and the policy's draws), compared with the
measured per-step times of the original (PyPI rps driven like MARBLER, §8.5; the original is not run here).
"""

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np
import tyro

from benchmark.checks import at_least_one, numpy_seeds
from envs.marbler import MarblerEnv


@dataclass
class Args:
    episodes: int = 200
    """uniform-random episodes per task"""
    seed: int = 0
    """seed of the RandomState shared by the env and the policy (the reference used 0)"""
    solver: Literal["cvxopt", "daqp"] = "cvxopt"
    """barrier QP solver: cvxopt (MARBLER's, default) or daqp (exact, faster; changes trajectories)"""
    tasks: tuple[str, ...] = ("marbler-pcp", "marbler-warehouse", "marbler-material", "marbler-arctic")
    """presets to run"""


# §9.1: mean length, boundary and collision counts out of 200, agent-0 return (mean, sd), team return, remaining
REFERENCE = {
    "marbler-pcp": (70.0, 43, 9, -4.74, 1.44, -18.98, 6.0),
    "marbler-warehouse": (71.2, 85, 12, -2.32, 2.51, -14.05, None),
    "marbler-material": (64.9, 32, 3, -7.26, 1.26, -29.03, 118.3),
    "marbler-arctic": (46.4, 70, 6, -36.2, 8.5, -144.9, None),
}
ORIGINAL_MS = {"marbler-pcp": 2.6, "marbler-warehouse": 3.4, "marbler-material": 6.3, "marbler-arctic": 3.3}  # §8.5


def random_episodes(name, n, solver="cvxopt", seed=0):
    """§9.1 protocol: after each reset every agent draws randint(n_actions) from the same numpy RandomState
    that spawns the episodes (MARBLER used numpy's global RNG for both). Returns per-episode arrays."""
    env = MarblerEnv(name, seed, solver=solver)
    out = {"length": [], "return": [], "team": [], "message": [], "remaining": []}
    for _ in range(n):
        env.reset()
        ret = team = length = 0
        while True:
            actions = [env.rng.randint(env.n_actions) for _ in range(env.n_agents)]
            _, rewards, terminated, truncated, info = env.step(actions)
            ret, team, length = ret + rewards[0], team + sum(rewards), length + 1
            if terminated or truncated:
                break
        out["length"].append(length)
        out["return"].append(ret)
        out["team"].append(team)
        out["message"].append(info.get("message", ""))
        if "remaining" in info:
            out["remaining"].append(info["remaining"])
    return {k: np.array(v) for k, v in out.items()}


def mean_se(x):
    return f"{np.mean(x):.2f} ± {np.std(x, ddof=1) / np.sqrt(len(x)):.2f}"


def share_se(flags):
    p = np.mean(flags)
    return f"{100 * p:.1f} ± {100 * np.sqrt(p * (1 - p) / len(flags)):.1f} %"


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.marbler_stats")
    at_least_one(episodes=args.episodes)
    numpy_seeds(seed=args.seed)
    print(f"solver={args.solver} episodes={args.episodes} seed={args.seed}")
    for name in args.tasks:
        start = time.perf_counter()
        stats = random_episodes(name, args.episodes, args.solver, args.seed)
        seconds = time.perf_counter() - start
        lengths, returns, teams, messages, remaining = (stats[k] for k in ("length", "return", "team", "message", "remaining"))
        ref_len, ref_b, ref_c, ref_ret, ref_sd, ref_team, ref_rem = REFERENCE[name]
        ms = 1e3 * seconds / sum(lengths)
        rows = [
            ("mean episode length", mean_se(lengths), f"{ref_len}"),
            ("violations", share_se(messages != ""), f"{(ref_b + ref_c) / 2:.1f} %"),
            ("  boundary", share_se(messages == "boundary"), f"{ref_b / 2:.1f} %"),
            ("  collision", share_se(messages == "collision"), f"{ref_c / 2:.1f} %"),
            ("  both in one tick", share_se(messages == "collision_boundary"), "-"),
            ("return of agent 0 (sd)", f"{mean_se(returns)} ({np.std(returns):.2f})", f"{ref_ret} ({ref_sd})"),
            ("team return (sum over agents)", mean_se(teams), f"{ref_team}"),
        ]
        if ref_rem is not None:
            rows.append(("remaining at the end", mean_se(remaining), f"{ref_rem}"))
        rows.append(("ms per env step (steps/s)", f"{ms:.3f} ({1e3 / ms:.0f})", f"{ORIGINAL_MS[name]} (original)"))
        rows.append(("speed-up over the original", f"{ORIGINAL_MS[name] / ms:.1f}x", ""))
        print(f"\n{name}: {args.episodes} episodes, {sum(lengths)} steps, {seconds:.1f} s")
        print(f"  {'statistic':32s} {'measured':>26s}   {'reference (§9.1)':>18s}")
        for label, measured, reference in rows:
            print(f"  {label:32s} {measured:>26s}   {reference:>18s}")
