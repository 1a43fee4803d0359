# docs and experiment results: docs/multiprocess.md (parent: dvdn_gt.py)
import datetime
import os
import random
import sys
import time
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parameters_to_vector, vector_to_parameters
import tyro
from torch.utils.tensorboard import SummaryWriter

from envs import Progress, make_env
from envs.graph import first_graph, link_prob_error, random_graph


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """name of the experiment; defaults to the file name so runs group by script"""
    seed: int = 1
    """seed for python, numpy, torch and the environment"""
    torch_deterministic: bool = True
    """if True, set torch.backends.cudnn.deterministic = True"""
    cuda: bool = True
    """if True and a GPU is visible, train on it"""
    track: bool = False
    """if True, mirror the TensorBoard scalars to Weights & Biases"""
    wandb_project_name: str = "ma-q-learning"
    """wandb project (one name shared by all the scripts)"""
    wandb_entity: Optional[str] = None
    """wandb team or user; None means your default entity"""
    save_model: bool = False
    """if True, save the agents' parameters to runs/{run_name}/{exp_name}.pt at the end"""
    capture_video: bool = False
    """if True, film the first episode of every evaluation to runs/{run_name}/videos/ (GIF; sent to wandb with --track)"""
    checkpoint_frequency: int = 0
    """environment steps between checkpoints of the whole training state, written at the next episode end (0: never)"""
    checkpoint_dir: str = "runs"
    """checkpoints go to {checkpoint-dir}/{run_name}/checkpoint.pt; point it outside the checkout for long runs"""
    resume: Optional[str] = None
    """checkpoint file (or its folder) to continue; flags not given again take the checkpoint's values"""

    # Algorithm specific arguments
    env: str = "lbf-easy"
    """env preset: lbf-{easy,medium,hard}, marbler-{arctic,material,pcp,warehouse}[-exact], mpe-{spread,tag,adversary}"""
    total_timesteps: int = 2_000_000
    """environment steps to train for"""
    learning_rate: float = 3e-4
    """Adam learning rate"""
    buffer_size: int = 5000
    """replay memory size in episodes"""
    gamma: float = 0.99
    """discount factor"""
    target_network_frequency: int = 200
    """gradient steps between target-network updates"""
    tau: float = 1.0
    """target-network update rate: 1 copies the online network (a hard update), below 1 blends it in (a soft update)"""
    batch_size: int = 32
    """episodes per gradient step; training starts once this many episodes are stored"""
    start_e: float = 1.0
    """epsilon at the start of training"""
    end_e: float = 0.05
    """epsilon after the exploration phase"""
    exploration_steps: int = 50_000
    """environment steps over which epsilon decays linearly from start-e to end-e"""
    max_grad_norm: float = 10.0
    """gradient-norm clip of each update"""
    hidden_dim: int = 128
    """width of the fc and GRU layers of each agent's network (vdn_ps.py's width: GT emulates its shared network)"""
    double_q: bool = True
    """if True, the online network picks the next action and the target network values it (double Q-learning)"""
    standardise_rewards: bool = True
    """if True, standardise the team reward with its running mean and standard deviation"""
    eval_frequency: int = 50_000
    """environment steps between greedy evaluations"""
    eval_episodes: int = 100
    """episodes per greedy evaluation, on a separately seeded env"""
    eval_epsilon: float = 0.0
    """epsilon of the evaluation policy (0: greedy)"""
    topology: Literal["switching", "static", "complete", "none"] = "switching"
    """communication graph: a new random connected graph every training step, one drawn once, all-to-all, or no links"""
    link_prob: float = 0.5
    """probability that each link is up when a random graph is drawn"""
    consensus_rounds: int = 1
    """Metropolis averaging rounds on the local TDs per training step (K)"""
    peer_timeout: float = 60.0
    """seconds an agent waits for the others to meet at the start, and for each message, before it stops naming the one lost"""
    beta1: float = 0.9
    """GTAdam decay of the first moment of the tracker z"""
    beta2: float = 0.999
    """GTAdam decay of the second moment of the tracker z"""
    adam_eps: float = 1e-8
    """GTAdam epsilon in the denominator"""
    bias_correction: bool = True
    """if True, GTAdam divides m and v by (1 - beta^t) as Adam does"""

    def __post_init__(self):  # a bad flag stops the run here, in one line, before anything is made (NaN and inf fail too)
        positive = ["total_timesteps", "buffer_size", "target_network_frequency", "batch_size", "exploration_steps",
                    "hidden_dim", "eval_frequency", "eval_episodes", "learning_rate", "max_grad_norm", "tau"]
        rules = [(lambda x: 0 < x < np.inf, "be positive and finite", positive + ["adam_eps"]),
                 (lambda x: 0 <= x <= 1, "lie in [0, 1]", ["gamma", "start_e", "end_e", "eval_epsilon", "tau", "link_prob"]),
                 (lambda x: 0 <= x < 1, "lie in [0, 1)", ["beta1", "beta2"]),
                 (lambda x: 0 < x < np.inf, "be positive and finite", ["peer_timeout"]),
                 (lambda x: x >= 0, "be 0 or more", ["checkpoint_frequency", "consensus_rounds"]),
                 (lambda x: 0 <= x < 2**32 - 100_000, f"lie in [0, {2**32 - 100_001}]", ["seed"])]  # eval env: seed + 1e5
        for ok, rule, names in rules:
            for name in [name for name in names if not ok(getattr(self, name))]:
                raise SystemExit(f"error: --{name.replace('_', '-')} must {rule}, got {getattr(self, name)}")
        if self.end_e > self.start_e:
            raise SystemExit(f"error: --end-e ({self.end_e}) cannot exceed --start-e ({self.start_e})")
        if self.batch_size > self.buffer_size:
            raise SystemExit(f"error: --batch-size ({self.batch_size}) cannot exceed --buffer-size ({self.buffer_size})")


