"""Unit tests of the pieces the scripts define above their __main__ guard: buffer, TD errors, consensus, GTAdam."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dvdn  # noqa: E402
import dvdn_gt  # noqa: E402
import iql  # noqa: E402
import iql_ps  # noqa: E402
import vdn  # noqa: E402
import vdn_ps  # noqa: E402
from envs.graph import random_graph  # noqa: E402

# Each script keeps its own copy of the shared helpers (buffer, schedule, reward statistics, TD error), so each copy is
# tested, not only iql.py's: a bug in one child's copy would otherwise pass every test.
MODULES = [iql, iql_ps, vdn, vdn_ps, dvdn, dvdn_gt]

# ---------------------------------------------------------------- replay buffer
def fill_episode(rb, length, value, n_agents=2, obs_size=3):
    for t in range(length):
        obs = [np.full(obs_size, value + t, np.float32)] * n_agents
        next_obs = [np.full(obs_size, value + t + 1, np.float32)] * n_agents
        rb.add(obs, np.full(n_agents, t % 5), float(value), next_obs, t == length - 1)
    rb.end_episode()


@pytest.mark.parametrize("module", MODULES)
def test_buffer_masks_and_padding(module):
    rb = module.ReplayBuffer(capacity=3, episode_limit=5, n_agents=2, obs_size=3)
    fill_episode(rb, 4, 10.0)
    assert rb.size == 1 and rb.pos == 1
    np.testing.assert_array_equal(rb.mask[0], [1, 1, 1, 1, 0])
    np.testing.assert_array_equal(rb.terminated[0], [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(rb.obs[0, :, 0, 0], [10, 11, 12, 13, 14, 0])  # next_obs of the last step kept
    obs, actions, rewards, terminated, mask = rb.sample(1, "cpu")
    assert obs.shape == (1, 5, 2, 3) and actions.shape == (1, 4, 2) and mask.shape == (1, 4)  # cut to the longest episode


@pytest.mark.parametrize("module", MODULES)
def test_buffer_wraps_around_and_clears_old_tails(module):
    rb = module.ReplayBuffer(capacity=3, episode_limit=5, n_agents=2, obs_size=3)
    fill_episode(rb, 5, 1.0)
    fill_episode(rb, 2, 2.0)
    fill_episode(rb, 3, 3.0)
    assert rb.size == 3 and rb.pos == 0
    fill_episode(rb, 2, 4.0)  # overwrites slot 0, which held a longer episode
    assert rb.size == 3 and rb.pos == 1
    np.testing.assert_array_equal(rb.mask[0], [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(rb.rewards[0], [4, 4, 0, 0, 0])
    np.testing.assert_array_equal(rb.obs[0, :, 0, 0], [4, 5, 6, 0, 0, 0])
    assert rb.actions[0, 2:].sum() == 0 and rb.terminated[0].sum() == 1
    np.random.seed(0)
    obs, _, rewards, _, mask = rb.sample(3, "cpu")
    assert obs.shape[1] == 4 and mask.sum() == 2 + 2 + 3  # longest remaining episode has 3 steps
    assert sorted(rewards[:, 0].tolist()) == [2.0, 3.0, 4.0]


@pytest.mark.parametrize("module", MODULES)
def test_running_mean_std_matches_numpy(module):
    rng = np.random.default_rng(0)
    data = [torch.as_tensor(rng.normal(3.0, 2.0, size=n)) for n in (5, 50, 7, 300)]
    stats = module.RunningMeanStd()
    for x in data:
        stats.update(x)
    everything = torch.cat(data).numpy()
    assert stats.mean == pytest.approx(everything.mean(), rel=1e-3)
    assert stats.var == pytest.approx(everything.var(), rel=1e-3)


@pytest.mark.parametrize("module", MODULES)
def test_linear_schedule(module):
    assert module.linear_schedule(1.0, 0.05, 100, 0) == 1.0
    assert module.linear_schedule(1.0, 0.05, 100, 50) == pytest.approx(0.525)
    assert module.linear_schedule(1.0, 0.05, 100, 1000) == 0.05


# ---------------------------------------------------------------- TD errors and the VDN loss
def batch(n_agents=3, obs_size=4, batch_size=5, time=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(batch_size, time + 1, n_agents, obs_size, generator=g)
    actions = torch.randint(0, 6, (batch_size, time, n_agents), generator=g)
    rewards = torch.randn(batch_size, time, generator=g)
    terminated = (torch.rand(batch_size, time, generator=g) < 0.2).float()
    return obs, actions, rewards, terminated


def networks(module, n_agents=3, obs_size=4, seed=0):
    torch.manual_seed(seed)
    q_networks = [module.QNetwork(obs_size, 6, 8) for _ in range(n_agents)]
    target_networks = [module.QNetwork(obs_size, 6, 8) for _ in range(n_agents)]
    return q_networks, target_networks


@pytest.mark.parametrize("module", MODULES)
def test_td_error_double_q_by_hand(module):
    obs, actions, rewards, terminated = batch(n_agents=1)
    (q_net,), (target_net,) = networks(module, n_agents=1)
    delta, old_val = module.td_error(q_net, target_net, obs[:, :, 0], actions[:, :, 0], rewards, terminated, 0.9, True)
    q, target = q_net(obs[:, :, 0])[0], target_net(obs[:, :, 0])[0]
    for b in range(obs.shape[0]):
        for t in range(actions.shape[1]):
            a_next = q[b, t + 1].argmax()
            expected = rewards[b, t] + 0.9 * (1 - terminated[b, t]) * target[b, t + 1, a_next] - q[b, t, actions[b, t, 0]]
            assert delta[b, t].item() == pytest.approx(expected.item(), abs=1e-5)
            assert old_val[b, t].item() == pytest.approx(q[b, t, actions[b, t, 0]].item(), abs=1e-6)
    delta_max, _ = module.td_error(q_net, target_net, obs[:, :, 0], actions[:, :, 0], rewards, terminated, 0.9, False)
    expected = rewards + 0.9 * (1 - terminated) * target[:, 1:].max(-1).values - q[:, :-1].gather(-1, actions).squeeze(-1)
    torch.testing.assert_close(delta_max, expected)


def test_vdn_loss_is_the_squared_sum_of_local_tds():
    """sum_i delta_i with reward share R/N is VDN's joint TD: R + gamma sum_i Q^-_i - sum_i Q_i (eq. 1)."""
    obs, actions, rewards, terminated = batch()
    q_networks, target_networks = networks(vdn)
    n = len(q_networks)
    deltas = torch.stack([vdn.td_error(q_networks[i], target_networks[i], obs[:, :, i], actions[:, :, i], rewards / n,
                                       terminated, 0.99, True)[0] for i in range(n)], -1)  # fmt: skip
    q_tot = sum(q_networks[i](obs[:, :, i])[0][:, :-1].gather(-1, actions[:, :, i : i + 1]).squeeze(-1) for i in range(n))
    next_q_tot = 0
    for i in range(n):
        next_a = q_networks[i](obs[:, :, i])[0][:, 1:].argmax(-1, keepdim=True)
        next_q_tot = next_q_tot + target_networks[i](obs[:, :, i])[0][:, 1:].gather(-1, next_a).squeeze(-1)
    jtd = rewards + 0.99 * (1 - terminated) * next_q_tot - q_tot
    torch.testing.assert_close(deltas.sum(-1), jtd)


