"""CPU time of one gradient step as the scripts take it, where it goes, and what one network call for all agents would
cost instead. Random episodes, no env: the question is the floor of the training step on one core.

Timed per gradient step (time.process_time, median over --repeats, the paths alternating):
  per-agent   iql.py / vdn.py / dvdn.py: each agent's own network, online and target forward over whole episodes,
              the summed loss, one backward, the norm clip and Adam over all agents' parameters
  its GRU     the same step's GRU calls alone (online forward, target forward, backward through the GRU only)
  one call    vdn_ps.py: one network, the agents stacked into the batch (input grows by the one-hot of the agent id);
              what batching all agents into one call would cost; not the per-agent scripts' floats, so not a
              bitwise-equal speed-up for them
Then one GRU's forward and backward with oneDNN on and off (the same floats? the same time?), and torch's profiler
counts the operators of one per-agent step and lists where its time goes.

    python -m benchmark.studies.gradient_step_cost --agents 3 --obs-size 30 --hidden-dim 64 --episode-steps 50
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import tyro

from benchmark.checks import at_least_one
from benchmark.studies.acting_cost import Net, Shape  # Net: fc -> ReLU -> GRU -> fc, the scripts' QNetwork


@dataclass
class Args(Shape):
    batch_size: int = 32
    """episodes per gradient step, as the scripts"""
    steps: int = 20
    """gradient steps per timing"""
    repeats: int = 7
    """timings per path, the paths alternating (the median is printed)"""


def batch(rng, args, obs_size):
    obs = torch.as_tensor(rng.standard_normal((args.batch_size, args.episode_steps + 1, args.agents, obs_size)),
                          dtype=torch.float32)  # fmt: skip
    actions = torch.as_tensor(rng.integers(args.n_actions, size=(args.batch_size, args.episode_steps, args.agents)))
    rewards = torch.as_tensor(rng.standard_normal((args.batch_size, args.episode_steps)), dtype=torch.float32)
    return obs, actions, rewards


def local_td(net, target, obs, actions, rewards, gamma=0.99):
    """td_error of the scripts (double Q, no terminal step): (batch, time)"""
    q, _ = net(obs)
    with torch.no_grad():
        target_q, _ = target(obs)
        next_q = target_q[:, 1:].gather(-1, q[:, 1:].argmax(-1, keepdim=True)).squeeze(-1)
    return rewards + gamma * next_q - q[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def per_agent_step(nets, targets, optimizer, params, data):
    obs, actions, rewards = data
    n = len(nets)
    deltas = torch.stack([local_td(nets[i], targets[i], obs[:, :, i], actions[:, :, i], rewards / n) for i in range(n)], -1)
    loss = (deltas.sum(-1) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(params, 10.0)
    optimizer.step()


def gru_only_step(nets, targets, data, hidden_dim):
    """The GRU calls of a per-agent step, fed the right shapes, nothing else."""
    obs = data[0]
    x = torch.randn(obs.shape[0], obs.shape[1], hidden_dim, requires_grad=True)
    outs = []
    for net, target in zip(nets, targets):
        outs.append(net.rnn(x)[0])
        with torch.no_grad():
            target.rnn(x)
    torch.stack(outs).sum().backward()


def one_call_step(net, target, optimizer, data, n_agents):
    obs, actions, rewards = data
    b, t1 = obs.shape[:2]
    ids = torch.eye(n_agents).expand(b, t1, -1, -1)
    flat = torch.cat([obs, ids], -1).transpose(1, 2).reshape(b * n_agents, t1, -1)  # agents into the batch
    deltas = local_td(net, target, flat, actions.transpose(1, 2).reshape(b * n_agents, -1),
                      (rewards / n_agents).repeat_interleave(n_agents, 0))  # fmt: skip
    loss = (deltas.view(b, n_agents, -1).sum(1) ** 2).mean()
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 10.0)
    optimizer.step()


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.gradient_step_cost")
    at_least_one(agents=args.agents, obs_size=args.obs_size, n_actions=args.n_actions, hidden_dim=args.hidden_dim,
                 episode_steps=args.episode_steps, batch_size=args.batch_size, steps=args.steps, repeats=args.repeats)
    torch.set_num_threads(1)  # as the scripts
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    nets = [Net(args.obs_size, args.n_actions, args.hidden_dim) for _ in range(args.agents)]
    targets = [Net(args.obs_size, args.n_actions, args.hidden_dim) for _ in range(args.agents)]
    params = [p for net in nets for p in net.parameters()]
    optimizer = optim.Adam(params, lr=3e-4)
    shared = Net(args.obs_size + args.agents, args.n_actions, args.hidden_dim)
    shared_target = Net(args.obs_size + args.agents, args.n_actions, args.hidden_dim)
    shared_optimizer = optim.Adam(shared.parameters(), lr=3e-4)
    data = batch(rng, args, args.obs_size)
    paths = {
        "per-agent (iql.py, vdn.py, dvdn.py)": lambda: per_agent_step(nets, targets, optimizer, params, data),
        "  its GRU calls alone": lambda: gru_only_step(nets, targets, data, args.hidden_dim),
        "one call for all agents (vdn_ps.py)": lambda: one_call_step(shared, shared_target, shared_optimizer, data,
                                                                     args.agents),
    }  # fmt: skip
    for path in paths.values():  # warm up: first calls allocate
        path()
    times = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, path in paths.items():
            start = time.process_time()
            for _ in range(args.steps):
                path()
            times[name].append((time.process_time() - start) / args.steps * 1e3)
    print(f"{args.agents} agents, hidden {args.hidden_dim}, batch {args.batch_size} x {args.episode_steps + 1} steps; "
          f"ms of CPU per gradient step, median of {args.repeats}:")
    for name, values in times.items():
        print(f"  {name:40s} {np.median(values):8.2f}   (range {min(values):.2f}-{max(values):.2f})")

    gru, x = nn.GRU(args.hidden_dim, args.hidden_dim, batch_first=True), torch.randn(args.batch_size, args.episode_steps + 1,
                                                                                  args.hidden_dim, requires_grad=True)
    onednn = {}
    for enabled in [True, False] * args.repeats:  # does oneDNN (mkldnn) change the GRU's floats or its time?
        torch.backends.mkldnn.enabled = enabled
        start = time.process_time()
        for _ in range(args.steps):
            gru.zero_grad()
            y, _ = gru(x)
            y.sum().backward()
        onednn.setdefault(enabled, []).append(((time.process_time() - start) / args.steps * 1e3, y.detach(),
                                               gru.weight_hh_l0.grad.clone()))  # fmt: skip
    torch.backends.mkldnn.enabled = True
    same = all(torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]) for a in onednn[True] for b in onednn[False])
    print(f"one GRU forward and backward: oneDNN on {np.median([t for t, _, _ in onednn[True]]):.2f} ms, off "
          f"{np.median([t for t, _, _ in onednn[False]]):.2f} ms; {'the same' if same else 'DIFFERENT'} outputs and gradients")

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            paths["per-agent (iql.py, vdn.py, dvdn.py)"]()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events if e.key.startswith("aten::")) / args.steps
    print(f"per-agent step under torch's profiler: {calls:.0f} aten operator calls a step "
          f"({total / 1e3 / args.steps / max(calls, 1) * 1e3:.1f} us each on average, profiler overhead included); "
          "self time by operator:")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]:
        print(f"  {e.key:45s} {e.self_cpu_time_total / total:6.1%}  {e.count / args.steps:7.0f} calls a step")
