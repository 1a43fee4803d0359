"""How far consensus leaves each agent's joint-TD estimate from the true joint TD, read from DVDN runs' TensorBoard logs.

    python -m benchmark.studies.consensus_error --runs /work/sweeps --edges 0 0.5 1 2 5

`dvdn.py` and `dvdn_gt.py` log, every 10th gradient step, `losses/jtd_error`: the mean |(delta_i + delta_-i) - sum_j
delta_j| over agents and real steps (what consensus loses), and `losses/td_loss`: the mean over agents of the mean square
of delta_i + delta_-i (the joint TD each agent trains on). Per window of env steps this prints both window means and
their ratio jtd_error / sqrt(td_loss): the error relative to the size of the estimate (0 under exact consensus).
"""

from dataclasses import dataclass

import numpy as np
import tyro

from benchmark.records import run_dirs


@dataclass
class Args:
    runs: tuple[str, ...] = ("runs",)
    """folders searched recursively for run folders ({env}__{exp_name}__{seed}__{unix_time}) with event files"""
    edges: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0)
    """window edges in millions of env steps"""


def consensus_error(run_dir, edges):
    """[(start, end, mean jtd_error, sqrt(mean td_loss))] per window of env steps [start, end) in millions that holds
    logged steps; None for a run that logs no jtd_error. Steps a stopped run logged past its checkpoint are purged."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    if "losses/jtd_error" not in events.Tags()["scalars"]:
        return None
    jtd = {e.step: e.value for e in events.Scalars("losses/jtd_error")}
    loss = {e.step: e.value for e in events.Scalars("losses/td_loss")}
    steps = np.array(sorted(jtd.keys() & loss.keys()))
    jtd, loss = np.array([jtd[s] for s in steps]), np.array([loss[s] for s in steps])
    rows = []
    for start, end in zip(edges[:-1], edges[1:]):
        inside = (steps >= start * 1e6) & (steps < end * 1e6)
        if inside.any():
            rows.append((start, end, jtd[inside].mean(), np.sqrt(loss[inside].mean())))
    return rows


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.consensus_error")
    if len(args.edges) < 2 or any(b <= a for a, b in zip(args.edges[:-1], args.edges[1:])):
        raise SystemExit(f"error: --edges must be two or more increasing numbers, got {' '.join(map(str, args.edges))}")
    print("| run | env steps | jtd_error | sqrt(td_loss) | ratio |\n|---|---|---|---|---|")
    for run_dir in run_dirs(args.runs):
        for start, end, error, size in consensus_error(run_dir, args.edges) or []:
            print(f"| {run_dir.name} | {start:g}M-{end:g}M | {error:.3f} | {size:.3f} | {error / size:.2f} |", flush=True)