# ALGO LOGIC: initialize agent here:
class QNetwork(nn.Module):
    """fc -> ReLU -> GRU -> fc. One step of nn.GRU is one GRUCell step; whole episodes train in one call."""

    def __init__(self, obs_size: int, n_actions: int, hidden_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(obs_size, hidden_dim)
        self.rnn = nn.GRU(hidden_dim, hidden_dim, batch_first=True)
        self.fc2 = nn.Linear(hidden_dim, n_actions)

    def forward(self, obs: torch.Tensor, hidden: Optional[torch.Tensor] = None):
        x, hidden = self.rnn(F.relu(self.fc1(obs)), hidden)  # (batch, time, hidden_dim), starts from zeros if None
        return self.fc2(x), hidden  # q-values (batch, time, n_actions)


def q_step(q_networks, obs, hidden, device):
    """One time step of every agent's recurrent network: q-values (n_agents, n_actions) and the new hidden states."""
    hidden = [None] * len(obs) if hidden is None else hidden  # None: first step of an episode
    ids = torch.eye(dist.get_world_size(), device=device)[dist.get_rank() :]  # this process's agent i appends one-hot(i)
    with torch.no_grad():
        out = [q_networks[i](torch.cat([torch.as_tensor(obs[i], device=device), ids[i]]).view(1, 1, -1), hidden[i])
               for i in range(len(obs))]  # fmt: skip
    return torch.cat([q.view(1, -1) for q, _ in out]).cpu(), [h for _, h in out]


def td_error(q_network, target_network, obs, actions, rewards, terminated, gamma: float, double_q: bool):
    """delta = r + gamma * (1 - terminated) * Q^-(o', argmax_u Q(o', u)) - Q(o, a), and Q(o, a); shapes (batch, time).

    obs: (batch, time + 1, obs_size) whole episodes from t = 0, actions, rewards, terminated: (batch, time)."""
    q_values, _ = q_network(obs)  # (batch, time + 1, n_actions)
    with torch.no_grad():
        target_q, _ = target_network(obs)
        next_actions = (q_values if double_q else target_q)[:, 1:].argmax(-1, keepdim=True)
        next_q = target_q[:, 1:].gather(-1, next_actions).squeeze(-1)
    old_val = q_values[:, :-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    return rewards + gamma * (1.0 - terminated) * next_q - old_val, old_val


class ReplayBuffer:
    """Whole episodes in a ring of `capacity` slots, zero-padded to the episode limit; `mask` marks real steps."""

    def __init__(self, capacity: int, episode_limit: int, n_agents: int, obs_size: int):
        self.obs = np.zeros((capacity, episode_limit + 1, n_agents, obs_size), dtype=np.float32)
        self.actions = np.zeros((capacity, episode_limit, n_agents), dtype=np.int64)
        self.rewards = np.zeros((capacity, episode_limit), dtype=np.float32)  # team reward
        self.terminated = np.zeros((capacity, episode_limit), dtype=np.float32)
        self.mask = np.zeros((capacity, episode_limit), dtype=np.float32)
        self.capacity, self.pos, self.size, self.t = capacity, 0, 0, 0

    def add(self, obs, actions, reward, next_obs, terminated):
        """Writes step t of the episode being recorded into slot pos."""
        p, t = self.pos, self.t
        self.obs[p, t], self.obs[p, t + 1], self.actions[p, t] = np.stack(obs), np.stack(next_obs), actions
        self.rewards[p, t], self.terminated[p, t], self.mask[p, t], self.t = reward, terminated, 1.0, t + 1

    def end_episode(self):
        """Clears what an older, longer episode left in the slot, then moves to the next slot."""
        p, t = self.pos, self.t
        self.obs[p, t + 1 :], self.actions[p, t:], self.rewards[p, t:] = 0, 0, 0
        self.terminated[p, t:], self.mask[p, t:] = 0, 0
        self.pos, self.size, self.t = (p + 1) % self.capacity, min(self.size + 1, self.capacity), 0

    def sample(self, batch_size: int, device):
        """Episodes drawn uniformly without replacement, cut to the longest one drawn."""
        idx = np.random.choice(self.size, batch_size, replace=False)
        t = int(self.mask[idx].sum(1).max())
        data = (self.obs[idx, : t + 1], self.actions[idx, :t], self.rewards[idx, :t], self.terminated[idx, :t],
                self.mask[idx, :t])  # fmt: skip
        return [torch.as_tensor(x, device=device) for x in data]


class RunningMeanStd:
    """Running mean and variance of a stream of numbers (parallel-batch Welford update)."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: torch.Tensor):
        batch_mean, batch_var, n = x.mean().item(), x.var(unbiased=False).item(), x.numel()
        delta, total = batch_mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.var = (self.var * self.count + batch_var * n + delta**2 * self.count * n / total) / total
        self.count = total


def metropolis_weights(adj: np.ndarray):
    """Metropolis-Hastings mixing matrix: symmetric, rows and columns sum to 1."""
    deg = adj.sum(axis=1)
    w = adj / (1.0 + np.maximum(deg[:, None], deg[None, :]))  # W_ij = 1 / (1 + max(d_i, d_j)) on edges
    w[np.diag_indices_from(w)] = 1.0 - w.sum(axis=1)  # self weight takes the remainder
    return w


class Links:
    """This process is agent i: its point-to-point links to the other agents' processes (torch.distributed, gloo), and
    the bytes it has sent over them, by kind: "learning" (consensus messages) and "world" (the joint action)."""

    def __init__(self, store):
        self.i, self.store, self.sent = dist.get_rank(), store, {"learning": 0, "world": 0}

    def exchange(self, x: torch.Tensor, peers, kind: str):
        """Sends x to each peer and receives each peer's tensor of the same shape: {peer: tensor}, on x's device."""
        payload = x.detach().cpu().contiguous()  # gloo carries CPU tensors
        received = {j: torch.empty_like(payload) for j in peers}
        works = [(j, dist.irecv(received[j], j)) for j in peers] + [(j, dist.isend(payload, j)) for j in peers]
        for j, work in works:
            try:
                work.wait()
            except RuntimeError:  # gloo's error: the link closed, or nothing came within --peer-timeout
                self.stop(j)
        self.sent[kind] += payload.nbytes * len(peers)
        return {j: received[j].to(x.device) for j in peers}

    def stop(self, j: int):
        """Ends this process with one line naming the lost agent: the first that any agent posted to the rendezvous store
        (so an agent whose neighbour stopped on losing a third names the third), else j, when the store is gone too."""
        try:
            lost = self.store.compare_set("lost_agent", "", str(j)).decode()
        except RuntimeError:
            lost = str(j)
        raise SystemExit(f"error: agent {self.i} stops: agent {lost} is lost (its link closed, or it sent nothing within "
                         "--peer-timeout); the team cannot train without it")


class WorldCopy:
    """This process's copy of the shared world, seeded as every other copy. Each step agent i sends its action to every
    other agent and receives theirs (the simulator's traffic, not a learning message), every copy steps with the same joint
    action, and agent i sees only its own observation and the team reward."""

    def __init__(self, env, links: Links):
        self.env, self.links, self.i = env, links, links.i
        self.obs_size, self.n_actions, self.episode_limit = env.obs_size, env.n_actions, env.episode_limit
        self.others = [j for j in range(env.n_agents) if j != self.i]

    def reset(self):
        obs, info = self.env.reset()
        return obs[self.i : self.i + 1], info  # (o_i,)

    def step(self, actions):
        received = self.links.exchange(torch.as_tensor(actions), self.others, "world")  # actions: (1,), agent i's
        joint = np.array([actions[0] if j == self.i else received[j].item() for j in range(self.env.n_agents)])
        obs, rewards, terminated, truncated, info = self.env.step(joint)
        return obs[self.i : self.i + 1], [sum(rewards)], terminated, truncated, info  # the team reward, as one number

    def film(self, path: str):
        if self.i == 0:  # every copy shows the same world: agent 0 films it
            self.env.film(path)

    def close(self):
        self.env.close()


def consensus(deltas: torch.Tensor, W: torch.Tensor, rounds: int, links: Links):
    """x_i(0) = delta_i, x_i(k+1) = sum_j W_ij x_j(k): each round agent i sends x_i(k) to its neighbours (W_ij > 0) and
    receives theirs, point to point. deltas: agent i's own, any shape; W: the step's whole matrix, of which it reads row i"""
    i, x = links.i, deltas
    neighbours = [j for j in range(len(W)) if j != i and W[i, j] > 0]
    for _ in range(rounds):
        received = links.exchange(x, neighbours, "learning")
        x = W[i, i] * x + sum(W[i, j] * received[j] for j in neighbours)
    return x


def gtadam_step(W, w, z, g, g_prev, m, v, t: int, lr: float, beta1: float, beta2: float, eps: float, bias_correction: bool,
                links: Links):
    """Gradient tracking with an Adam step, eqs. (4c)-(4d). Every (n_params,) tensor is agent i's, and it mixes its w and
    z with its neighbours' (W_ij > 0) only, point to point. Returns the new w, z, m, v."""
    z = consensus(z, W, 1, links) + g - g_prev  # (4c): the network mean of z stays the mean of the newest local gradients
    m = beta1 * m + (1 - beta1) * z
    v = beta2 * v + (1 - beta2) * z**2
    m_hat, v_hat = (m / (1 - beta1**t), v / (1 - beta2**t)) if bias_correction else (m, v)
    w = consensus(w, W, 1, links) - lr * m_hat / (v_hat.sqrt() + eps)  # (4d): mix with the neighbours, step along z
    return w, z, m, v


def linear_schedule(start_e: float, end_e: float, duration: int, t: int):
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


if __name__ == "__main__":
    args = tyro.cli(Args)
    if args.resume or args.checkpoint_frequency:
        raise SystemExit(f"error: {os.path.basename(__file__)} keeps no checkpoints: drop --resume and --checkpoint-frequency")
    # TRY NOT TO MODIFY: env setup, before the run folder is made, so that a bad env leaves none
    try:
        env, eval_env = make_env(args.env, args.seed), make_env(args.env, args.seed + 100_000)
        eval_rng = np.random.default_rng(args.seed + 100_000)  # evaluation's epsilon draws leave training's stream alone
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    n_agents = env.n_agents

    if error := link_prob_error(args.topology, n_agents, args.link_prob):  # a --link-prob that rarely connects
        raise SystemExit(f"error: {error}")
    # distribution: torchrun starts one process per agent; this one is agent i and holds agent i's learner only
    if not {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"} <= set(os.environ):
        raise SystemExit(f"error: start this script with torchrun, one process per agent: torchrun --nproc-per-node "
                         f"{n_agents} {os.path.basename(__file__)} --env {args.env} (see docs/multiprocess.md)")
    if int(os.environ["WORLD_SIZE"]) != n_agents:
        if int(os.environ["RANK"]) > 0:  # agent 0 says why, in one line; torchrun ends the others when it stops
            time.sleep(args.peer_timeout)
            raise SystemExit(1)
        raise SystemExit(f"error: --env {args.env} has {n_agents} agents but torchrun started {os.environ['WORLD_SIZE']} "
                         f"processes; start {n_agents} (--nproc-per-node {n_agents}, or nodes x processes = {n_agents})")
    try:
        timeout = datetime.timedelta(seconds=args.peer_timeout)
        store, i, _ = next(dist.rendezvous("env://", timeout=timeout))
        dist.init_process_group("gloo", store=store, rank=i, world_size=n_agents, timeout=timeout)
    except RuntimeError as e:
        raise SystemExit(f"error: the {n_agents} agents did not all meet within --peer-timeout ({type(e).__name__})")
    links = Links(store)
    env, eval_env = WorldCopy(env, links), WorldCopy(eval_env, links)
    sys.__stdout__.reconfigure(line_buffering=True, write_through=False)  # one write per line (torchrun runs python -u)
    if i > 0:
        sys.stdout = open(os.devnull, "w")  # every copy of the world plays the same episodes: agent 0 prints the team's lines
    run_name = f"{args.env}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_name = store.compare_set("run_name", "", run_name).decode()  # the first agent's name, so that all share a folder
    if args.track:
        import wandb  # lazy: untracked runs never import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=f"{run_name}/agent_{i}", id=f"{run_name}__agent_{i}", resume="allow", save_code=True)  # one per agent
    writer = SummaryWriter(f"runs/{run_name}/agent_{i}")  # agent i's own scalars; the team's charts are alike in all
    table = "\n".join([f"|{key}|{value}|" for key, value in vars(args).items()])
    writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
    print(f"run folder: runs/{run_name} (TensorBoard: tensorboard --logdir runs)")

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    torch.set_num_threads(1)  # small networks: more threads gain little, and lose several-fold on a busy machine

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # ALGO LOGIC: agent i's Q-network, input o_i + one-hot(i), starting from the weights all agents start from (the agreed
    # seed's first draw, as in dvdn_gt.py)
    q_network = QNetwork(env.obs_size + n_agents, env.n_actions, args.hidden_dim).to(device)
    target_network = QNetwork(env.obs_size + n_agents, env.n_actions, args.hidden_dim).to(device)
    target_network.load_state_dict(q_network.state_dict())
    # GTAdam state, agent i's own (n_params,): parameters w, tracker z, last local gradient g_prev, moments m and v
    w = parameters_to_vector(q_network.parameters()).detach()
    z, g_prev, m, v = torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(w), torch.zeros_like(w)
    hidden = None
    adj = first_graph(args.topology, n_agents, args.link_prob)

    rb = ReplayBuffer(args.buffer_size, env.episode_limit, 1, env.obs_size)  # agent i's observations and actions, team reward
    reward_stats = RunningMeanStd()
    gradient_step = 0

    # ALGO LOGIC: start the game (this script keeps no checkpoints)
    obs, _ = env.reset()
    start_step = 0
    progress = Progress(start_step, args.total_timesteps, writer)
    for global_step in range(start_step, args.total_timesteps):
        # ALGO LOGIC: put action logic here
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_steps, global_step)
        q_values, hidden = q_step([q_network], obs, hidden, device)  # (1, n_actions)
        explore = np.random.random(n_agents)[i : i + 1] < epsilon  # the team's draws from the shared stream, as in one process
        random_actions = np.random.randint(env.n_actions, size=n_agents)[i : i + 1]  # agent i keeps its own
        actions = np.where(explore, random_actions, q_values.argmax(-1).numpy())

        # TRY NOT TO MODIFY: execute the game and log data.
        next_obs, rewards, terminated, truncated, info = env.step(actions)
        if "episode" in info:
            print(f"global_step={global_step}, episodic_return={info['episode']['r']:.4f}")
            writer.add_scalar("charts/episodic_return", info["episode"]["r"], global_step)
            writer.add_scalar("charts/episodic_length", info["episode"]["l"], global_step)
            writer.add_scalar("charts/epsilon", epsilon, global_step)

        # TRY NOT TO MODIFY: store the step with the team reward; `terminated` only, so a time-out bootstraps
        rb.add(obs, actions, sum(rewards), next_obs, terminated)

        # TRY NOT TO MODIFY: CRUCIAL step easy to overlook
        obs = next_obs
        if terminated or truncated:
            rb.end_episode()
            obs, _ = env.reset()
            hidden = None

        # ALGO LOGIC: training, one gradient step per finished episode
        if (terminated or truncated) and rb.size >= args.batch_size:
            obs_b, actions_b, rewards_b, terminated_b, mask_b = rb.sample(args.batch_size, device)
            if args.standardise_rewards:
                reward_stats.update(rewards_b[mask_b > 0])
                rewards_b = (rewards_b - reward_stats.mean) / np.sqrt(reward_stats.var + 1e-8)
            obs_ids = torch.cat([obs_b, torch.eye(n_agents, device=device)[i : i + 1].expand(*obs_b.shape[:2], -1, -1)], -1)
            deltas, old_vals = td_error(q_network, target_network, obs_ids[:, :, 0], actions_b[:, :, 0], rewards_b / n_agents,
                                        terminated_b, args.gamma, args.double_q)  # (batch, time): agent i's, reward share R/N

            # consensus on the TDs over this step's graph, eq. (2); delta_-i estimates the others' sum, eq. (4a)
            if args.topology == "switching":
                adj = random_graph(n_agents, args.link_prob)
            W = torch.as_tensor(metropolis_weights(adj), dtype=torch.float32, device=device)
            learning_bytes = links.sent["learning"]
            delta_minus = n_agents * consensus(deltas.detach(), W, args.consensus_rounds, links) - deltas.detach()
            # agent i minimises mean((delta_i + delta_-i)^2) with delta_-i held constant
            loss = ((deltas + delta_minus) ** 2 * mask_b).sum() / mask_b.sum()
            if not torch.isfinite(loss):  # stop before the update: the parameters and the last checkpoint stay finite
                raise SystemExit(f"error: the TD loss is {loss.item()} at step {global_step + 1}; stopped before updating")

            q_network.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
            g = parameters_to_vector(p.grad for p in q_network.parameters())  # 4b
            w, z, m, v = gtadam_step(W, w, z, g, g_prev, m, v, gradient_step + 1, args.learning_rate, args.beta1, args.beta2,
                                     args.adam_eps, args.bias_correction, links)  # fmt: skip
            g_prev = g
            vector_to_parameters(w, q_network.parameters())
            gradient_step += 1

            # what agent i sent in this step's messages: 4 bytes x degree x (K rounds x TD values + its w and z, 2 x n_params)
            writer.add_scalar("comms/learning_bytes", links.sent["learning"] - learning_bytes, global_step)
            writer.add_scalar("comms/degree", adj[i].sum(), global_step)
            writer.add_scalar("comms/td_values", deltas.numel(), global_step)
            if gradient_step % 10 == 0:  # agent i's own: the joint TD's error and the parameters' spread need a centre
                writer.add_scalar("losses/td_loss", loss.item(), global_step)
                writer.add_scalar("losses/q_values", old_vals[mask_b > 0].mean().item(), global_step)

            # update target network
            if gradient_step % args.target_network_frequency == 0:
                for target_param, param in zip(target_network.parameters(), q_network.parameters()):
                    target_param.data.copy_(args.tau * param.data + (1.0 - args.tau) * target_param.data)

        # TRY NOT TO MODIFY: progress line (steps, SPS, ETA) every 10k steps and at least every 30 seconds
        progress.update(global_step + 1)

        # ALGO LOGIC: greedy evaluation on a separately seeded env
        if (global_step + 1) % args.eval_frequency == 0 or global_step + 1 == args.total_timesteps:
            print(f"evaluating {args.eval_episodes} episodes at step {global_step + 1}")
            eval_returns = []
            video_path = f"runs/{run_name}/videos/eval_{global_step + 1}.gif" if args.capture_video else None
            for _ in range(args.eval_episodes):
                if video_path and not eval_returns:
                    eval_env.film(video_path)  # rendering draws no random numbers: filming changes nothing
                eval_obs, _ = eval_env.reset()
                eval_hidden, eval_done = None, False
                while not eval_done:
                    eval_q, eval_hidden = q_step([q_network], eval_obs, eval_hidden, device)  # acts on o_i alone
                    eval_explore = eval_rng.random(n_agents)[i : i + 1] < args.eval_epsilon  # drawn every step, as in training
                    eval_random = eval_rng.integers(env.n_actions, size=n_agents)[i : i + 1]
                    eval_actions = np.where(eval_explore, eval_random, eval_q.argmax(-1).numpy())
                    eval_obs, _, eval_terminated, eval_truncated, eval_info = eval_env.step(eval_actions)
                    eval_done = eval_terminated or eval_truncated
                eval_returns.append(eval_info["episode"]["r"])
            print(f"global_step={global_step + 1}, eval_episodic_return={np.mean(eval_returns):.4f}")
            writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step + 1)
            if video_path and args.track and i == 0:
                wandb.log({"eval/video": wandb.Video(video_path, format="gif")})

    if gradient_step == 0:  # fewer than --batch-size episodes ended: a network that never trained is not saved
        raise SystemExit(f"error: no gradient step in {args.total_timesteps} steps; raise --total-timesteps")
    if args.save_model:
        model_path = f"runs/{run_name}/agent_{i}/{args.exp_name}.pt"
        torch.save(q_network.state_dict(), model_path)
        print(f"model saved to {model_path}")

    print(f"agent {i} sent {links.sent['learning']} bytes of learning messages in {gradient_step} gradient steps and "
          f"{links.sent['world']} bytes of actions to the world's copies", file=sys.__stdout__)  # every agent reports
    env.close()
    eval_env.close()
    writer.close()
    dist.destroy_process_group()
