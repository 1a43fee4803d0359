"""Behaviour inside each script's __main__: acting and training see the same Q-values, padding never reaches a loss, and
GTAdam mixes parameters. The scripts run in this process; a hook at their `tyro.cli` call (after every class is defined,
before any step) reaches into their namespace."""

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import dvdn_gt  # noqa: E402
import envs.graph  # noqa: E402
import iql  # noqa: E402
from test_scripts import SCRIPTS  # noqa: E402


def run_script(script, flags, monkeypatch, tmp_path, on_start=lambda namespace: None):
    """Runs `script` as __main__ with `flags`; on_start(namespace) runs when it parses its flags. Returns its globals."""
    real_cli = tyro.cli

    def cli(*args, **kwargs):
        on_start(sys._getframe(1).f_globals)
        return real_cli(*args, **kwargs)

    monkeypatch.setattr(tyro, "cli", cli)
    monkeypatch.setattr(sys, "argv", [script, "--no-cuda", *flags])
    monkeypatch.chdir(tmp_path)
    return runpy.run_path(str(ROOT / script), run_name="__main__")


@pytest.mark.parametrize("script", SCRIPTS)
def test_training_sees_the_q_values_that_acting_saw(script, monkeypatch, tmp_path):
    """With a buffer of two episodes, every batch holds the episode just played, under the parameters it was played with
    (one gradient step per episode, at its end). The training forward over it must give the Q-values acting computed step
    by step: same agent ids, same inputs, hidden state reset at the episode start."""
    calls = []  # (network, acting?, q-values)

    def record_q_values(namespace):
        forward = namespace["QNetwork"].forward

        def recorded(self, obs, hidden=None):
            q_values, hidden = forward(self, obs, hidden)
            calls.append((self, obs.shape[1] == 1, q_values.detach().clone()))
            return q_values, hidden

        namespace["QNetwork"].forward = recorded

    flags = ["--env", "lbf-easy", "--total-timesteps", "400", "--batch-size", "2", "--buffer-size", "2",
             "--eval-frequency", "100000", "--eval-episodes", "1"]  # fmt: skip
    run_script(script, flags, monkeypatch, tmp_path, record_q_values)

    acted, checked, trainings = {}, 0, 0
    for network, acting, q_values in calls:
        if acting:
            acted.setdefault(network, []).append(q_values[:, 0])  # (n_agents or 1, n_actions)
        elif network in acted:  # an online network's training forward (target networks never act)
            trainings += 1
            episode = torch.stack(acted.pop(network))  # (time, rows, n_actions): this network's acting since the last one
            if trainings > len({n for n, a, _ in calls if a}):  # each network's first batch follows two episodes: skip it
                for row in range(episode.shape[1]):
                    steps = len(episode)
                    assert any(torch.allclose(q_values[b, :steps], episode[:, row], atol=1e-5) for b in range(len(q_values)))
                    checked += 1
    assert checked >= 3


@pytest.mark.parametrize("script", SCRIPTS)
def test_padded_steps_change_no_loss_or_gradient(script, monkeypatch, tmp_path):
    """Episodes of Foraging-5x5-2p-1f end when the food is eaten, so batches hold padded steps. Filling them with garbage
    (observations, actions, rewards, terminal flags) must leave training exactly as it was."""

    padded_batches = []

    def garbage_padding(namespace):
        sample = namespace["ReplayBuffer"].sample

        def sample_with_garbage(self, batch_size, device):
            obs, actions, rewards, terminated, mask = sample(self, batch_size, device)
            pad = mask == 0
            padded_batches.append(bool(pad.any()))
            generator = torch.Generator().manual_seed(len(padded_batches))
            obs[:, 1:][pad] = torch.randint(-5, 5, obs[:, 1:][pad].shape, generator=generator).float()
            actions[pad] = torch.randint(0, 6, actions[pad].shape, generator=generator)
            rewards[pad], terminated[pad] = 7.0, 1.0
            return obs, actions, rewards, terminated, mask

        namespace["ReplayBuffer"].sample = sample_with_garbage

    flags = ["--env", "Foraging-5x5-2p-1f-v3", "--total-timesteps", "800", "--batch-size", "4", "--buffer-size", "10",
             "--eval-frequency", "100000", "--eval-episodes", "1", "--seed", "2", "--no-standardise-rewards"]  # fmt: skip
    (tmp_path / "clean").mkdir(), (tmp_path / "garbage").mkdir()
    clean = run_script(script, flags, monkeypatch, tmp_path / "clean")
    garbage = run_script(script, flags, monkeypatch, tmp_path / "garbage", garbage_padding)
    assert clean["gradient_step"] >= 10 and sum(padded_batches) >= 5  # episodes ended early, batches were padded
    assert torch.equal(online_and_target(clean)[0], online_and_target(garbage)[0])