# ---------------------------------------------------------------- Metropolis consensus (the graphs: test_graph.py)
@pytest.mark.parametrize("n_agents", range(2, 11))
def test_metropolis_weights_are_symmetric_doubly_stochastic(n_agents):
    np.random.seed(n_agents)
    for link_prob in (0.1, 0.5, 0.9):
        for _ in range(20):
            adj = random_graph(n_agents, link_prob)
            assert (adj == adj.T).all() and (np.diag(adj) == 0).all()
            W = dvdn.metropolis_weights(adj)
            np.testing.assert_allclose(W, W.T)
            assert (W >= 0).all()
            np.testing.assert_allclose(W.sum(0), 1.0)
            np.testing.assert_allclose(W.sum(1), 1.0)
            assert ((W > 0) == (adj + np.eye(n_agents) > 0)).all()  # weights only on links and self


def test_switching_consensus_converges_to_the_mean():
    np.random.seed(1)
    deltas = torch.randn(4, 7, 8, dtype=torch.float64)  # (batch, time, n_agents)
    x = deltas
    for _ in range(300):
        x = dvdn.consensus(x, torch.as_tensor(dvdn.metropolis_weights(random_graph(8, 0.3))), 1)
        torch.testing.assert_close(x.mean(-1), deltas.mean(-1))  # every round preserves the network mean
    torch.testing.assert_close(x, deltas.mean(-1, keepdim=True).expand_as(x), atol=1e-8, rtol=0)


