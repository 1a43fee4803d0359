"""Multi-Agent Particle Environment (mpe2 1.1.1, Farama's maintained MPE) behind the API described in envs/__init__.py.

The presets are the partially observable tasks that the first author's MPE fork registers (SimpleSpread-v2, SimpleTag-v2,
SimpleAdversary-v2): what each learner sees is in docs/environments.md (MPE) and docs/mpe.md. The suffix "-full" gives
the same task with mpe2's full observations. The opponents of Tag (the prey) and Adversary (the adversary) are scripted
here, with a three-step look-ahead through mpe2's own integrator; only the cooperative team learns.
"""

import itertools

import numpy as np

PRESETS = ("mpe-spread", "mpe-tag", "mpe-adversary")
EPISODE_LIMIT = 25
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)  # mpe2: no-op, -x, +x, -y, +y
PARTIAL_OBS_SIZES = {"spread": 10, "tag": 12, "adversary": 11}


def distance(a, b):
    return float(np.linalg.norm(a - b))


def closest(agent, entities):
    """The entity nearest to `agent`, ties to world order."""
    return min(entities, key=lambda e: distance(e.state.p_pos, agent.state.p_pos))  # min keeps the first of equals


def rollout(agent, world, action: int, steps: int):
    """Where `agent` is after holding `action` for `steps` steps, by mpe2's integrator (position first, then damping and
    force, then the speed cap); collisions are ignored."""
    pos, vel = agent.state.p_pos.copy(), agent.state.p_vel.copy()
    force = MOVES[action] * (5.0 if agent.accel is None else agent.accel)  # mpe2's default sensitivity is 5
    for _ in range(steps):
        pos = pos + vel * world.dt
        vel = vel * (1 - world.damping) + force / agent.mass * world.dt
        speed = np.linalg.norm(vel)
        if agent.max_speed is not None and speed > agent.max_speed:
            vel = vel / speed * agent.max_speed
    return pos


def look_ahead(agent, world, score, steps: int = 3):
    """The action whose `steps`-step rollout scores highest (ties to the lower action)."""
    return int(np.argmax([score(rollout(agent, world, action, steps)) for action in range(len(MOVES))]))


def leaving_penalty(pos):
    """mpe2 Tag's penalty on a prey for each coordinate beyond 0.9 (it keeps the prey on the screen)."""
    x = np.abs(pos)
    return float(np.sum(np.where(x < 0.9, 0.0, np.where(x < 1.0, (x - 0.9) * 10, np.minimum(np.exp(2 * x - 2), 10)))))


def evading_prey(prey, world, steps: int = 3, repulsion: float = 0.3):
    """Tag's prey: three steps ahead, the least sum of `repulsion / distance` to the chasers (each carried on at its
    velocity), plus mpe2's penalty for leaving the arena. Fleeing every chaser, not just the nearest, keeps it out of
    pincers: three greedy chasers catch it about 0.25 times an episode, and 3.3 times a prey that flees the nearest only."""
    chasers = [c.state.p_pos + c.state.p_vel * world.dt * steps for c in world.agents if c.adversary]
    return look_ahead(prey, world, lambda pos: -sum(repulsion / (distance(pos, c) + 1e-3) for c in chasers)
                      - leaving_penalty(pos), steps)  # fmt: skip


def guessing_adversary(adversary, world):
    """Adversary's adversary: it is not told the goal, so it heads for the landmark nearest to any good agent, the one
    the team seems to guard."""
    good = [a for a in world.agents if not a.adversary]
    target = min(world.landmarks, key=lambda lm: min(distance(lm.state.p_pos, g.state.p_pos) for g in good))
    return look_ahead(adversary, world, lambda pos: -distance(pos, target.state.p_pos))


# Heuristic teams, for the README's sanity bands and the tests (benchmark/studies/mpe_heuristics.py); training never uses them.
def greedy_chaser(chaser, world):
    """Tag: the smallest distance to the nearest prey three steps ahead."""
    prey = closest(chaser, [a for a in world.agents if not a.adversary])
    return look_ahead(chaser, world, lambda pos: -distance(pos, prey.state.p_pos))


