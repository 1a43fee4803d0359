"""Checkpoint and resume for the training scripts, kept apart so that the scripts show their algorithm first.

A script imports this file only when a run writes checkpoints (--checkpoint-frequency) or resumes one (--resume), as
CleanRL's scripts import their evaluation helpers only under --save-model: a script copied alone still trains.

A checkpoint is one pickle (torch.save) of everything a run needs to go on as if it had never stopped: the flags, the
step, the script that wrote it, the python, numpy and torch random states, the loop's state (both envs with the
episode in progress, the evaluation's generator, the reward statistics, the current observation), the filled part of
the replay buffer, and the learner, a tuple that each script names in its own order (networks, target networks,
optimiser state, its algorithm's extra state, the gradient step). Resuming a checkpoint unpickles it in full: resume
only checkpoints you made.
"""

import os
import random
import tempfile

import numpy as np
import torch
import tyro

# flags that leave what a run computes unchanged, so a resumed run may give them new values
RESUME_FREE = {"track", "wandb_project_name", "wandb_entity", "save_model", "capture_video", "checkpoint_frequency",
               "checkpoint_dir", "resume", "total_timesteps"}  # fmt: skip
BUFFER_ARRAYS = ("obs", "actions", "rewards", "terminated", "mask")
RUN = {}  # the script and the step of its last checkpoint (or where it started), set by start()


def start(Args, args, script: str):
    """(args, checkpoint): a resumed run takes the checkpoint's flags except those given again on the command line, and
    stops in one line on a flag that would change the run; checkpoints must be writable before any training is spent."""
    checkpoint = None
    if args.resume:
        checkpoint = load(args.resume, script)
        args = tyro.cli(Args, default=Args(**{**checkpoint["args"], "resume": args.resume}))
        for key in [key for key in checkpoint["args"] if key not in RESUME_FREE]:
            if getattr(args, key) != checkpoint["args"][key]:
                flag, value = key.replace("_", "-"), checkpoint["args"][key]
                raise SystemExit(f"error: --{flag} differs from the checkpoint's ({value}) and would change the run")
        if args.total_timesteps <= checkpoint["global_step"]:
            raise SystemExit(f"error: --total-timesteps must exceed the checkpoint's {checkpoint['global_step']} steps")
        print(f"global_step={checkpoint['global_step']}, resumed from {args.resume}")
    if args.checkpoint_frequency > 0 and not writable(args.checkpoint_dir):
        raise SystemExit(f"error: --checkpoint-dir {args.checkpoint_dir} is not a folder this run can write checkpoints to")
    RUN.update(script=script, last_step=checkpoint["global_step"] if checkpoint else 0)
    return args, checkpoint


def writable(folder: str) -> bool:
    """Whether files can be written in `folder` (made if missing); tried with a real file, since root ignores modes."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
        return True
    except OSError:
        return False


def save_if_due(args, run_name: str, global_step: int, writer, rb, loop: tuple, learner: tuple):
    """Called at every episode end: saves at the first one after every --checkpoint-frequency steps."""
    if global_step // args.checkpoint_frequency > RUN["last_step"] // args.checkpoint_frequency:
        writer.flush()  # on disk first: a resume purges the steps logged after the checkpoint, and keeps the rest
        path = os.path.join(args.checkpoint_dir, run_name, "checkpoint.pt")
        save(path, RUN["script"], args, run_name, global_step, rb, loop, learner)
        RUN["last_step"] = global_step


def save(path: str, script: str, args, run_name: str, global_step: int, rb, loop: tuple, learner: tuple):
    """Writes the checkpoint atomically: a kill mid-write leaves the last one, and so does a write that fails."""
    state = {"script": os.path.basename(script), "args": vars(args), "run_name": run_name, "global_step": global_step,
             "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()},
             "buffer": compact(rb), "loop": loop, "learner": learner}  # fmt: skip
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        torch.save(state, path + ".tmp", pickle_protocol=4)  # protocol 4 stores numpy's bytes as they are
        os.replace(path + ".tmp", path)
    except (OSError, RuntimeError) as e:  # a full disk, a file-size limit (torch raises either): the last one stays
        raise SystemExit(f"error: writing the checkpoint {path} failed ({type(e).__name__}); the last one is kept")


def load(path: str, script: str):
    """The checkpoint at `path` (a file, or the run's checkpoint folder), which `script` must have written."""
    path = os.path.join(path, "checkpoint.pt") if os.path.isdir(path) else path
    if not os.path.isfile(path):
        raise SystemExit(f"error: --resume: no checkpoint at {path}")
    try:
        checkpoint = torch.load(path, weights_only=False)  # a full pickle: resume only checkpoints you trust
    except Exception as e:  # noqa: BLE001  (a truncated or foreign file fails in many ways)
        raise SystemExit(f"error: --resume: {path} is not a readable checkpoint ({type(e).__name__})")
    if not isinstance(checkpoint, dict) or "global_step" not in checkpoint:
        raise SystemExit(f"error: --resume: {path} is not a training checkpoint (a --save-model file?)")
    if "learner" not in checkpoint:  # written before this file existed (2026-12-07)
        raise SystemExit(f"error: --resume: {path} has an older checkpoint format; resume it with the code that wrote it")
    if checkpoint["script"] != os.path.basename(script):  # another script's checkpoint would train the wrong algorithm
        raise SystemExit(f"error: --resume: {path} was written by {checkpoint['script']}; resume it with that script")
    return checkpoint


def restore(checkpoint, rb) -> tuple:
    """Puts back the random generators and the replay buffer (into `rb`, in place); returns the loop's state."""
    random.setstate(checkpoint["rng"]["python"])
    np.random.set_state(checkpoint["rng"]["numpy"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    expand(checkpoint["buffer"], rb)
    return checkpoint["loop"]


def compact(rb) -> dict:
    """The buffer's filled slots only, each array as int8 where that loses nothing (LBF's observations, all actions and
    flags); MARBLER's and MPE's observations are floats and stay float32, so a resume is exact."""
    state = {key: value for key, value in vars(rb).items() if key not in BUFFER_ARRAYS}
    for key in BUFFER_ARRAYS:
        filled = getattr(rb, key)[: rb.size]
        state[key] = filled.astype(np.int8) if np.array_equal(filled.astype(np.int8), filled) else filled
    return state


def expand(state: dict, rb):
    """Refills `rb` (a fresh buffer of the same sizes) from `compact`'s state."""
    for key, value in state.items():
        if key in BUFFER_ARRAYS:
            getattr(rb, key)[: state["size"]] = value
        else:
            setattr(rb, key, value)