def local_tds(namespace, reward_share, requires_grad=False):
    """Each agent's TD error on the batch in `namespace`, with iql.td_error, as (batch, time, n_agents), and the mask.
    A network whose input is wider than the observation (a shared one, or DVDN (GT)'s copies of one) reads o_i + one-hot i."""
    names = ["obs_b", "actions_b", "rewards_b", "terminated_b", "mask_b"]
    obs, actions, rewards, terminated, mask = (namespace[name] for name in names)
    args, n = namespace["args"], obs.shape[2]
    deltas = []
    with torch.set_grad_enabled(requires_grad):
        for i in range(n):
            if "q_networks" in namespace:
                network, target = namespace["q_networks"][i], namespace["target_networks"][i]
            else:
                network, target = namespace["q_network"], namespace["target_network"]
            obs_i = obs[:, :, i]
            if network.fc1.in_features == obs.shape[-1] + n:
                agent_id = torch.nn.functional.one_hot(torch.tensor(i), n).float().expand(*obs.shape[:2], n)
                obs_i = torch.cat([obs_i, agent_id], -1)
            delta, _ = iql.td_error(network, target, obs_i, actions[:, :, i], rewards * reward_share, terminated,
                                    args.gamma, args.double_q)  # fmt: skip
            deltas.append(delta)
    return torch.stack(deltas, -1), mask


class RecordedEnv:
    """An env that keeps what each step was given and returned: (actions, terminated, truncated)."""

    def __init__(self, env):
        self.env, self.steps = env, []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, actions):
        out = self.env.step(actions)
        self.steps.append((np.array(actions), out[2], out[3]))
        return out


