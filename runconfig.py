"""A training run's settings: read from config files and the command line, checked, and resolved
for this process and the checkpoint it starts from. train.py declares the settings (its Config) and
trains; this file is what happens to them before the first step, and the budget's clock after it.

- parse reads them as nanoGPT's configurator does, but without exec over a script's globals: a
  config file is plain Python assignments, run by runpy; an override is --key=value or --key value,
  converted to the type of the key's default; an unknown key is refused with the valid ones.
- check_training stops a bad setting before any work, in one line.
- setup and resolve turn 'auto' and 0 into what this run uses: the device and precision, DDP, the
  checkpoint it resumes or fine-tunes (checkpoints.py), the model shape and the iteration count.
- Clock is the wall-clock budget that max_minutes sets: the time a run has spent, what its final
  eval and save will cost, the share of the budget spent that the learning rate follows, when to
  stop (rank 0 decides for every process), and the lines that say what the budget bought.

    cfg, where = parse(["config/amt.py", "--batch_size=16"], Config)  # where: key -> its source
    run = setup(cfg)
    cfg, run, resumed_from, ckpt = resolve(cfg, run, dataset.load_dataset(cfg.data_dir))
"""

import math
import os
import runpy
import time
import traceback
import types
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields, replace

import torch
import torch.distributed as dist

import checkpoints
import dataset
import tokenizer
from files import UserError, check_range, check_text
from generation import check_device
from model import DTYPES, autocast, pick_device


def parse(argv, kind):
    """['config/amt.py', '--key=value', '--key', 'value', ...] -> (kind(**settings), where each
    setting was made: key -> a config file or "command line"); later settings win. kind: a
    dataclass whose fields, with their types and defaults, are the keys."""
    kinds = {f.name: f.type for f in fields(kind) if f.init}
    values, where, args = {}, {}, list(argv)

    def set_value(key, value, source):
        if key not in kinds:
            raise UserError(
                f"unknown config key {key!r} ({source}); valid keys: {', '.join(kinds)}"
            )
        values[key], where[key] = convert(key, value, kinds[key], source), source

    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            for key, value in run_config_file(arg).items():
                if not key.startswith("_") and not isinstance(value, types.ModuleType):
                    set_value(key, value, arg)
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if not args or args[0].startswith("--"):
                raise UserError(f"--{key} needs a value (--{key}=VALUE or --{key} VALUE)")
            value = args.pop(0)
        set_value(key.replace("-", "_"), value, "command line")
    return kind(**values), where


def convert(key, value, kind, where):
    """A --key=value string, or a config file's Python value, -> the type of field `key`."""
    bad = UserError(f"{where}: {key}={value!r} is not a {getattr(kind, '__name__', kind)}")
    if where != "command line":  # a config file is Python: its values have their type already
        if kind is float and type(value) is int:
            return float(value)
        if type(value) is kind or (kind == bool | None and (value is None or type(value) is bool)):
            return value
        raise bad
    text = value.strip().lower()
    if kind is str:
        return value
    if kind in (bool, bool | None):
        if text in ("none", "auto") and kind is not bool:
            return None
        if text not in ("true", "1", "yes", "false", "0", "no"):
            raise bad
        return text in ("true", "1", "yes")
    try:
        number = float(text)  # so that --dropout=0 and --max_iters=1e4 both work
    except ValueError:
        raise bad from None
    if kind is int and not number.is_integer():
        raise bad
    return kind(number)


