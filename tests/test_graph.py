"""The communication graph (envs/graph.py): random graphs are connected and vary, the exact chance that one draw connects,
the refusal of a hopeless --link-prob, and the graph each topology starts from."""

import numpy as np
import pytest

from envs.graph import connected_probability, first_graph, link_prob_error, random_graph


def test_random_graph_is_connected_and_varies():
    np.random.seed(0)
    graphs = [random_graph(6, 0.3) for _ in range(200)]
    for adj in graphs:
        reached = {0}
        for _ in range(6):
            reached |= {j for i in reached for j in np.flatnonzero(adj[i])}
        assert reached == set(range(6))
    assert len({adj.tobytes() for adj in graphs}) > 50  # links really drop out


@pytest.mark.parametrize("n_agents, link_prob", [(2, 0.3), (3, 0.5), (5, 0.2), (6, 0.15)])
def test_connected_probability_matches_random_graphs_redraws(n_agents, link_prob, monkeypatch):
    """random_graph redraws until the graph is connected, so its draws per graph average 1 / connected_probability: the
    exact probability behind the scripts' refusal of a hopeless --link-prob."""
    draws, real_random = [0], np.random.random

    def counted(*args, **kwargs):
        draws[0] += 1
        return real_random(*args, **kwargs)

    monkeypatch.setattr(np.random, "random", counted)
    np.random.seed(n_agents)
    graphs, p = 2000, connected_probability(n_agents, link_prob)
    for _ in range(graphs):
        random_graph(n_agents, link_prob)
    # draws per graph are geometric: mean 1 / p, variance (1 - p) / p^2
    assert draws[0] / graphs == pytest.approx(1 / p, abs=4 * np.sqrt((1 - p) / p**2 / graphs))


def test_random_graph_gives_up_after_its_draws():
    with pytest.raises(RuntimeError, match="no connected graph of 4 agents in 50 draws"):
        random_graph(4, 0.0, max_draws=50)


@pytest.mark.parametrize("topology", ["switching", "static"])
def test_a_random_topology_refuses_a_link_prob_that_rarely_connects(topology):
    assert link_prob_error(topology, 3, 0.05) is None  # one draw in 3 p^2 (1 - p) + p^3, about 1 in 138, connects
    assert link_prob_error(topology, 3, 0.01).startswith("--link-prob 0.01 connects 3 agents in under 1 of 1000 draws")
    assert link_prob_error("complete", 3, 0.0) is None  # fixed topologies draw nothing, so any --link-prob will do
    assert link_prob_error("none", 3, 0.0) is None


def test_first_graph_of_each_topology():
    np.random.seed(3)
    for topology in ["switching", "static"]:
        state = np.random.get_state()
        adj = first_graph(topology, 5, 0.4)
        np.random.set_state(state)
        np.testing.assert_array_equal(adj, random_graph(5, 0.4))  # the same draw from the scripts' seeded generator
    np.testing.assert_array_equal(first_graph("complete", 3, 0.4), [[0, 1, 1], [1, 0, 1], [1, 1, 0]])
    np.testing.assert_array_equal(first_graph("none", 3, 0.4), np.zeros((3, 3)))