def test_exact_and_no_consensus():
    deltas = torch.randn(3, 5, 4)
    complete = torch.as_tensor(dvdn.metropolis_weights(np.ones((4, 4)) - np.eye(4)), dtype=torch.float32)
    torch.testing.assert_close(complete, torch.full((4, 4), 0.25))
    delta_minus = 4 * dvdn.consensus(deltas, complete, 1) - deltas
    torch.testing.assert_close(deltas + delta_minus, deltas.sum(-1, keepdim=True).expand_as(deltas))  # exact JTD
    identity = torch.as_tensor(dvdn.metropolis_weights(np.zeros((4, 4))), dtype=torch.float32)
    delta_minus = 4 * dvdn.consensus(deltas, identity, 3) - deltas
    torch.testing.assert_close(deltas + delta_minus, 4 * deltas)


def test_no_links_is_iql_on_the_team_reward():
    """With W = I agent i descends mean((N delta_i)^2), delta_i on R/N: IQL on R for the Q-function N * Q_i."""
    obs, actions, rewards, terminated = batch(n_agents=1)
    (q_net,), (target_net,) = networks(dvdn, n_agents=1)
    delta, _ = dvdn.td_error(q_net, target_net, obs[:, :, 0], actions[:, :, 0], rewards / 3, terminated, 0.99, True)
    for net in (q_net, target_net):  # scale the output layer: Q -> 3 Q
        net.fc2.weight.data *= 3
        net.fc2.bias.data *= 3
    delta_iql, _ = iql.td_error(q_net, target_net, obs[:, :, 0], actions[:, :, 0], rewards, terminated, 0.99, True)
    torch.testing.assert_close(3 * delta, delta_iql)


# ---------------------------------------------------------------- exact consensus: dvdn.py == vdn.py, step for step
def test_dvdn_with_complete_graph_equals_vdn(tmp_path):
    """Same seed, batches and initial weights; clipping off (vdn clips the global norm, dvdn each agent's)."""
    flags = ["--no-cuda", "--seed", "5", "--total-timesteps", "600", "--batch-size", "3", "--buffer-size", "20",
             "--eval-frequency", "600", "--eval-episodes", "1", "--target-network-frequency", "4",
             "--max-grad-norm", "1e9", "--save-model"]  # fmt: skip
    models = {}
    for script, extra in (("vdn.py", []), ("dvdn.py", ["--topology", "complete"]), ("dvdn.py", ["--topology", "none"])):
        cwd = tmp_path / f"{script}{len(extra)}{'-'.join(extra)}"
        cwd.mkdir()
        out = subprocess.run([sys.executable, str(ROOT / script), *flags, *extra], cwd=cwd, check=True,
                             capture_output=True, text=True, timeout=300).stdout  # fmt: skip
        (path,) = cwd.glob("runs/*/*.pt")
        models[script + "-".join(extra)] = (torch.load(path), [ln for ln in out.splitlines() if "episodic_return" in ln])
    (vdn_params, vdn_lines), (dvdn_params, dvdn_lines) = models["vdn.py"], models["dvdn.py--topology-complete"]
    assert vdn_lines == dvdn_lines  # the same episodes were played
    assert len(vdn_lines) >= 12  # episodes last at most 50 steps, so at least 10 gradient steps happened
    for a, b in zip(vdn_params, dvdn_params):
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=0)  # float32 sums in another order, through Adam
    iql_like = models["dvdn.py--topology-none"][0]
    assert any((iql_like[0][k] - vdn_params[0][k]).abs().max() > 1e-4 for k in iql_like[0])  # the check can fail


# ---------------------------------------------------------------- gradient tracking with GTAdam
def test_tracker_mean_equals_mean_gradient():
    np.random.seed(2)
    torch.manual_seed(2)
    n, p = 6, 11
    w = torch.randn(n, p, dtype=torch.float64)
    z, g_prev, m, v = (torch.zeros(n, p, dtype=torch.float64) for _ in range(4))
    for t in range(1, 60):
        W = torch.as_tensor(dvdn_gt.metropolis_weights(random_graph(n, 0.4)))
        g = torch.randn(n, p, dtype=torch.float64) * t
        w_mean = w.mean(0)
        w, z, m, v = dvdn_gt.gtadam_step(W, w, z, g, g_prev, m, v, t, 1e-2, 0.9, 0.999, 1e-8, True)
        g_prev = g
        torch.testing.assert_close(z.mean(0), g.mean(0))
        step = w_mean - w.mean(0)  # mixing keeps the mean, so the mean moves by the mean step only
        torch.testing.assert_close(step, (1e-2 * (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-8)).mean(0))


