"""Barrier-QP solvers on the QPs that MARBLER's tasks really pose: agreement and time per QP.

    python -m benchmark.studies.marbler_qp --episodes 5     # pip install quadprog to add it to the comparison

Records every barrier QP (A, b, u0) of a few uniform-random episodes per task (cvxopt path), then solves each with
cvxopt at MARBLER's tolerances, with DAQP (the `-exact` presets' solver), and with quadprog if it is installed.
Time it on an idle core (`taskset -c 0`); on a loaded machine only the ratios mean much.
"""

import time
from dataclasses import dataclass

import numpy as np
import tyro

from benchmark.checks import at_least_one
from benchmark.studies.random_returns import random_returns
from envs.marbler import TASKS
from envs.robotarium import BarrierQP, daqp


@dataclass
class Args:
    episodes: int = 5
    """uniform-random episodes per task whose QPs are recorded"""
    repeats: int = 3
    """timing passes over all QPs"""


def record_qps(episodes: int):
    """Every barrier QP that `episodes` uniform-random episodes per task pose (random_returns.py's episodes)."""
    qps, solve = [], BarrierQP.solve

    def recording(self, A, b, u0):
        qps.append((A.copy(), b.copy(), u0.copy()))
        return solve(self, A, b, u0)

    BarrierQP.solve = recording
    for name in TASKS:
        random_returns(name, episodes, seed=0)
    BarrierQP.solve = solve
    return qps


def daqp_only(A, b, u0):
    u, _, exitflag, _ = daqp.solve(np.eye(len(u0)), -u0, A, b, np.full(len(b), -1e30), np.zeros(len(b), np.int32))
    return u if exitflag > 0 else u0 * np.nan


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.marbler_qp")
    at_least_one(episodes=args.episodes, repeats=args.repeats)
    qps = record_qps(args.episodes)
    active = np.array([np.any(A @ u0 > b) for A, b, u0 in qps])
    barrier = {(n, solver): BarrierQP(n, solver) for n in (4, 6) for solver in ("daqp", "cvxopt")}
    methods = {"DAQP (the -exact presets)": lambda A, b, u0: barrier[len(u0) // 2, "daqp"].solve(A, b, u0),
               "DAQP without the feasible-optimum shortcut": lambda A, b, u0: daqp_only(A, b, u0),
               "cvxopt (MARBLER's tolerances)": lambda A, b, u0: barrier[len(u0) // 2, "cvxopt"].solve(A, b, u0)}
    try:
        import quadprog

        methods["quadprog"] = lambda A, b, u0: quadprog.solve_qp(np.eye(len(u0)), u0, -A.T, -b, 0)[0]
    except ImportError:
        pass
    print(f"{len(qps)} QPs from {args.episodes} random episodes per task; {active.mean():.0%} with an active barrier")
    solutions = {}
    print("| solver | µs per QP | µs per QP with an active barrier | worst constraint violation | max diff. from DAQP |")
    print("|---|---|---|---|---|")
    for name, solve in methods.items():
        start = time.perf_counter()
        for _ in range(args.repeats):
            solutions[name] = [solve(*qp) for qp in qps]
        per_qp = 1e6 * (time.perf_counter() - start) / args.repeats / len(qps)
        hard = [qp for qp, a in zip(qps, active) if a]
        start = time.perf_counter()
        for _ in range(args.repeats):
            [solve(*qp) for qp in hard]
        per_hard = 1e6 * (time.perf_counter() - start) / args.repeats / len(hard)
        worst = max(np.max(A @ u - b) for (A, b, _), u in zip(qps, solutions[name]))
        diff = max(np.max(np.abs(u - v)) for u, v in zip(solutions[name], solutions[list(methods)[0]]))
        print(f"| {name} | {per_qp:.1f} | {per_hard:.1f} | {worst:.1e} | {diff:.1e} |", flush=True)
