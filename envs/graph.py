"""The communication network of the decentralised scripts: which agents can send each other a message at a step.

In networked multi-agent learning the graph belongs to the world, as the game does: it says which links exist, and the
scripts say what travels over them (consensus on the TDs, gradient tracking). Draws use numpy's global generator, which
the scripts seed, so a run's graphs follow from its seed. The topologies:

    switching   a new random connected graph at every training step, each link up with probability link_prob
    static      one such graph, drawn once at the start
    complete    every agent linked to every other
    none        no links: each agent learns alone
"""

import math

import numpy as np


def random_graph(n_agents: int, link_prob: float, max_draws: int = 1_000_000):
    """Adjacency matrix of a random undirected graph, each link up with probability link_prob, redrawn until connected."""
    for _ in range(max_draws):  # the scripts refuse (link_prob_error) a link_prob that needs over 1000 draws on average
        upper = np.triu(np.random.random((n_agents, n_agents)) < link_prob, k=1)
        adj = (upper | upper.T).astype(np.float64)
        if (np.linalg.matrix_power(np.eye(n_agents) + adj, n_agents - 1) > 0).all():  # every agent reaches every other
            return adj
    raise RuntimeError(f"no connected graph of {n_agents} agents in {max_draws} draws with link_prob {link_prob}")


def connected_probability(n_agents: int, link_prob: float):
    """Probability that one draw of random_graph is connected (Gilbert 1959: condition on the size k of agent 0's part)."""
    connected = [1.0]  # connected[k - 1]: the probability for k agents
    for n in range(2, n_agents + 1):
        split = sum(math.comb(n - 1, k - 1) * connected[k - 1] * (1 - link_prob) ** (k * (n - k)) for k in range(1, n))
        connected.append(1.0 - split)
    return connected[-1]


def link_prob_error(topology: str, n_agents: int, link_prob: float):
    """Why a random topology cannot use link_prob (it would need over 1000 draws per connected graph), or None."""
    if topology in ("switching", "static") and connected_probability(n_agents, link_prob) < 1e-3:
        return (f"--link-prob {link_prob} connects {n_agents} agents in under 1 of 1000 draws of the graph; raise it, or "
                "use --topology none to train without links")  # fmt: skip
    return None


def first_graph(topology: str, n_agents: int, link_prob: float):
    """The adjacency matrix a run starts with (a switching topology then redraws it at every training step)."""
    if topology in ("switching", "static"):
        return random_graph(n_agents, link_prob)
    return np.ones((n_agents, n_agents)) - np.eye(n_agents) if topology == "complete" else np.zeros((n_agents, n_agents))