def assigned_spreader(agent, world):
    """Spread: the landmark that the assignment of agents to landmarks with the least total distance gives this agent."""
    agents, landmarks = world.agents, world.landmarks

    def total(perm):
        return sum(distance(a.state.p_pos, landmarks[j].state.p_pos) for a, j in zip(agents, perm))

    best = min(itertools.permutations(range(len(landmarks))), key=total)
    target = landmarks[best[agents.index(agent)]]
    return look_ahead(agent, world, lambda pos: -distance(pos, target.state.p_pos))


def splitting_team(agent, world):
    """Adversary: the good agent nearer the goal goes to it, the other to the other landmark (to keep the adversary
    guessing)."""
    good = [a for a in world.agents if not a.adversary]
    goal = agent.goal_a
    keeper = min(good, key=lambda g: distance(g.state.p_pos, goal.state.p_pos))
    decoy = [lm for lm in world.landmarks if lm is not goal][0]
    target = goal if agent is keeper else decoy
    return look_ahead(agent, world, lambda pos: -distance(pos, target.state.p_pos))


HEURISTICS = {"spread": assigned_spreader, "tag": greedy_chaser, "adversary": splitting_team}


def catches(world):
    """Tag: chaser-prey pairs in contact now (mpe2 pays every chaser 10 for each)."""
    prey = [a for a in world.agents if not a.adversary]
    return sum(distance(c.state.p_pos, p.state.p_pos) < c.size + p.size for c in world.agents if c.adversary for p in prey)


def partial_observation(task: str, agent, world):
    """The first author's partially observable view (his fork's -v2 tasks), computed from the world state."""
    own = [agent.state.p_vel, agent.state.p_pos]
    if task == "spread":  # the closest landmark, the closest other agent and its (silent) communication channel
        other = closest(agent, [a for a in world.agents if a is not agent])
        landmark = closest(agent, world.landmarks)
        parts = own + [landmark.state.p_pos - agent.state.p_pos, other.state.p_pos - agent.state.p_pos, other.state.c]
    elif task == "tag":  # the closest obstacle, the closest other chaser, the closest prey and the prey's velocity
        chaser = closest(agent, [a for a in world.agents if a.adversary and a is not agent])
        prey = closest(agent, [a for a in world.agents if not a.adversary])
        obstacle = closest(agent, world.landmarks)
        parts = own + [obstacle.state.p_pos - agent.state.p_pos, chaser.state.p_pos - agent.state.p_pos,
                       prey.state.p_pos - agent.state.p_pos, prey.state.p_vel]  # fmt: skip
    else:  # adversary: the goal, every landmark, the closest other agent and its colour (teammate or adversary)
        other = closest(agent, [a for a in world.agents if a is not agent])
        parts = [agent.goal_a.state.p_pos - agent.state.p_pos] + [lm.state.p_pos - agent.state.p_pos for lm in world.landmarks]
        parts += [other.state.p_pos - agent.state.p_pos, other.color]
    return np.concatenate(parts).astype(np.float32)


def make_parallel(task: str, full: bool):
    from mpe2 import simple_adversary_v3, simple_spread_v3, simple_tag_v3

    common = {"max_cycles": EPISODE_LIMIT, "continuous_actions": False, "render_mode": "rgb_array"}
    if task == "spread":
        neighbours = {} if full else {"num_agent_neighbors": 1, "num_landmark_neighbors": 1}  # mpe2's option is the v2 view
        return simple_spread_v3.parallel_env(N=3, **neighbours, **common)
    if task == "tag":
        return simple_tag_v3.parallel_env(num_good=1, num_adversaries=3, num_obstacles=2, **common)
    return simple_adversary_v3.parallel_env(N=2, **common)


