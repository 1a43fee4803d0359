"""How much of the agents' disagreement K consensus rounds leave, exactly, for the graphs `dvdn.py` draws.

    python -m benchmark.studies.consensus_rounds --agents 3 4 6 --link-prob 0.5 --rounds 0 1 2 3 5

Each training step `dvdn.py` (and `dvdn_gt.py`) draws a connected random graph G (each link up with probability p,
redrawn until connected), takes its Metropolis weights W and runs K rounds x <- W x on the local TDs delta. Agent i's
joint-TD estimate delta_i + delta_-i = N x_i misses the joint TD sum_j delta_j = N mean(delta) by N ((W^K - J) delta)_i,
J = 11'/N. The law of G does not change when the agents are renumbered, and (W^K - J) 1 = 0, so
E_G[(W^K - J)'(W^K - J)] = a_K (I - J) with a_K = E_G ||W^K - J||_F^2 / (N - 1): for every delta, the agents' mean
square error is N a_K ||delta - mean(delta)||^2. So sqrt(a_K) is the share of the no-consensus error (K = 0, a_0 = 1)
that K rounds leave, in root mean square, whatever the TDs. This prints sqrt(a_K), computed over every graph on N agents
(2^(N(N-1)/2) of them), not sampled.
"""

from dataclasses import dataclass
from itertools import combinations

import numpy as np
import tyro

from dvdn import metropolis_weights  # the training script's own weights (they live only there); importing runs nothing

MAX_AGENTS = 7  # 2^21 graphs; 8 agents would be 2^28


@dataclass
class Args:
    agents: tuple[int, ...] = (3, 4, 6)
    """team sizes (LBF easy and medium 3, hard 4; MARBLER 4, Warehouse 6)"""
    link_prob: float = 0.5
    """probability that each link is up (the scripts' --link-prob)"""
    rounds: tuple[int, ...] = (0, 1, 2, 3, 5)
    """consensus rounds K (the scripts' --consensus-rounds)"""


def graph_law(n_agents: int, link_prob: float):
    """Every connected graph on n_agents with its probability under envs.graph.random_graph: [(W, probability)]."""
    rows, cols = np.array(list(combinations(range(n_agents), 2))).T
    law = []
    for graph in range(2 ** len(rows)):  # bit k of graph: link k is up
        up = (graph >> np.arange(len(rows))) & 1
        adj = np.zeros((n_agents, n_agents))
        adj[rows, cols] = up
        adj += adj.T
        if (np.linalg.matrix_power(np.eye(n_agents) + adj, n_agents - 1) > 0).all():  # random_graph's test
            law.append((metropolis_weights(adj), link_prob ** up.sum() * (1 - link_prob) ** (len(rows) - up.sum())))
    total = sum(p for _, p in law)  # the probability that one draw is connected: random_graph redraws the others
    return [(w, p / total) for w, p in law]


def disagreement_left(law, rounds: int):
    """a_K = E ||W^K - J||_F^2 / (N - 1) over the law's graphs: the mean square share of the disagreement K rounds leave."""
    n_agents = len(law[0][0])
    mean = np.full((n_agents, n_agents), 1.0 / n_agents)  # J: what exact consensus applies
    return sum(p * np.sum((np.linalg.matrix_power(w, rounds) - mean) ** 2) for w, p in law) / (n_agents - 1)


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.consensus_rounds")
    if not args.agents or any(not 2 <= n <= MAX_AGENTS for n in args.agents):
        raise SystemExit(f"error: --agents must each lie in 2..{MAX_AGENTS} (every graph is enumerated), got {args.agents}")
    if not 0.0 < args.link_prob <= 1.0:
        raise SystemExit(f"error: --link-prob must lie in (0, 1] (0 never connects), got {args.link_prob}")
    if not args.rounds or any(k < 0 for k in args.rounds):
        raise SystemExit(f"error: --rounds must be one or more numbers >= 0, got {args.rounds}")
    print(f"share of the agents' disagreement that K rounds leave, sqrt(a_K), link prob {args.link_prob:g}\n")
    print("| agents | " + " | ".join(f"K = {k}" for k in args.rounds) + " |")
    print("|---|" + "---|" * len(args.rounds))
    for n in args.agents:
        law = graph_law(n, args.link_prob)
        print(f"| {n} | " + " | ".join(f"{np.sqrt(disagreement_left(law, k)):.3f}" for k in args.rounds) + " |", flush=True)