def run_config_file(path):
    """A config file's own globals (runpy, no exec over ours). A file that does not run is one line:
    the file, the line and why."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} not found (give a path such as config/amt.py)")
    try:
        return runpy.run_path(path)
    except SyntaxError as e:
        raise UserError(
            f"{path}, line {e.lineno}: {e.msg} (a config file is plain Python assignments)"
        ) from None
    except (
        Exception
    ) as e:  # a NameError, a failed import...: the line of the file where it happened
        here = os.path.abspath(path)
        frames = reversed(traceback.extract_tb(e.__traceback__))
        line = next((f.lineno for f in frames if os.path.abspath(f.filename) == here), "?")
        raise UserError(f"{path}, line {line}: {type(e).__name__}: {e}") from None


# -----------------------------------------------------------------------------
# train.py's settings, each in its range

# at least 1
COUNTS = (
    "batch_size",
    "n_layer",
    "n_head",
    "n_embd",
    "eval_iters",
    "eval_interval",
    "log_interval",
    "save_interval",
    "keep_last",
    "gradient_accumulation_steps",
)
NOT_NEGATIVE = (
    "max_iters",
    "warmup_iters",
    "lr_decay_iters",
    "vocab_size",
    "weight_decay",
    "grad_clip",
    "peak_flops",
    "max_minutes",
)


def check_training(cfg, where, probabilities):
    """Every setting in its range, so that a bad one stops the run before any work, in one line that
    names the setting, its value, where it was set (where: key -> its source) and what is allowed.
    probabilities: the settings that are probabilities (train.PROBABILITIES)."""

    def check(name, **allowed):
        check_range(name, getattr(cfg, name), where=where.get(name, "the default"), **allowed)

    for name in COUNTS:
        check(name, low=1)
    for name in NOT_NEGATIVE:
        check(name, low=0)
    for name in probabilities:
        check(name, low=0, high=1, note="a probability")
    P = tokenizer.PREFIX_LEN
    note = f"a window holds the {P}-token attribute prefix and at least 2 tokens of music"
    check("block_size", low=P + 1, low_open=True, note=note)
    check("dropout", low=0, high=1, high_open=True)
    note = "AdamW's step size; 1e-4 to 1e-2 is usual"
    check("learning_rate", low=0, high=1, low_open=True, note=note)
    check("min_lr", low=0, high=1)
    check("muon_lr", low=0, high=1, note="0 = AdamW alone")
    check("epochs", low=0, low_open=True, note="used when max_iters=0")
    check("beta1", low=0, high=1, high_open=True)
    check("beta2", low=0, high=1, high_open=True)
    check("seed", low=0, high=2**32 - 1)
    check("transpose", low=0, high=127, note="semitones")
    check("tempo_jitter", low=0, high=8, note="octaves")
    for name in ("data_dir", "out_dir"):
        check_text(name, getattr(cfg, name), where=where.get(name, "the default"))
    if cfg.init_from not in ("scratch", "resume") and not os.path.exists(cfg.init_from):
        raise UserError(
            f"init_from={cfg.init_from!r}: use 'scratch', 'resume', or the checkpoint file or run "
            f"folder to fine-tune from ({cfg.init_from} not found)"
        )
    if cfg.dtype not in ("auto", *DTYPES):
        raise UserError(f"dtype={cfg.dtype!r}: use auto, {', '.join(DTYPES[:-1])} or {DTYPES[-1]}")
    if cfg.n_embd % cfg.n_head:
        raise UserError(f"n_embd={cfg.n_embd} must be a multiple of n_head={cfg.n_head}")
    for key, allowed in (("pos", ("learned", "rope")), ("mlp", ("gelu", "relu2"))):
        if getattr(cfg, key) not in allowed:
            raise UserError(f"{key}={getattr(cfg, key)!r}: use {' or '.join(allowed)}")
    if cfg.pack and (cfg.balance or cfg.cond_embedding):
        raise UserError(
            "pack=true works with neither balance nor cond_embedding (they read one prefix per "
            "window)"
        )
    if cfg.pos == "rope" and (cfg.n_embd // cfg.n_head) % 2:
        raise UserError(
            f"pos=rope needs an even head size; n_embd={cfg.n_embd} / n_head={cfg.n_head} is odd"
        )
    check_device(cfg.device)


# -----------------------------------------------------------------------------
# this process's run: device, precision, DDP, and the checkpoint it starts from


@dataclass
class Run:
    """Where and how this process trains: resolved once by setup() and resolve()."""

    ddp: bool
    rank: int
    local_rank: int
    world: int
    master: bool  # rank 0 alone logs and saves
    device: str
    device_type: str
    dtype: str
    ctx: AbstractContextManager  # autocast, or nothing for fp32
    grad_accum: int  # micro steps per optimizer step, in this process
    tokens_per_iter: int  # over all processes


def setup(cfg):
    """Device, precision and DDP for this process. Under torchrun every process trains, rank 0 logs.
    tokens_per_iter is filled in by resolve(), once the run's shape is known (a resume keeps the
    checkpoint's)."""
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world = (
        (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) if ddp else (0, 0, 1)
    )
    device, device_type, dtype = pick_device(cfg.device, cfg.dtype, local_rank)
    if ddp:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        if device_type == "cuda":
            torch.cuda.set_device(device)
    if cfg.gradient_accumulation_steps % world:
        raise UserError(
            f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be a multiple of "
            f"the {world} processes"
        )
    # dropout differs per process; DDP copies rank 0's initial weights to all
    torch.manual_seed(cfg.seed + rank)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return Run(
        ddp=ddp,
        rank=rank,
        local_rank=local_rank,
        world=world,
        master=rank == 0,
        device=device,
        device_type=device_type,
        dtype=dtype,
        ctx=autocast(device_type, dtype),
        grad_accum=cfg.gradient_accumulation_steps // world,  # per process, as nanoGPT
        tokens_per_iter=0,
    )


