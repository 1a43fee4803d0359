"""Evaluate a saved model without training: the script's own network and acting code, N episodes, mean return with a CI.

    python -m benchmark.evaluate runs/lbf-easy__vdn_ps__1__1764070000/vdn_ps.pt --episodes 500 --epsilon 0.05
    python -m benchmark.evaluate /data/runs/lbf-easy__iql_ps__2__1764070000/checkpoint.pt --video team.gif
    python -m benchmark.evaluate /data/runs/lbf-hard__dvdn_gt__3__1796385054/checkpoint.pt --episodes 200 --lbf-food
    python -m benchmark.evaluate /data/runs/marbler-pcp-exact__dvdn__1__1796400900/checkpoint.pt --episodes 100 --ends

A model file (--save-model) gives the script and env by its run folder's name ({env}__{exp_name}__{seed}__{unix_time})
and the network sizes by its parameters; a checkpoint (--checkpoint-frequency) holds its networks itself. The env is
seeded like the script's evaluation env (seed + 100000) unless --env-seed is given, so the
first evaluation of a run whose only evaluation is its last step is reproduced exactly.
"""

import pickle
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import tyro

from benchmark.records import RUN_FOLDER, load_script
from benchmark.report import bootstrap_ci
from envs import env_family, make_env
from envs import evaluate as play

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    model: tyro.conf.Positional[str]
    """a --save-model file (runs/{run_name}/{exp_name}.pt), or a checkpoint ({checkpoint-dir}/{run_name}/checkpoint.pt)"""
    episodes: int = 100
    """evaluation episodes"""
    epsilon: float = 0.0
    """epsilon of the evaluation policy (0: greedy), drawn as the scripts' --eval-epsilon draws it"""
    env_seed: Optional[int] = None
    """seed of the evaluation env and its epsilon draws; default: the run's seed + 100000, as in training"""
    video: Optional[str] = None
    """if given, film the first episode to this GIF file"""
    lbf_food: bool = False
    """LBF only: also count the food eaten by food level, and the episodes a team ends standing still"""
    ends: bool = False
    """also count how the episodes end (task done, time-out, MARBLER's violations by kind), their mean length, and
    what MARBLER's PCP and Material Transport leave at the end (prey not captured, material not delivered), or what
    each Warehouse robot picks up and delivers"""


def unpickle_checkpoint(path: Path, script):
    """A training checkpoint, whose classes were pickled as members of the training script run as __main__."""

    class ScriptUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            return getattr(script, name) if module == "__main__" else super().find_class(module, name)

    pickle_module = types.SimpleNamespace(**{**vars(pickle), "Unpickler": ScriptUnpickler})
    return torch.load(path, weights_only=False, map_location="cpu", pickle_module=pickle_module)


def load_agents(model: Path):
    """(script module, env name, run seed, networks): a list of per-agent networks, or one shared network (the _ps scripts).
    `model` is a --save-model file or a checkpoint (or its folder), inside the run folder whose name gives the script."""
    match = RUN_FOLDER.fullmatch((model if model.is_dir() else model.parent).name)
    if not match:
        raise SystemExit(f"error: {model} is not inside a run folder named {{env}}__{{exp_name}}__{{seed}}__{{unix_time}}")
    env_name, exp_name, seed = match.group(1), match.group(2), int(match.group(3))
    if model.is_dir():  # a run folder: its checkpoint, else its --save-model file
        model = next((p for p in [model / "checkpoint.pt", model / f"{exp_name}.pt"] if p.is_file()), model / "checkpoint.pt")
    if not model.is_file():
        raise SystemExit(f"error: no model at {model} (give a --save-model file, a checkpoint.pt or a run folder with one)")
    if not (ROOT / f"{exp_name}.py").is_file():
        raise SystemExit(f"error: the run folder names the script {exp_name}.py, which is not in {ROOT}")
    script = load_script(str(ROOT / f"{exp_name}.py"))
    try:
        if model.name == "checkpoint.pt":
            checkpoint = unpickle_checkpoint(model, script)
            print(f"{model}: step {checkpoint['global_step']} of {checkpoint['args']['total_timesteps']}")
            return script, env_name, seed, checkpoint["learner"][0]  # every script's learner starts with its network(s)
        saved = torch.load(model)
        networks = []
        for state in saved if isinstance(saved, list) else [saved]:
            hidden_dim, input_size = state["fc1.weight"].shape
            network = script.QNetwork(input_size, state["fc2.weight"].shape[0], hidden_dim)
            network.load_state_dict(state)
            networks.append(network)
    except Exception as e:  # noqa: BLE001  (a truncated file, another kind of file: many errors, one message)
        raise SystemExit(f"error: {model} is not a model or checkpoint of {exp_name}.py ({type(e).__name__})")
    return script, env_name, seed, networks if isinstance(saved, list) else networks[0]


