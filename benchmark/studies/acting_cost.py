"""CPU time of acting: one env step's Q-values for every agent from its own recurrent network (fc, ReLU, GRU, fc), one
one-step call per agent as iql.py, vdn.py and the DVDN scripts make it, against the same arithmetic through torch's
functional calls (`F.linear`, `torch.gru`), which skip nn.Module's dispatch and nn.GRU's checks. Both give bitwise the
same Q-values (checked over whole episodes before timing); the question is how much of an env step the module calls
cost. No env is stepped: observations are random.

    python -m benchmark.studies.acting_cost --agents 3 --obs-size 30 --hidden-dim 64 --repeats 7
"""

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

from benchmark.checks import at_least_one


@dataclass
class Shape:
    """What both cost studies time: the agents' networks and one episode (gradient_step_cost.py takes these too)."""

    agents: int = 3
    """networks, one per agent (lbf-easy: 3; marbler-arctic: 4)"""
    obs_size: int = 30
    """observation length of one agent (lbf-easy: 30, without the one-hot of the agent id that vdn_ps.py adds)"""
    n_actions: int = 6
    """Q-values per agent"""
    hidden_dim: int = 64
    """fc and GRU width (64: iql.py, vdn.py, dvdn.py; 128: vdn_ps.py, dvdn_gt.py)"""
    episode_steps: int = 50
    """time steps of one episode (lbf: up to 50)"""


@dataclass
class Args(Shape):
    episodes: int = 40
    """episodes per timing"""
    repeats: int = 7
    """timings per path, the two paths alternating (the median is printed)"""


class Net(nn.Module):
    def __init__(self, obs_size: int, n_actions: int, hidden_dim: int):
        super().__init__()
        self.fc1, self.rnn = nn.Linear(obs_size, hidden_dim), nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        self.fc2 = nn.Linear(hidden_dim, n_actions)

    def forward(self, obs, hidden=None):
        x, hidden = self.rnn(F.relu(self.fc1(obs)), hidden)
        return self.fc2(x), hidden


def through_modules(nets, obs, hidden):
    hidden = [None] * len(obs) if hidden is None else hidden
    with torch.no_grad():
        out = [nets[i](torch.as_tensor(obs[i]).view(1, 1, -1), hidden[i]) for i in range(len(obs))]
    return torch.cat([q.view(1, -1) for q, _ in out]), [h for _, h in out]


def functional(nets, obs, hidden):
    hidden = [torch.zeros(1, 1, net.rnn.hidden_size) for net in nets] if hidden is None else hidden
    out = []
    with torch.no_grad():
        for i, net in enumerate(nets):
            x = F.relu(F.linear(torch.as_tensor(obs[i]).view(1, 1, -1), net.fc1.weight, net.fc1.bias))
            y, h = torch.gru(x, hidden[i], net.rnn._flat_weights, True, 1, 0.0, False, False, True)
            out.append((F.linear(y, net.fc2.weight, net.fc2.bias), h))
    return torch.cat([q.view(1, -1) for q, _ in out]), [h for _, h in out]


def episode(act, nets, observations):
    hidden, q_values = None, []
    for obs in observations:
        q, hidden = act(nets, obs, hidden)
        q_values.append(q)
    return torch.stack(q_values)


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.studies.acting_cost")
    at_least_one(agents=args.agents, obs_size=args.obs_size, n_actions=args.n_actions, hidden_dim=args.hidden_dim,
                 episode_steps=args.episode_steps, episodes=args.episodes, repeats=args.repeats)  # fmt: skip
    torch.set_num_threads(1)  # as the scripts
    torch.manual_seed(0)
    nets = [Net(args.obs_size, args.n_actions, args.hidden_dim) for _ in range(args.agents)]
    rng = np.random.default_rng(0)
    observations = [[rng.standard_normal(args.obs_size).astype(np.float32) for _ in range(args.agents)]
                    for _ in range(args.episode_steps)]  # fmt: skip
    if not torch.equal(episode(through_modules, nets, observations), episode(functional, nets, observations)):
        raise SystemExit("error: the functional path's Q-values differ from the modules' on this machine")
    times = {through_modules: [], functional: []}
    for _ in range(args.repeats):
        for act in times:
            start = time.process_time()
            for _ in range(args.episodes):
                episode(act, nets, observations)
            times[act].append((time.process_time() - start) / (args.episodes * args.episode_steps) * 1e6)
    modules, direct = np.median(times[through_modules]), np.median(times[functional])
    print(f"{args.agents} agents, hidden {args.hidden_dim}: through the modules {modules:.1f} us per env step, functional "
          f"{direct:.1f} us (bitwise equal Q-values); the modules cost {modules - direct:.1f} us more ({modules / direct:.2f}x)")