def fine_tuning(cfg):
    return cfg.init_from not in ("scratch", "resume")


def resolve(cfg, run, data):
    """The checkpoint to start from (out_dir's to resume, init_from's to fine-tune, None from
    scratch), and the config and run with every 'auto' and 0 replaced by what this run uses ->
    (cfg, run, the checkpoint resumed or None, the checkpoint dict or None). A resumed or
    fine-tuned model keeps its shape (dropout may change); tokens_per_iter follows from the shape
    this run really has, and max_iters from epochs counts the tokens a resumed run has trained on
    before (a fine-tune starts its count afresh)."""
    ckpt_path, ckpt = start_checkpoint(cfg, run)
    if ckpt:
        cfg = replace(cfg, **checkpoint_shape(cfg, ckpt, ckpt_path))
    vocab_size = cfg.vocab_size or data["meta"]["vocab_size"]
    if vocab_size < data["meta"]["vocab_size"]:
        raise UserError(
            f"vocab_size={vocab_size} is below the dataset's {data['meta']['vocab_size']}; "
            f"use --vocab_size=0 for the dataset's"
        )
    run = replace(run, tokens_per_iter=run.grad_accum * run.world * cfg.batch_size * cfg.block_size)
    iter_num = ckpt["iter_num"] if ckpt and not fine_tuning(cfg) else 0
    to_go = cfg.epochs * len(data["train"]["tokens"]) - tokens_seen(ckpt, cfg)
    max_iters = cfg.max_iters or iter_num + max(0, math.ceil(to_go / run.tokens_per_iter))
    cfg = replace(
        cfg,
        vocab_size=vocab_size,
        max_iters=max_iters,
        lr_decay_iters=cfg.lr_decay_iters or max_iters,
        device=run.device,
        dtype=run.dtype,
        compile=run.device_type == "cuda" if cfg.compile is None else cfg.compile,
    )
    return cfg, run, None if fine_tuning(cfg) else ckpt_path, ckpt