class FoodTally:
    """LBF: per episode, the food present at the start and the food eaten (each a Counter of food levels), and whether
    the team ended standing still (food left, and no agent moved in the last `still` steps)."""

    def __init__(self, still: int = 20):
        self.still, self.episodes = still, []

    def start(self, env):
        self.lbf = env
        while not hasattr(self.lbf, "field"):  # make_env's wrappers around lbforaging's ForagingEnv
            self.lbf = self.lbf.env
        self.food, self.positions, self.unmoved = self.food_now(), self.positions_now(), 0
        self.episodes.append({"spawned": Counter(self.food.values()), "eaten": Counter(), "stood_still": False})

    def step(self, terminated: bool, truncated: bool, info: dict):
        done, food, episode = terminated or truncated, self.food_now(), self.episodes[-1]
        episode["eaten"].update(level for cell, level in self.food.items() if cell not in food)
        positions = self.positions_now()
        self.unmoved = self.unmoved + 1 if positions == self.positions else 0  # steps since an agent last moved
        self.food, self.positions = food, positions
        if done:
            episode["stood_still"] = bool(food) and self.unmoved >= self.still

    def food_now(self):
        return {tuple(cell): int(self.lbf.field[tuple(cell)]) for cell in np.argwhere(self.lbf.field > 0)}

    def positions_now(self):
        return tuple(tuple(player.position) for player in self.lbf.players)

    def summary(self) -> str:
        spawned = sum((e["spawned"] for e in self.episodes), Counter())
        eaten = sum((e["eaten"] for e in self.episodes), Counter())
        levels = ", ".join(f"{lvl}: {eaten[lvl]}/{n} ({eaten[lvl] / n:.0%})" for lvl, n in sorted(spawned.items()))
        cleared = sum(e["eaten"] == e["spawned"] for e in self.episodes)
        still = sum(e["stood_still"] for e in self.episodes)
        return (f"food eaten by food level: {levels}; grid cleared in {cleared} of {len(self.episodes)} episodes; "
                f"{still} episodes end with food left and no agent moving in the last {self.still} steps")  # fmt: skip


class EndTally:
    """Any env: per episode, its length and how it ended: "done" (the task is finished), "time-out", or a MARBLER
    violation ("boundary", "collision" or "collision_boundary": both in one tick), read from the last step's
    `terminated`, `truncated` and `info["message"]`; what MARBLER's PCP and Material Transport report as left
    (`info["remaining"]`: prey not captured, material not delivered; they report it on every end but a violation); and
    on Warehouse each robot's pick-ups and deliveries, read from the task's `loaded` flags (a violation step changes
    none)."""

    def __init__(self):
        self.episodes = []

    def start(self, env):
        inner = env
        while hasattr(inner, "env"):  # make_env's wrapper around MarblerEnv
            inner = inner.env
        task = getattr(inner, "task", None)
        self.warehouse = task if type(task).__name__ == "Warehouse" else None
        if self.warehouse is not None:
            self.loaded = self.warehouse.loaded.copy()
            self.pickups, self.deliveries = np.zeros(len(self.loaded), int), np.zeros(len(self.loaded), int)

    def step(self, terminated: bool, truncated: bool, info: dict):
        if self.warehouse is not None:
            loaded = self.warehouse.loaded.copy()
            self.pickups += loaded & ~self.loaded
            self.deliveries += self.loaded & ~loaded
            self.loaded = loaded
        if terminated or truncated:
            end = info.get("message") or ("done" if terminated else "time-out")
            self.episodes.append({"end": end, "length": info["episode"]["l"], "remaining": info.get("remaining")})
            if self.warehouse is not None:
                self.episodes[-1].update(pickups=self.pickups.copy(), deliveries=self.deliveries.copy())

    def summary(self) -> str:
        ends = Counter(e["end"] for e in self.episodes)
        text = ", ".join(f"{end} {n}" for end, n in ends.most_common())
        lengths = [e["length"] for e in self.episodes]
        text = f"episodes end by: {text} (of {len(self.episodes)}); mean length {np.mean(lengths):.1f}"
        remaining = [e["remaining"] for e in self.episodes if e["remaining"] is not None]
        if remaining:
            counts = ", ".join(f"{left} in {n}" for left, n in sorted(Counter(remaining).items()))
            text += f"; left at the end of the {len(remaining)} without a violation: mean {np.mean(remaining):.2f}"
            text += f" ({counts})"
        if self.episodes and "deliveries" in self.episodes[0]:
            pickups = np.mean([e["pickups"] for e in self.episodes], axis=0)
            deliveries = np.mean([e["deliveries"] for e in self.episodes], axis=0)
            by_team = "; ".join(f"{team} ({', '.join(map(str, range(first, len(deliveries), 2)))}): "
                                + ", ".join(f"{d:.2f}" for d in deliveries[first::2])
                                for team, first in (("Green", 0), ("Red", 1)))  # fmt: skip
            text += (f"; per episode, pick-ups {pickups.sum():.2f} and deliveries {deliveries.sum():.2f}, "
                     f"deliveries by robot: {by_team}")  # fmt: skip
        return text


