# docs and experiment results: README.md#iql_pspy (parent: iql.py)
import os
import random
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import tyro
from torch.utils.tensorboard import SummaryWriter

from envs import Progress, evaluate, make_env


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
    """width of the fc and GRU layers of the shared network"""
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

    def __post_init__(self):  # a bad flag stops the run here, in one line, before anything is made (NaN and inf fail too)
        positive = ["total_timesteps", "buffer_size", "target_network_frequency", "batch_size", "exploration_steps",
                    "hidden_dim", "eval_frequency", "eval_episodes", "learning_rate", "max_grad_norm", "tau"]
        rules = [(lambda x: 0 < x < np.inf, "be positive and finite", positive),
                 (lambda x: 0 <= x <= 1, "lie in [0, 1]", ["gamma", "start_e", "end_e", "eval_epsilon", "tau"]),
                 (lambda x: x >= 0, "be 0 or more", ["checkpoint_frequency"]),
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


def q_step(q_network, obs, hidden, device):
    """One time step of the shared network, agents as the batch: q-values (n_agents, n_actions) and the new hidden state."""
    with torch.no_grad():
        x = torch.cat([torch.as_tensor(np.stack(obs), device=device), torch.eye(len(obs), device=device)], -1)  # o_i + id
        q_values, hidden = q_network(x.unsqueeze(1), hidden)  # (n_agents, 1, n_actions); hidden None: first step
    return q_values.squeeze(1).cpu(), hidden


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


def linear_schedule(start_e: float, end_e: float, duration: int, t: int):
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


if __name__ == "__main__":
    args = tyro.cli(Args)
    # TRY NOT TO MODIFY: checkpoints live in checkpoints.py, imported only by a run that writes or resumes one
    checkpoint = None
    if args.checkpoint_frequency or args.resume:
        import checkpoints

        args, checkpoint = checkpoints.start(Args, args, __file__)  # a resume takes the checkpoint's flags

    # TRY NOT TO MODIFY: env setup, before the run folder is made, so that a bad env leaves none
    try:
        env, eval_env = make_env(args.env, args.seed), make_env(args.env, args.seed + 100_000)
        eval_rng = np.random.default_rng(args.seed + 100_000)  # evaluation's epsilon draws leave training's stream alone
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    n_agents = env.n_agents

    run_name = checkpoint["run_name"] if checkpoint else f"{args.env}__{args.exp_name}__{args.seed}__{int(time.time())}"
    if args.track:
        import wandb  # lazy: untracked runs never import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, sync_tensorboard=True, config=vars(args),
                   name=run_name, id=run_name, resume="allow", save_code=True)  # the same id: a resume goes on with it
    writer = SummaryWriter(f"runs/{run_name}", purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
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

    # ALGO LOGIC: one Q-network shared by all agents, which tell themselves apart by a one-hot id in the input
    q_network = QNetwork(env.obs_size + n_agents, env.n_actions, args.hidden_dim).to(device)
    params = list(q_network.parameters())
    optimizer = optim.Adam(params, lr=args.learning_rate)
    target_network = QNetwork(env.obs_size + n_agents, env.n_actions, args.hidden_dim).to(device)
    target_network.load_state_dict(q_network.state_dict())
    hidden = None

    rb = ReplayBuffer(args.buffer_size, env.episode_limit, n_agents, env.obs_size)
    reward_stats = RunningMeanStd()
    gradient_step = 0
    # ALGO LOGIC: start the game, or go on from a checkpoint: its learner, then its game, buffer and random generators
    if checkpoint:
        q_network, target_network, optimizer, gradient_step = checkpoint["learner"]
        params = list(q_network.parameters())  # the restored network's
        env, eval_env, eval_rng, reward_stats, obs = checkpoints.restore(checkpoint, rb)
    else:
        obs, _ = env.reset()
    start_step = checkpoint["global_step"] if checkpoint else 0
    progress = Progress(start_step, args.total_timesteps, writer)
    for global_step in range(start_step, args.total_timesteps):
        # ALGO LOGIC: put action logic here
        epsilon = linear_schedule(args.start_e, args.end_e, args.exploration_steps, global_step)
        q_values, hidden = q_step(q_network, obs, hidden, device)  # (n_agents, n_actions)
        explore = np.random.random(n_agents) < epsilon  # drawn every step, so the RNG stream never depends on q
        random_actions = np.random.randint(env.n_actions, size=n_agents)
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
            # agents join the batch: (batch, time + 1, n_agents, obs) -> (batch * n_agents, time + 1, obs + n_agents)
            obs_ids = torch.cat([obs_b, torch.eye(n_agents, device=device).expand(*obs_b.shape[:2], -1, -1)], -1)
            deltas, old_vals = td_error(
                q_network, target_network, obs_ids.transpose(1, 2).flatten(0, 1), actions_b.transpose(1, 2).flatten(0, 1),
                rewards_b.repeat_interleave(n_agents, 0), terminated_b.repeat_interleave(n_agents, 0),
                args.gamma, args.double_q,
            )  # fmt: skip
            deltas = deltas.view(-1, n_agents, deltas.shape[-1]).transpose(1, 2)  # (batch, time, n_agents), own TD on R
            loss = (deltas**2 * mask_b.unsqueeze(-1)).sum() / mask_b.sum()  # sum over agents of their own losses
            if not torch.isfinite(loss):  # stop before the update: the parameters and the last checkpoint stay finite
                raise SystemExit(f"error: the TD loss is {loss.item()} at step {global_step + 1}; stopped before updating")

            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(params, args.max_grad_norm)
            optimizer.step()
            gradient_step += 1

            if gradient_step % 10 == 0:
                writer.add_scalar("losses/td_loss", loss.item() / n_agents, global_step)
                q_taken = old_vals.view(len(mask_b), n_agents, -1).mean(1)  # (batch, time), mean over agents
                writer.add_scalar("losses/q_values", q_taken[mask_b > 0].mean().item(), global_step)

            # update target network
            if gradient_step % args.target_network_frequency == 0:
                for target_param, param in zip(target_network.parameters(), q_network.parameters()):
                    target_param.data.copy_(args.tau * param.data + (1.0 - args.tau) * target_param.data)

        # TRY NOT TO MODIFY: progress line (steps, SPS, ETA) every 10k steps and at least every 30 seconds
        progress.update(global_step + 1)

        # ALGO LOGIC: greedy evaluation on a separately seeded env
        if (global_step + 1) % args.eval_frequency == 0 or global_step + 1 == args.total_timesteps:
            print(f"evaluating {args.eval_episodes} episodes at step {global_step + 1}")
            video_path = f"runs/{run_name}/videos/eval_{global_step + 1}.gif" if args.capture_video else None
            eval_returns = evaluate(lambda o, h: q_step(q_network, o, h, device), eval_env, args.eval_episodes,
                                    args.eval_epsilon, eval_rng, video_path)  # epsilon drawn as in training
            print(f"global_step={global_step + 1}, eval_episodic_return={np.mean(eval_returns):.4f}")
            writer.add_scalar("eval/episodic_return", np.mean(eval_returns), global_step + 1)
            if video_path and args.track:
                wandb.log({"eval/video": wandb.Video(video_path, format="gif")})

        # ALGO LOGIC: a checkpoint at the first episode end after every checkpoint_frequency steps; the learner goes last
        if args.checkpoint_frequency and (terminated or truncated):
            checkpoints.save_if_due(args, run_name, global_step + 1, writer, rb,
                                    loop=(env, eval_env, eval_rng, reward_stats, obs),
                                    learner=(q_network, target_network, optimizer, gradient_step))

    if gradient_step == 0:  # fewer than --batch-size episodes ended: a network that never trained is not saved
        raise SystemExit(f"error: no gradient step in {args.total_timesteps} steps; raise --total-timesteps")
    if args.save_model:
        model_path = f"runs/{run_name}/{args.exp_name}.pt"
        torch.save(q_network.state_dict(), model_path)
        print(f"model saved to {model_path}")

    env.close()
    eval_env.close()
    writer.close()