def start_checkpoint(cfg, run):
    """-> (path, checkpoint) a run starts from: out_dir's newest when resuming, init_from's when
    fine-tuning (into an out_dir with no checkpoints), (None, None) from scratch."""
    if not fine_tuning(cfg):
        return checkpoints.resume_from(cfg.out_dir, cfg.init_from)
    path, ckpt = checkpoints.fine_tune_from(cfg.init_from, cfg.out_dir)
    if run.master:
        print(
            f"fine-tuning {path} (iter {ckpt.get('iter_num', '?')} of its run, trained on "
            f"{ckpt.get('config', {}).get('data_dir', '?')}) on {cfg.data_dir}: its weights and "
            f"shape, a fresh optimizer, schedule and iteration count"
        )
    return path, ckpt


def checkpoint_shape(cfg, ckpt, path):
    """The model shape a resumed or fine-tuned run takes from its checkpoint. A fine-tune whose
    config asks for another shape (a setting away from its default that differs from the
    checkpoint's) is refused in one line; a resume keeps the checkpoint's and says so."""
    shape = {k: v for k, v in ckpt["model_args"].items() if k not in ("dropout", "cond_prefix")}
    shape["cond_embedding"] = bool(ckpt["model_args"].get("cond_prefix"))
    defaults = type(cfg)()
    asked = {
        k: getattr(cfg, k) for k in shape if getattr(cfg, k) not in (getattr(defaults, k), shape[k])
    }
    if fine_tuning(cfg) and asked:
        raise UserError(
            f"{path} has {', '.join(f'{k}={shape[k]}' for k in asked)} but the config asks for "
            f"{', '.join(f'{k}={v}' for k, v in asked.items())}; a fine-tune keeps the "
            f"checkpoint's shape: leave those settings out"
        )
    changed = [
        f"{k}={v} (not {getattr(cfg, k)})"
        for k, v in shape.items()
        if getattr(cfg, k) != v and not (k == "vocab_size" and cfg.vocab_size == 0)
    ]
    if changed and not fine_tuning(cfg):
        print(f"note: a resumed model keeps its shape: {', '.join(changed)}")
    return shape


def tokens_seen(ckpt, cfg):
    """Train tokens a checkpoint's run has stepped over (0 from scratch, and for a fine-tune, which
    starts its count afresh)."""
    return ckpt["tokens_seen"] if ckpt and not fine_tuning(cfg) else 0


# -----------------------------------------------------------------------------
# the wall-clock budget (max_minutes): what a run has spent, and whether another step fits


# the bar of a run with a budget: seconds of it, the steps beside (Clock.step_done)
BAR = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} s [{elapsed}<{remaining}{postfix}]"