def evaluate(script, env, agents, episodes: int, epsilon: float, rng, video: Optional[str] = None, tallies=()):
    """Team returns of `episodes` episodes: the scripts' own evaluation loop (envs.evaluate), acting with the script's
    q_step; `video`: film the first to this GIF; `tallies` (FoodTally, EndTally): each watches every step."""
    return play(lambda obs, hidden: script.q_step(agents, obs, hidden, "cpu"), env, episodes, epsilon, rng, video, tallies)


def mean_ci(returns):
    """Mean of the episode returns and its 95% bootstrap interval (the report's, over episodes instead of seeds)."""
    return (float(np.mean(returns)), *bootstrap_ci(returns))


if __name__ == "__main__":
    args = tyro.cli(Args, prog="python -m benchmark.evaluate")
    if args.episodes < 1 or not 0 <= args.epsilon <= 1:
        raise SystemExit(f"error: --episodes must be at least 1 and --epsilon in [0, 1]; got {args.episodes}, {args.epsilon}")
    if args.env_seed is not None and not 0 <= args.env_seed < 2**32:
        raise SystemExit(f"error: --env-seed must lie in [0, {2**32 - 1}], got {args.env_seed}")
    script, env_name, seed, agents = load_agents(Path(args.model))
    if args.lbf_food and env_family(env_name) != "lbf":
        raise SystemExit(f"error: --lbf-food counts LBF's food; this model's env is {env_name}")
    tallies = ([FoodTally()] if args.lbf_food else []) + ([EndTally()] if args.ends else [])
    env_seed = seed + 100_000 if args.env_seed is None else args.env_seed
    env, rng = make_env(env_name, env_seed), np.random.default_rng(env_seed)
    networks = agents if isinstance(agents, list) else [agents]
    if any(net.fc1.in_features not in (env.obs_size, env.obs_size + env.n_agents) or net.fc2.out_features != env.n_actions
           or len(networks) not in (1, env.n_agents) for net in networks):  # fmt: skip
        raise SystemExit(f"error: the model's {len(networks)} network(s) map {networks[0].fc1.in_features} inputs to "
                         f"{networks[0].fc2.out_features} actions; {env_name} has {env.n_agents} agents, {env.obs_size} "
                         f"inputs and {env.n_actions} actions (a model of another env, or a run folder renamed?)")
    returns = evaluate(script, env, agents, args.episodes, args.epsilon, rng, args.video, tallies)
    mean, lo, hi = mean_ci(returns)
    print(f"{args.model}: {env_name}, epsilon {args.epsilon}, {args.episodes} episodes: "
          f"mean return {mean:.4f} (95% CI {lo:.4f} to {hi:.4f})")  # fmt: skip
    if args.video:
        print(f"first episode filmed to {args.video}")
    for tally in tallies:
        print(tally.summary())