@pytest.mark.parametrize("bias_correction", [True, False])
def test_no_links_is_adam_on_the_local_gradient(bias_correction):
    """W = I: z_i = g_i and each row does Adam (torch's, when bias-corrected) on its own gradient."""
    torch.manual_seed(3)
    n, p, lr = 3, 5, 1e-2
    w0 = torch.randn(n, p)
    grads = [torch.randn(n, p) for _ in range(25)]
    w, z, g_prev, m, v = w0.clone(), *(torch.zeros(n, p) for _ in range(4))
    for t, g in enumerate(grads, start=1):
        w, z, m, v = dvdn_gt.gtadam_step(torch.eye(n), w, z, g, g_prev, m, v, t, lr, 0.9, 0.999, 1e-8, bias_correction)
        g_prev = g
        torch.testing.assert_close(z, g)
    if bias_correction:
        reference = w0.clone().requires_grad_(True)
        adam = torch.optim.Adam([reference], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        for g in grads:
            reference.grad = g.clone()
            adam.step()
        torch.testing.assert_close(w, reference.detach(), atol=1e-6, rtol=1e-5)
    else:
        m_ref, v_ref, w_ref = torch.zeros(n, p), torch.zeros(n, p), w0.clone()
        for g in grads:
            m_ref, v_ref = 0.9 * m_ref + 0.1 * g, 0.999 * v_ref + 0.001 * g**2
            w_ref = w_ref - lr * m_ref / (v_ref.sqrt() + 1e-8)
        torch.testing.assert_close(w, w_ref)


def test_gt_agents_start_from_the_same_weights(tmp_path):
    """The first checkpoint of a run too short to train (fewer than 5 episodes end in 60 steps, so it stops with "no
    gradient step") holds the agents' untrained networks and parameter rows: all equal."""
    from benchmark.evaluate import unpickle_checkpoint  # the classes were pickled as the script's, run as __main__
    from benchmark.records import load_script

    out = subprocess.run([sys.executable, str(ROOT / "dvdn_gt.py"), "--no-cuda", "--total-timesteps", "60", "--batch-size",
                          "5", "--eval-frequency", "60", "--eval-episodes", "1", "--checkpoint-frequency", "10"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert out.returncode != 0 and "no gradient step" in out.stderr, out.stderr
    (path,) = tmp_path.glob("runs/*/checkpoint.pt")
    q_networks, _, w, *_, gradient_step = unpickle_checkpoint(path, load_script(str(ROOT / "dvdn_gt.py")))["learner"]
    assert gradient_step == 0 and all(torch.equal(w[0], row) for row in w[1:])
    for other in q_networks[1:]:
        for mine, theirs in zip(q_networks[0].parameters(), other.parameters()):
            torch.testing.assert_close(mine, theirs, atol=0, rtol=0)


# ---------------------------------------------------------------- code a child must share with its parent
def test_children_share_their_parents_td_target_consensus_and_loss():
    """dvdn_gt.py's DVDN part is dvdn.py's, which the end-to-end test above ties to VDN; every script's TD error is the
    one the by-hand test checks. A child that drifts from these copies fails here, not by luck in the diff budget."""
    import inspect

    for module in [iql_ps, vdn, vdn_ps, dvdn, dvdn_gt]:
        assert inspect.getsource(module.td_error) == inspect.getsource(iql.td_error), module.__name__
    for name in ["metropolis_weights", "consensus"]:
        assert inspect.getsource(getattr(dvdn_gt, name)) == inspect.getsource(getattr(dvdn, name)), name

    def consensus_and_loss(path):
        lines = (ROOT / path).read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if "# consensus on the TDs" in line)
        end = next(i for i, line in enumerate(lines) if line.strip().startswith("loss = ") and i > start)
        return lines[start : end + 1]

    assert len(consensus_and_loss("dvdn.py")) >= 6
    assert consensus_and_loss("dvdn_gt.py") == consensus_and_loss("dvdn.py")