@dataclass
class Clock:
    """A run's training time, counted from the training loop's start (loading the data and building
    the model are not counted): steps, evals and saves alike, on top of what the run spent before it
    was resumed (its checkpoint's time_spent). With a budget the final eval and save are set aside
    at what they are expected to cost (reserve): training stops when the next step would reach into
    that time, and the learning rate follows the share of the rest that is spent (share)."""

    budget: float  # seconds; 0 = none: the run ends at max_iters
    before: float = 0.0  # seconds the run spent before this process resumed it
    eval_windows: int = 0  # windows one eval's estimate runs forward (train.eval_splits)
    val_windows: int = 0  # every window of the val split, which the final eval adds
    step_windows: int = 1  # windows one optimizer step trains on, in this process
    started: float = field(default_factory=time.time)  # when this process's count began
    step_s: float = 0.0  # the mean optimizer step of this process so far
    steps: int = 0
    window_s: float = 0.0  # one window's forward pass in the last eval; 0 = no eval yet
    save_s: float = 0.0  # the last save
    stopped: bool = False  # the budget ended training (rank 0's decision, on every process)
    tenths_shown: int = -1  # tenths of the budget that a log file has had a line for

    @classmethod
    def of_run(cls, cfg, run, time_spent, data):
        """The clock of a run of cfg whose checkpoint had spent time_spent (0 from scratch)."""
        val = len(dataset.covering_windows(data, "val", cfg.block_size)) if cfg.max_minutes else 0
        return cls(
            60 * cfg.max_minutes,
            time_spent,
            # train.eval_splits runs its train batches once, its val ones thrice (two variants)
            eval_windows=4 * cfg.eval_iters * cfg.batch_size,
            val_windows=val,
            step_windows=run.grad_accum * cfg.batch_size,
        )

    def restart(self):
        """Count from now (the training loop's start) -> now."""
        self.started = time.time()
        return self.started

    def spent(self):
        return self.before + time.time() - self.started

    def step_done(self, seconds, run, bar, iter_num):
        """Count a step that took `seconds` and move the training bar on -> signal(run)."""
        self.steps += 1
        self.step_s += (seconds - self.step_s) / self.steps
        share = self.signal(run)
        if not self.budget:
            bar.update()
            return share
        bar.set_postfix_str(f"iter {iter_num:,}", refresh=False)
        bar.update(self.spent() - bar.n)
        return share

    def reserve(self):
        """Seconds the final eval and save are expected to take. Until an eval has been timed, a
        window's forward pass is taken as a third of its share of a training step (backward costs
        about twice the forward): more than it takes, with no gradients and no optimizer."""
        window_s = self.window_s or self.step_s / (3 * self.step_windows)
        return (self.eval_windows + self.val_windows) * window_s + self.save_s

    def share(self):
        """The share of the budget's training time (the budget less the reserve) spent, 0..1."""
        left = self.budget - self.reserve()
        return min(1.0, self.spent() / left) if left > 0 else 1.0

    def out_of_time(self):
        """Whether the next step would reach into the time set aside for the final eval and save."""
        return self.spent() + self.step_s + self.reserve() >= self.budget

    def signal(self, run):
        """-> the share of the budget spent as rank 0 sees it (None without a budget), and stopped
        set to rank 0's out_of_time, on every process: all step at one learning rate and stop at one
        step (a process that stepped on alone would wait in its gradient all-reduce for ever)."""
        if not self.budget:
            return None
        share, stop = self.share(), self.out_of_time()
        if run.ddp:
            decided = torch.tensor([share, float(stop)], device=run.device)  # (2,)
            dist.broadcast(decided, src=0)
            share, stop = decided.tolist()
        self.stopped = bool(stop)
        return share

    def bar(self, max_iters, iter_num, master):
        """The training bar's tqdm settings: steps of max_iters, or with a budget its seconds, the
        steps beside; on rank 0, on a terminal."""
        shown = dict(desc="train", disable=not master or None, dynamic_ncols=True)
        if not self.budget:
            return shown | dict(total=max_iters, initial=iter_num, unit="it")
        return shown | dict(total=round(self.budget), initial=round(self.before), bar_format=BAR)

    def new_tenth(self):
        """Whether the budget's share spent has reached a tenth that has no log line yet."""
        tenth = int(10 * self.share())
        new, self.tenths_shown = tenth > self.tenths_shown, max(tenth, self.tenths_shown)
        return new

    def bought(self, iter_num, tokens_seen):
        """The line that says what the budget bought, when it stops training."""
        return (
            f"the {self.budget / 60:g}-minute budget bought {iter_num:,} steps, {tokens_seen:,} "
            f"tokens; {self.reserve():.0f} s of it set aside for the final eval and save"
        )

    def plan(self, steps):
        """What the run trains for, as its first line says: steps, or the budget and its rest."""
        if not self.budget:
            return steps
        left = max(0.0, self.budget - self.before) / 60
        return f"a {self.budget / 60:g}-minute budget ({left:.3g} min left), at most {steps}"

    def summary(self, time_spent):
        """The closing table's line: the budget spent over the run, and whether it ended it."""
        ended = time_spent >= self.budget  # a run it stopped has spent it all (train.py)
        return f"{time_spent / 60:.3g} of {self.budget / 60:g} min spent" + (
            ": it bought the steps and tokens above" if ended else "; max_iters came first"
        )