class MPEEnv:
    """Spread: 3 agents learn. Tag: the 3 chasers learn, the prey is `evading_prey`. Adversary: the 2 good agents learn,
    the adversary is `guessing_adversary`. The team reward is the learners' rewards; episodes end at 25 steps, always as
    a time-out (`truncated`)."""

    def __init__(self, name: str, seed: int):
        if name.removesuffix("-full") not in PRESETS:
            raise ValueError(f"unknown MPE task {name!r}; choose one of {', '.join(PRESETS)} (-full: full observations)")
        self.name, self.task, self.full = name, name.removesuffix("-full").removeprefix("mpe-"), name.endswith("-full")
        self.env = make_parallel(self.task, self.full)
        world = self.env.unwrapped.world
        learns = {"spread": lambda a: True, "tag": lambda a: a.adversary, "adversary": lambda a: not a.adversary}[self.task]
        self.learners = [a.name for a in world.agents if learns(a)]
        self.opponent = {"tag": evading_prey, "adversary": guessing_adversary}.get(self.task)
        self.seed = seed
        self.n_agents, self.n_actions, self.episode_limit = len(self.learners), len(MOVES), EPISODE_LIMIT
        self.obs_size = self.env.observation_space(self.learners[0]).shape[0] if self.full else PARTIAL_OBS_SIZES[self.task]

    def observe(self, obs):
        if self.full or self.task == "spread":
            return tuple(np.asarray(obs[name], np.float32) for name in self.learners)
        agents = {a.name: a for a in self.env.unwrapped.world.agents}
        return tuple(partial_observation(self.task, agents[name], self.env.unwrapped.world) for name in self.learners)

    def reset(self):
        # as envs/lbf.py: seed the first reset only, later resets continue the env's own generator
        obs, _ = self.env.reset(seed=self.seed)
        self.seed = None
        return self.observe(obs), {}

    def step(self, actions):
        """One step of mpe2's world, taken directly: the parallel wrapper would step its AEC env agent by agent, build
        every agent's observation and retire the agents at the time-out, all to the same world step and rewards
        (the same floats: a test compares both paths), and cost about a third of the whole step."""
        raw = self.env.unwrapped
        moves = {name: int(a) for name, a in zip(self.learners, actions)}
        for i, agent in enumerate(raw.world.agents):  # the scripted opponent decides from the same state the learners saw
            raw.current_actions[i] = moves[agent.name] if agent.name in moves else self.opponent(agent, raw.world)
        raw._execute_world_step()  # mpe2's own: the actions, the world's physics, every agent's reward
        raw.steps += 1
        obs = {name: raw.observe(name) for name in self.learners} if self.full or self.task == "spread" else None
        rewards = [float(raw.rewards[name]) for name in self.learners]
        return self.observe(obs), rewards, False, raw.steps >= raw.max_cycles, {}

    def step_through_wrapper(self, actions):
        """The same step through mpe2's parallel wrapper (as this file stepped before 2026-12-07): the reference that
        tests/test_mpe.py holds `step` to and that benchmark/studies/mpe_step_cost.py times; training never calls it."""
        raw = self.env.unwrapped
        moves = {name: int(a) for name, a in zip(self.learners, actions)}
        for agent in raw.world.agents:
            if agent.name not in moves:
                moves[agent.name] = self.opponent(agent, raw.world)
        obs, rewards, _, truncations, _ = self.env.step(moves)
        return self.observe(obs), [float(rewards[name]) for name in self.learners], False, any(truncations.values()), {}

    def render(self):
        return self.env.render()

    def __getstate__(self):
        # mpe2 pickles only its constructor's arguments; a checkpoint needs the world and the generator
        raw = self.env.unwrapped
        return {"name": self.name, "seed": self.seed, "world": raw.world, "np_random": raw.np_random, "steps": raw.steps}

    def __setstate__(self, state):
        self.__init__(state["name"], 0)
        self.env.reset(seed=0)  # sets up mpe2's bookkeeping; the world and generator are then replaced
        raw = self.env.unwrapped
        raw.world, raw.np_random, raw.steps = state["world"], state["np_random"], state["steps"]
        self.seed = state["seed"]

    def close(self):
        self.env.close()