def online_and_target(namespace):
    """All online parameters and all target parameters, each flattened into one vector."""
    if "q_networks" in namespace:
        online, target = namespace["q_networks"], namespace["target_networks"]
    else:
        online, target = [namespace["q_network"]], [namespace["target_network"]]
    return tuple(flat(p for network in networks for p in network.parameters()) for networks in (online, target))


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_shared_loop_is_the_loop_written_out(script, monkeypatch, tmp_path):
    """The loop every script shares, against what it should do: an action differs from the greedy one of the Q-values
    acting computed with probability epsilon * (n_actions - 1) / n_actions; the buffer stores `terminated` only, so a
    time-out bootstraps; the rewards a gradient step sees are the sampled ones standardised by the running mean and
    variance of all rewards sampled so far; the target network follows target <- tau * online + (1 - tau) * target
    after every F-th gradient step (here tau 0.25, F 2)."""
    envs, acted, stored, sampled, steps = [], [], [], [], []  # steps: (gradient step, online, target, rewards seen)

    def record(namespace):
        make_env, q_step = namespace["make_env"], namespace["q_step"]
        buffer = namespace["ReplayBuffer"]
        add, sample = buffer.add, buffer.sample

        def recorded_env(*args, **kwargs):
            envs.append(RecordedEnv(make_env(*args, **kwargs)))
            return envs[-1]

        def recorded_q_step(*args, **kwargs):
            q_values, hidden = q_step(*args, **kwargs)
            acted.append(q_values.argmax(-1).numpy().copy())
            return q_values, hidden

        def recorded_add(self, obs, actions, reward, next_obs, terminated):
            stored.append(terminated)
            return add(self, obs, actions, reward, next_obs, terminated)

        def recorded_sample(self, batch_size, device):
            batch = sample(self, batch_size, device)
            sampled.append((batch[2].clone(), batch[4].clone()))  # raw rewards and mask
            return batch

        namespace["make_env"], namespace["q_step"] = recorded_env, recorded_q_step
        buffer.add, buffer.sample = recorded_add, recorded_sample

    clip_grad_norm = torch.nn.utils.clip_grad_norm_

    def clip(parameters, max_norm):
        namespace = sys._getframe(1).f_globals
        if not steps or steps[-1][0] != namespace["gradient_step"]:  # the first clip of a step: before any update
            steps.append((namespace["gradient_step"], *online_and_target(namespace), namespace["rewards_b"].clone()))
        return clip_grad_norm(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    total, start_e = 800, 0.6
    flags = ["--env", "Foraging-5x5-2p-1f-v3", "--total-timesteps", str(total), "--batch-size", "3", "--buffer-size", "10",
             "--eval-frequency", "100000", "--eval-episodes", "1", "--start-e", str(start_e), "--end-e", "0",
             "--exploration-steps", str(total), "--tau", "0.25", "--target-network-frequency", "2"]  # fmt: skip
    namespace = run_script(script, flags, monkeypatch, tmp_path, record)
    train_env = envs[0]  # the second is the evaluation env

    # exploration: epsilon falls linearly from 0.6 to 0 (mean 0.3); a random action is one of 6, greedy by chance 1/6
    actions = np.stack([a for a, _, _ in train_env.steps])
    not_greedy = (actions != np.stack(acted[:total])).mean()
    assert not_greedy == pytest.approx(start_e / 2 * 5 / 6, abs=0.06)
    # time-outs bootstrap: the buffer got the env's `terminated`, and both kinds of episode end happened
    assert stored == [terminated for _, terminated, _ in train_env.steps]
    assert any(terminated for _, terminated, _ in train_env.steps) and any(t for _, _, t in train_env.steps)
    # standardised rewards: the running mean and variance are those of every real reward sampled so far
    assert len(steps) >= 10 and len(sampled) == len(steps)
    for k, ((_, _, _, rewards), (raw, mask)) in enumerate(zip(steps, sampled)):
        so_far, prior = torch.cat([r[m > 0] for r, m in sampled[: k + 1]]).double(), 1e-4  # the stats start at 0, 1, 1e-4
        mean = so_far.sum() / (len(so_far) + prior)
        var = (prior * (1 + mean**2) + (so_far**2).sum()) / (len(so_far) + prior) - mean**2
        torch.testing.assert_close(rewards.double(), (raw.double() - mean) / (var + 1e-8).sqrt(), rtol=1e-4, atol=1e-4)
    # target network: updated after gradient steps 2, 4, ... from the online network of that moment
    online = {g: o for g, o, _, _ in steps}
    expected_target = online[0]
    for g, _, target, _ in steps:
        if g > 0 and g % 2 == 0:
            expected_target = 0.25 * online[g] + (1 - 0.25) * expected_target
        torch.testing.assert_close(target, expected_target, atol=1e-6, rtol=0)


def written_out_loss(namespace, independent):
    """The loss of the batch in `namespace`, agent by agent: IQL sums each agent's own squared TD on the team reward R;
    VDN squares the sum of the agents' TDs with reward share R / N."""
    n = namespace["obs_b"].shape[2]
    deltas, mask = local_tds(namespace, 1.0 if independent else 1.0 / n)
    per_step = (deltas**2).sum(-1) if independent else deltas.sum(-1) ** 2
    return ((per_step * mask).sum() / mask.sum()).item()


@pytest.mark.parametrize("script", ["iql.py", "iql_ps.py", "vdn.py", "vdn_ps.py"])
def test_loss_is_the_algorithms_loss_written_out(script, monkeypatch, tmp_path):
    """At every gradient step, seen at the gradient clip (after backward, before any optimiser step), the script's loss is
    its algorithm's loss written out agent by agent: the reward share, the sum and the agent ids all count."""
    losses = []  # (gradient step, script's loss, written-out loss)
    clip_grad_norm = torch.nn.utils.clip_grad_norm_

    def clip(parameters, max_norm):
        namespace = sys._getframe(1).f_globals
        if not losses or losses[-1][0] != namespace["gradient_step"]:  # iql.py clips once per agent: the first sees all
            reference = written_out_loss(namespace, independent=script.startswith("iql"))
            losses.append((namespace["gradient_step"], namespace["loss"].item(), reference))
        return clip_grad_norm(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    flags = ["--env", "lbf-medium", "--total-timesteps", "500", "--batch-size", "3", "--buffer-size", "10",
             "--eval-frequency", "100000", "--eval-episodes", "1"]  # fmt: skip
    run_script(script, flags, monkeypatch, tmp_path)
    assert len(losses) >= 5
    for _, loss, reference in losses:
        assert loss == pytest.approx(reference, rel=1e-5)


@pytest.mark.parametrize("script", ["iql.py", "iql_ps.py", "vdn.py", "vdn_ps.py", "dvdn.py"])
def test_gradient_norm_is_clipped_over_what_each_optimiser_steps(script, monkeypatch, tmp_path):
    """With a clip so small that it always acts, every Adam step sees a gradient of norm exactly --max-grad-norm: in
    iql.py and dvdn.py one optimiser per agent, each agent's gradient clipped on its own; in vdn.py one optimiser over
    all agents, their gradients clipped together (EPyMARL's choice); in the shared-network scripts one network.
    (dvdn_gt.py's clip, per agent before the tracker, is checked by the decentralised-step test.)"""
    max_norm, norms = 1e-6, []
    adam_step = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        grads = [p.grad.flatten() for group in self.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.cat(grads).norm().item())
        return adam_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", step)
    flags = ["--env", "lbf-medium", "--total-timesteps", "500", "--batch-size", "3", "--buffer-size", "10",
             "--eval-frequency", "100000", "--eval-episodes", "1", "--max-grad-norm", str(max_norm)]  # fmt: skip
    namespace = run_script(script, flags, monkeypatch, tmp_path)
    optimisers_per_step = namespace["n_agents"] if script in ("iql.py", "dvdn.py") else 1
    assert namespace["gradient_step"] >= 5
    assert len(norms) == optimisers_per_step * namespace["gradient_step"]
    assert norms == pytest.approx([max_norm] * len(norms), rel=1e-3)


def metropolis_written_out(adj):
    """W_ij = 1 / (1 + max(d_i, d_j)) on each link i-j; the self weight W_ii takes the rest of row i."""
    n, degree = len(adj), adj.sum(1)
    W = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            if adj[i, j]:
                W[i, j] = 1 / (1 + max(degree[i], degree[j]))
        W[i, i] = 1 - W[i].sum()
    return W


def flat(tensors):
    return torch.cat([t.detach().flatten() for t in tensors])


@pytest.mark.parametrize("script", ["dvdn.py", "dvdn_gt.py"])
def test_decentralised_step_is_the_algorithm_written_out(script, monkeypatch, tmp_path):
    """At every gradient step on a switching graph with K = 2 consensus rounds: a new graph was drawn for the step, and
    agent i's gradient (after backward, before clipping) is that of mean((delta_i + delta_-i)^2) with delta_-i held
    constant, delta_-i = N x_i - delta_i, x after K rounds of x_i <- sum_j W_ij x_j over i's neighbours j. DVDN (GT) then
    hands GTAdam this step's W, these gradients clipped, and the last step's as g_prev; its networks load the new w."""
    graphs, steps, gt_calls = [], [], []  # every graph drawn; per step what the first clip saw; GTAdam's inputs, outputs

    def record(namespace):
        random_graph, gtadam_step = namespace["random_graph"], namespace.get("gtadam_step")

        def recorded_graph(*args, **kwargs):
            graphs.append(random_graph(*args, **kwargs))
            return graphs[-1]

        def recorded_gtadam_step(W, w, z, g, g_prev, *rest):
            new_w, new_z, m, v = gtadam_step(W, w, z, g, g_prev, *rest)
            gt_calls.append((W, g.clone(), g_prev.clone(), new_w.clone(), new_z.clone()))
            return new_w, new_z, m, v

        namespace["random_graph"] = recorded_graph  # the script's draw at each step ...
        monkeypatch.setattr(envs.graph, "random_graph", recorded_graph)  # ... and first_graph's at the start
        if gtadam_step:
            namespace["gtadam_step"] = recorded_gtadam_step

    clip_grad_norm = torch.nn.utils.clip_grad_norm_

    def clip(parameters, max_norm):
        namespace = sys._getframe(1).f_globals
        if not steps or steps[-1]["step"] != namespace["gradient_step"]:  # the first clip of a step sees every gradient
            args, networks = namespace["args"], namespace["q_networks"]
            deltas, mask = local_tds(namespace, 1.0 / len(networks), requires_grad=True)
            n, W = deltas.shape[-1], metropolis_written_out(graphs[-1])
            x = deltas.detach()
            for _ in range(args.consensus_rounds):
                x = torch.stack([sum(float(W[i, j]) * x[..., j] for j in range(n) if W[i, j] > 0) for i in range(n)], -1)
            expected, seen = [], []
            for i, network in enumerate(networks):
                delta_minus = n * x[..., i] - deltas[..., i].detach()
                loss = ((deltas[..., i] + delta_minus) ** 2 * mask).sum() / mask.sum()
                expected.append(flat(torch.autograd.grad(loss, list(network.parameters()))))
                seen.append(flat(p.grad for p in network.parameters()))
            steps.append(dict(step=namespace["gradient_step"], graphs=len(graphs), expected=expected, seen=seen,
                              params=torch.stack([flat(network.parameters()) for network in networks])))  # fmt: skip
        return clip_grad_norm(parameters, max_norm)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    flags = ["--env", "lbf-hard", "--total-timesteps", "600", "--batch-size", "3", "--buffer-size", "10",
             "--eval-frequency", "100000", "--eval-episodes", "1", "--link-prob", "0.5",
             "--consensus-rounds", "2"]  # fmt: skip
    namespace = run_script(script, flags, monkeypatch, tmp_path, record)

    assert len(steps) >= 5
    assert [step["graphs"] for step in steps] == list(range(2, len(steps) + 2))  # one at the start, then one per step
    assert any(graph.sum() < 4 * 3 for graph in graphs[1:])  # some step's graph was not complete, so K = 2 is not exact
    for step in steps:
        for expected, seen in zip(step["expected"], step["seen"]):
            torch.testing.assert_close(seen, expected, atol=1e-6, rtol=1e-4)
    if script == "dvdn_gt.py":
        assert len(gt_calls) == len(steps)
        max_norm, g_last = namespace["args"].max_grad_norm, torch.zeros_like(gt_calls[0][1])
        for t, (W, g, g_prev, new_w, new_z) in enumerate(gt_calls):
            torch.testing.assert_close(W, torch.as_tensor(metropolis_written_out(graphs[t + 1]), dtype=torch.float32))
            clipped = [e * min(1.0, max_norm / (e.norm().item() + 1e-6)) for e in steps[t]["expected"]]
            torch.testing.assert_close(g, torch.stack(clipped), atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(g_prev, g_last)
            torch.testing.assert_close(new_z.mean(0), g.mean(0))  # the tracker's network mean is the mean gradient
            final = torch.stack([flat(network.parameters()) for network in namespace["q_networks"]])
            torch.testing.assert_close(steps[t + 1]["params"] if t + 1 < len(steps) else final, new_w, atol=0, rtol=0)
            g_last = g


def test_gtadam_mixes_the_parameters_of_neighbours():
    """Eqs. (4c)-(4d) with a non-identity W and different rows per agent: with g = 0 and zero state the new w is W @ w,
    and one step with gradients matches the equations written out by hand."""
    torch.manual_seed(0)
    adj = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float)  # a path 0 - 1 - 2
    W = torch.as_tensor(dvdn_gt.metropolis_weights(adj))
    w = torch.randn(3, 5, dtype=torch.float64)
    zeros = torch.zeros_like(w)
    new_w, z, m, v = dvdn_gt.gtadam_step(W, w, zeros, zeros, zeros, zeros, zeros, 1, 0.1, 0.9, 0.999, 1e-8, True)
    torch.testing.assert_close(new_w, W @ w)
    assert not torch.allclose(new_w, w)

    g, g_prev, z0 = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5)
    z0, m0, v0 = z0.double(), torch.rand(3, 5, dtype=torch.float64), torch.rand(3, 5, dtype=torch.float64)
    new_w, z, m, v = dvdn_gt.gtadam_step(W, w, z0, g, g_prev, m0, v0, 3, 0.1, 0.9, 0.999, 1e-8, True)
    for i in range(3):
        z_i = sum(W[i, j] * z0[j] for j in range(3)) + g[i] - g_prev[i]
        m_i, v_i = 0.9 * m0[i] + 0.1 * z_i, 0.999 * v0[i] + 0.001 * z_i**2
        step = 0.1 * (m_i / (1 - 0.9**3)) / ((v_i / (1 - 0.999**3)).sqrt() + 1e-8)
        torch.testing.assert_close(new_w[i], sum(W[i, j] * w[j] for j in range(3)) - step)
        torch.testing.assert_close((z[i], m[i], v[i]), (z_i, m_i, v_i))
