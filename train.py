"""Train AMT: a GPT-2 (model.py) on MIDI event tokens, each training window led by the semantic
token of its piece. It follows nanoGPT's train.py, plus what this project needs: a tested config
parser, windows that start on event boundaries, eval per token type and per semantic token, and
checkpoints that load with weights_only=True and resume exactly.

python train.py config/amt_cpu.py                     # the CPU demo, about 5 minutes python
train.py config/amt.py --batch_size=16         # the reference GPU run python train.py config/amt.py
--init_from=resume      # go on from the newest checkpoint python train.py config/finetune.py
--init_from=out/amt_cpu --data_dir=data/my_midi   # fine-tune on your MIDI torchrun --standalone
--nproc_per_node=8 train.py config/amt.py    # DDP on 8 GPUs"""

import json
import math
import os
import random
import resource
import runpy
import sys
import textwrap
import time
import traceback
import types
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import dataset
import tokenizer
from dataset import get_batch, load_dataset
from files import UserError, check_range, check_text, folder_lock, run_script, write_atomic
from generation import check_device
from model import (
    GPT,
    GPTConfig,
    autocast,
    estimate_loss,
    latest_checkpoint,
    load_checkpoint,
    measure_peak_flops,
    numbered_checkpoints,
    pick_device,
    plain_state_dict,
    summed_loss_per,
)

# -----------------------------------------------------------------------------
# config: the defaults below, then config files of plain assignments, then --key=value


@dataclass
class Config:
    # I/O
    data_dir: str = dataset.DEFAULT_DATA_DIR
    out_dir: str = "out/amt"
    init_from: str = (
        "scratch"  # 'scratch'; 'resume' from the newest checkpoint in out_dir that loads; or a
    )
    # checkpoint file or run folder to fine-tune (its weights and shape, a fresh optimizer)
    eval_interval: int = 1000
    eval_iters: int = (
        20  # batches per split per eval; the same windows every time, so evals compare
    )
    log_interval: int = 10
    save_interval: int = 1000
    keep_last: int = 3  # numbered checkpoints kept, besides ckpt_best.pt
    tensorboard: bool = True  # scalars in out_dir/tb
    seed: int = 1337
    # data
    batch_size: int = 32  # windows per micro step, per process
    block_size: int = 1024  # tokens per window, the semantic token included
    # The attribute prefix (tokenizer.attribute_prefix): each slot is dropped to "unspecified" on
    # its own, so any subset can be asked for when sampling; prefix_dropout blanks all of it
    # (classifier-free guidance).
    cond_dropout: float = 0.1  # the semantic token -> SEMANTIC_UNCOND
    key_dropout: float = 0.3
    meter_dropout: float = 0.3
    tempo_dropout: float = 0.3
    instruments_dropout: float = 0.3
    prefix_dropout: float = 0.1  # the whole prefix at once
    transpose: int = (
        0  # > 0: shift each window's pitched notes and key by -transpose..transpose semitones
    )
    balance: bool = False  # pick each semantic token's files equally often (else by length)
    tempo_jitter: float = (
        0.0  # > 0: play each window up to this many octaves faster or slower (0.5: x0.71..x1.41)
    )
    cond_embedding: bool = (
        False  # also add a learned embedding of the prefix at every position (model.py)
    )
    pack: bool = False  # fill a window with more pieces where one ends, each led by its own prefix
    revoice: float = (
        0.0  # share of windows played on other instruments (ensembles, soloists): tokenizer.revoice
    )
    # model
    vocab_size: int = 0  # 0 = the dataset's; larger is fine (ids the data never uses)
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 768
    dropout: float = 0.1
    bias: bool = True
    # GPT-2 by default; the speedrun's levers (model.GPTConfig, BENCHMARKS.md "Speedrun")
    pos: str = "learned"  # learned | rope
    mlp: str = "gelu"  # gelu | relu2
    qk_norm: bool = False
    tie_head: bool = True
    zero_init: bool = False
    # AdamW, linear warmup, then cosine decay to min_lr at lr_decay_iters
    learning_rate: float = 1e-4
    muon_lr: float = (
        0.0  # > 0: Muon at this learning rate for the blocks' matrices, AdamW for the rest
    )
    max_iters: int = 0  # optimizer steps; 0 = as many as `epochs` passes over train.bin take
    epochs: float = 10.0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = no clipping
    gradient_accumulation_steps: int = (
        1  # micro steps per optimizer step, summed over DDP processes
    )
    warmup_iters: int = 1000
    lr_decay_iters: int = 0  # 0 = max_iters
    min_lr: float = 1e-5
    # system
    device: str = "auto"  # auto = cuda, then mps, then cpu; or name one ('cpu', 'cuda:1')
    dtype: str = "auto"  # auto = bfloat16 where supported, float16 on older GPUs, else float32
    compile: bool | None = (
        None  # None = on for CUDA only (on CPU it gains little and costs 20-30 s)
    )
    peak_flops: float = 0.0  # per device, for MFU; 0 = H100 bf16 dense on CUDA, measured elsewhere


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


def parse_config(argv):
    """['config/amt.py', '--key=value', '--key', 'value', ...] -> Config; later settings win. Every
    setting is range-checked here (check_config), before any work."""
    kinds = {f.name: f.type for f in fields(Config)}
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
    cfg = Config(**values)
    check_config(cfg, where)
    return cfg


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
        line = next(
            (
                f.lineno
                for f in reversed(traceback.extract_tb(e.__traceback__))
                if os.path.abspath(f.filename) == os.path.abspath(path)
            ),
            "?",
        )
        raise UserError(f"{path}, line {line}: {type(e).__name__}: {e}") from None


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
)  # at least 1
NOT_NEGATIVE = (
    "max_iters",
    "warmup_iters",
    "lr_decay_iters",
    "vocab_size",
    "weight_decay",
    "grad_clip",
    "peak_flops",
)
PROBABILITIES = (
    "cond_dropout",
    "key_dropout",
    "meter_dropout",
    "tempo_dropout",
    "instruments_dropout",
    "prefix_dropout",
    "revoice",
)


def check_config(cfg, where=None):
    """Every setting in its range, so that a bad one stops the run before any work, in one line that
    names the setting, its value, where it was set and what is allowed."""
    where = where or {}

    def check(name, **allowed):
        check_range(name, getattr(cfg, name), where=where.get(name, "the default"), **allowed)

    for name in COUNTS:
        check(name, low=1)
    for name in NOT_NEGATIVE:
        check(name, low=0)
    for name in PROBABILITIES:
        check(name, low=0, high=1, note="a probability")
    check(
        "block_size",
        low=tokenizer.PREFIX_LEN + 1,
        low_open=True,
        note=f"a window holds the {tokenizer.PREFIX_LEN}-token attribute prefix and at least 2 "
        "tokens of music",
    )
    check("dropout", low=0, high=1, high_open=True)
    check(
        "learning_rate",
        low=0,
        high=1,
        low_open=True,
        note="AdamW's step size; 1e-4 to 1e-2 is usual",
    )
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
            "folder "
            f"to fine-tune from ({cfg.init_from} not found)"
        )
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise UserError(f"dtype={cfg.dtype!r}: use auto, float32, bfloat16 or float16")
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


@dataclass
class Run:
    """Where and how this process trains: resolved once by setup(), read by the steps below."""

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
            "the "
            f"{world} processes"
        )
    grad_accum = cfg.gradient_accumulation_steps // world  # per process, as nanoGPT
    torch.manual_seed(
        cfg.seed + rank
    )  # dropout differs per process; DDP copies rank 0's initial weights to all
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
        grad_accum=grad_accum,
        tokens_per_iter=0,
    )


def fine_tuning(cfg):
    return cfg.init_from not in ("scratch", "resume")


def source_checkpoint(path):
    """The checkpoint a fine-tune starts from -> (path, checkpoint): the file itself, or a run
    folder's ckpt_best.pt, else its newest numbered checkpoint that loads."""
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "ckpt_best.pt")):
        found, ckpt = latest_checkpoint(path)
        if ckpt is None:
            raise UserError(
                f"no checkpoint in {path} to fine-tune from; give a checkpoint file or the folder "
                "of a "
                f"trained run (python train.py config/amt_cpu.py makes out/amt_cpu)"
            )
        return found, ckpt
    path = os.path.join(path, "ckpt_best.pt") if os.path.isdir(path) else path
    try:
        return path, load_checkpoint(path)
    except Exception as e:  # not a checkpoint, or one cut short
        raise UserError(
            f"{path} does not load as a checkpoint ({type(e).__name__}); give another to fine-tune "
            f"from"
        ) from None


def checkpoint_shape(cfg, ckpt, path):
    """The model shape a resumed or fine-tuned run takes from its checkpoint. A fine-tune whose
    config asks for another shape (a setting away from its default that differs from the
    checkpoint's) is refused in one line; a resume keeps the checkpoint's and says so."""
    shape = {k: v for k, v in ckpt["model_args"].items() if k not in ("dropout", "cond_prefix")}
    shape["cond_embedding"] = bool(ckpt["model_args"].get("cond_prefix"))
    defaults = Config()
    asked = {
        k: getattr(cfg, k) for k in shape if getattr(cfg, k) not in (getattr(defaults, k), shape[k])
    }
    if fine_tuning(cfg) and asked:
        raise UserError(
            f"{path} has {', '.join(f'{k}={shape[k]}' for k in asked)} but the config asks for "
            f"{', '.join(f'{k}={v}' for k, v in asked.items())}; a fine-tune keeps the "
            "checkpoint's "
            f"shape: leave those settings out"
        )
    changed = [
        f"{k}={v} (not {getattr(cfg, k)})"
        for k, v in shape.items()
        if getattr(cfg, k) != v and not (k == "vocab_size" and cfg.vocab_size == 0)
    ]
    if changed and not fine_tuning(cfg):
        print(f"note: a resumed model keeps its shape: {', '.join(changed)}")
    return shape


def start_checkpoint(cfg, run):
    """-> (path, checkpoint) a run starts from: out_dir's newest when resuming (resume_checkpoint),
    init_from's when fine-tuning (into an out_dir with no checkpoints), none from scratch."""
    if not fine_tuning(cfg):
        return resume_checkpoint(cfg)
    if numbered_checkpoints(cfg.out_dir) or os.path.isfile(
        os.path.join(cfg.out_dir, "ckpt_best.pt")
    ):
        raise UserError(
            f"{cfg.out_dir} already holds checkpoints; fine-tune into another --out_dir (or delete "
            "it)"
        )
    path, ckpt = source_checkpoint(cfg.init_from)
    tokenizer.check_vocabulary(
        ckpt, path, "fine-tune from a checkpoint that this tokenizer.py trained"
    )
    if run.master:
        print(
            f"fine-tuning {path} (iter {ckpt.get('iter_num', '?')} of its run, trained on "
            f"{ckpt.get('config', {}).get('data_dir', '?')}) on {cfg.data_dir}: its weights and "
            "shape, "
            f"a fresh optimizer, schedule and iteration count"
        )
    return path, ckpt


def resume_checkpoint(cfg):
    """The checkpoint a run starts from -> (path, checkpoint) or (None, None) from scratch: with
    resume, the newest in out_dir that loads (ckpt_best.pt included). Every refusal names a next
    step that works: neither "start from scratch" nor "go on with resume" is said where it would
    only be refused in turn."""
    present = [os.path.basename(p) for p in numbered_checkpoints(cfg.out_dir)] + (
        ["ckpt_best.pt"] if os.path.isfile(os.path.join(cfg.out_dir, "ckpt_best.pt")) else []
    )
    if not present:
        if cfg.init_from == "resume":
            raise UserError(
                f"no checkpoint in {cfg.out_dir} to resume from; start one with --init_from=scratch"
            )
        return None, None
    path, ckpt = latest_checkpoint(cfg.out_dir)
    if ckpt is None:
        raise UserError(
            f"none of the checkpoints in {cfg.out_dir} loads ({', '.join(present)}: cut short?); "
            "delete "
            f"them to start over with --init_from=scratch, or choose another --out_dir"
        )
    if cfg.init_from == "scratch":
        raise UserError(
            f"{cfg.out_dir} already holds checkpoints; go on with --init_from=resume (from "
            f"{os.path.basename(path)}), or choose another --out_dir (or delete it) to start over"
        )
    tokenizer.check_vocabulary(
        ckpt, path, f"start over: delete {cfg.out_dir} or choose another --out_dir"
    )
    return path, ckpt


def resolve(cfg, run, data):
    """The checkpoint to start from (out_dir's to resume, init_from's to fine-tune, None from
    scratch), and the config and run with every 'auto' and 0 replaced by what this run uses. A
    resumed or fine-tuned model keeps its shape (dropout may change); tokens_per_iter follows from
    the shape this run really has, and max_iters from epochs counts the tokens a resumed run has
    trained on before (a fine-tune starts its count afresh)."""
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
    seen, iter_num = (
        tokens_seen(ckpt, cfg),
        ckpt["iter_num"] if ckpt and not fine_tuning(cfg) else 0,
    )
    max_iters = cfg.max_iters or iter_num + max(
        0, math.ceil((cfg.epochs * len(data["train"]["tokens"]) - seen) / run.tokens_per_iter)
    )
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


def tokens_seen(ckpt, cfg):
    """Train tokens a checkpoint's run has stepped over, whatever shapes it ran with (0 from
    scratch, and for a fine-tune, which starts its count afresh); a checkpoint from before this was
    recorded counts its iterations at its own config's tokens per iteration."""
    if not ckpt or fine_tuning(cfg):
        return 0
    if "tokens_seen" in ckpt:
        return ckpt["tokens_seen"]
    c = ckpt.get("config", {})
    return (
        ckpt["iter_num"]
        * c.get("gradient_accumulation_steps", 1)
        * c.get("batch_size", 0)
        * c.get("block_size", 0)
    )


def model_args(cfg):
    return dict(
        block_size=cfg.block_size,
        vocab_size=cfg.vocab_size,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        n_embd=cfg.n_embd,
        dropout=cfg.dropout,
        bias=cfg.bias,
        cond_prefix=tokenizer.PREFIX_LEN if cfg.cond_embedding else 0,
        pos=cfg.pos,
        mlp=cfg.mlp,
        qk_norm=cfg.qk_norm,
        tie_head=cfg.tie_head,
        zero_init=cfg.zero_init,
    )


def dropout_of(cfg):
    """The config's prefix dropout as dataset.drop_attributes takes it: slot name -> probability."""
    return dict(
        semantic=cfg.cond_dropout,
        key=cfg.key_dropout,
        meter=cfg.meter_dropout,
        tempo=cfg.tempo_dropout,
        instruments=cfg.instruments_dropout,
        all=cfg.prefix_dropout,
    )


def init_model(cfg, run, ckpt):
    """-> (model, optimizer, GradScaler, iter_num, best val loss): fresh; the checkpoint's weights
    with the rest fresh (a fine-tune); or everything as the checkpoint left it (resume)."""
    if ckpt:
        try:
            model = GPT.from_checkpoint(ckpt, run.device, dropout=cfg.dropout).train()
        except RuntimeError as e:  # weights of another shape than its model_args say
            raise UserError(
                f"the checkpoint's weights do not fit its own model shape ("
                f"{str(e).splitlines()[-1].strip()[:160]}); use another checkpoint"
            ) from None
    else:
        model = GPT(GPTConfig(**model_args(cfg))).to(run.device)
    # float16 needs loss scaling so that small gradients don't flush to zero; bf16 and fp32 don't
    scaler = torch.amp.GradScaler(run.device_type, enabled=(run.dtype == "float16"))
    optimizer = model.configure_optimizers(
        weight_decay=cfg.weight_decay,
        learning_rate=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        device_type=run.device_type,
        muon_lr=cfg.muon_lr,
    )
    if not ckpt or fine_tuning(cfg):
        return model, optimizer, scaler, 0, float("inf")
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    if len(ckpt["rng"]) == run.world:  # each process gets its own dropout stream back
        set_rng_state(ckpt["rng"][run.rank])
    return model, optimizer, scaler, ckpt["iter_num"], ckpt["best_val_loss"]


def to_device(batch, run):
    """numpy (x, y) -> tensors on the device; pinned memory lets the copy overlap with the GPU's
    work."""
    tensors = [torch.from_numpy(a) for a in batch]
    if run.device_type == "cuda":
        return [t.pin_memory().to(run.device, non_blocking=True) for t in tensors]
    return [t.to(run.device) for t in tensors]


# -----------------------------------------------------------------------------
# eval: model.estimate_loss on the same windows every time, so evals compare


def eval_splits(model, data, cfg, run):
    """Loss on eval_iters fixed batches of each split, every window led by its full attribute
    prefix. On val also perplexity, next-token accuracy, loss per token type and per semantic token,
    and what conditioning gains (nats; > 0: it helps): val_cond_gain, the val loss with the whole
    prefix unspecified minus the loss with it; val_semantic_gain, the same for the semantic token
    alone (windows of files that have one)."""
    meta, uncond, ev = data["meta"], data["meta"]["uncond_token"], {}
    variants = dict(
        uncond=tokenizer.blank_prefix(tokenizer.PREFIX_SLOTS),
        no_semantic=tokenizer.blank_prefix(["semantic"]),
    )
    for split_index, split in enumerate(("train", "val")):  # val last: `t` below holds its tables
        rng = np.random.default_rng(
            [1, cfg.seed, split_index]
        )  # stream 1 = eval (0 = training batches)
        batches = (
            to_device(
                get_batch(data, split, rng, batch_size=cfg.batch_size, block_size=cfg.block_size),
                run,
            )
            for _ in range(cfg.eval_iters)
        )
        val = split == "val"
        t = estimate_loss(
            model,
            batches,
            ctx=run.ctx,
            token_type=torch.from_numpy(data["token_type"]) if val else None,
            variants=variants if val else None,
        )
        ev[f"{split}_loss"] = float(t["overall"]["loss"][0])
    ev["val_ppl"], ev["val_acc"] = (
        math.exp(min(ev["val_loss"], 50.0)),
        float(t["overall"]["acc"][0]),
    )
    first, types_ = t["first"], t["type"]
    ev["val_cond_gain"] = float(t["overall"]["loss_uncond"][0] - t["overall"]["loss"][0])
    conditioned = [
        i for i in np.flatnonzero(first["tokens"]) if i != uncond
    ]  # windows of files with a semantic id
    if conditioned:
        n = first["tokens"][conditioned]
        ev["val_semantic_gain"] = float(
            (n * (first["loss_no_semantic"][conditioned] - first["loss"][conditioned])).sum()
            / n.sum()
        )
    ev["val_nats_per_note"] = summed_loss_per(
        types_, tokenizer.TYPE["NOTE"]
    )  # comparable across tokenizations
    for i, name in enumerate(meta["blocks"]):
        if i < len(types_["tokens"]) and types_["tokens"][i]:
            ev[f"val_loss_{name}"] = float(types_["loss"][i])
    names = {
        meta["semantic_offset"] + k: tokenizer.semantic_name(k) for k in range(meta["n_semantic"])
    }
    labels = {uncond: "(files without a semantic id)"} | {
        meta["semantic_offset"] + k: label for k, label in enumerate(data["labels"])
    }
    ev["semantic"] = [
        (
            names.get(i, "SEMANTIC_UNCOND"),
            labels.get(i, ""),
            int(first["tokens"][i]),
            float(first["loss"][i]),
        )
        for i in np.flatnonzero(first["tokens"])
    ]  # token, label, n, loss
    ev |= {f"val_loss_{name}": loss for name, _, _, loss in ev["semantic"]}
    return ev


def semantic_table(rows):
    lines = [f"  {'token':<18} {'label':<44} {'tokens':>8} {'loss':>7} {'ppl':>8}"]
    for name, label, n, loss in rows:
        lines.append(
            f"  {name:<18} {label[:44]:<44} {n:>8,} {loss:>7.3f} {math.exp(min(loss, 50)):>8.2f}"
        )
    return "\n".join(lines)


def print_eval(ev, iter_num, type_names):
    semantic = (
        f"{ev['val_semantic_gain']:+.4f}" if "val_semantic_gain" in ev else "n/a (no semantic ids)"
    )
    tqdm.write(
        f"eval {iter_num}: train loss {ev['train_loss']:.4f}, val loss {ev['val_loss']:.4f} "
        f"(ppl {ev['val_ppl']:.2f}, acc {100 * ev['val_acc']:.1f}%, {ev['val_nats_per_note']:.3f} "
        "nats per note), "
        "conditioning gain "
        f"{ev['val_cond_gain']:+.4f} nats (semantic token alone {semantic})\n"
        "  val loss by type: "
        + ", ".join(
            f"{name} {ev['val_loss_' + name]:.3f}"
            for name in type_names
            if "val_loss_" + name in ev
        )
    )


# -----------------------------------------------------------------------------
# checkpoints: dicts of tensors and plain types, so torch.load(path, weights_only=True) loads them


def rng_state():
    """This process's random states, as tensors and plain types."""
    np_state = np.random.get_state()
    return dict(
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        numpy=[np_state[0], np_state[1].tolist(), *np_state[2:]],
        python=random.getstate(),
    )


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])


def check_finite(model, state):
    """Stop with a UserError, before anything is saved, once a weight is not finite: training has
    diverged, and saving it would replace the last good checkpoints (keep_last) with useless ones.
    """
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise UserError(
            f"the weights are not finite at iter {state['iter_num']} (training diverged); the "
            f"checkpoints before it are kept: resume from them with a lower learning_rate"
        )


def save_checkpoints(state, cfg, run, improved):
    """ckpt_best.pt when val improved, ckpt_NNNNNNN.pt every save_interval and at the end (keeping
    keep_last); -> the numbered path written, or None. Every process joins (the random states are
    gathered)."""
    states = [rng_state()]
    if run.ddp:  # a collective: every process hands rank 0 its random state
        states = [None] * run.world
        dist.all_gather_object(states, rng_state())
    if not run.master:
        return None
    model = state["model"]
    ckpt = dict(
        model=plain_state_dict(model.state_dict()),
        optimizer=state["optimizer"].state_dict(),
        scaler=state["scaler"].state_dict(),
        model_args=model_args(cfg),
        iter_num=state["iter_num"],
        best_val_loss=state["best_val_loss"],
        config=asdict(cfg),
        meta=state["data"]["meta"],
        labels=state["data"]["labels"],
        rng=states,
        tokens_seen=state[
            "tokens_seen"
        ],  # the run's progress in tokens, whatever batch shapes it ran with
        programs_seen=dict(state["data"]["programs_seen"]),
    )  # {GM program: train files}, for sample.py
    save = lambda path: write_atomic(path, lambda f: torch.save(ckpt, f))  # noqa: E731
    if improved:
        save(os.path.join(cfg.out_dir, "ckpt_best.pt"))
    if state["iter_num"] % cfg.save_interval and state["iter_num"] != cfg.max_iters:
        return None
    path = os.path.join(cfg.out_dir, f"ckpt_{state['iter_num']:07d}.pt")
    save(path)
    for old in numbered_checkpoints(cfg.out_dir)[: -max(1, cfg.keep_last)]:
        os.remove(old)
    return path


# -----------------------------------------------------------------------------
# schedule, speed and memory


def get_lr(it, cfg):
    """Linear warmup to learning_rate, cosine decay to min_lr at lr_decay_iters, min_lr after."""
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def peak_flops(cfg, run):
    """FLOP/s that MFU is measured against: the config's, an H100's bf16 dense peak on CUDA, or
    elsewhere the fastest a 2048x2048 matmul in the training dtype runs here
    (model.measure_peak_flops)."""
    if cfg.peak_flops or run.device_type == "cuda":
        return cfg.peak_flops or 989e12
    return measure_peak_flops(run.device, run.dtype)


def memory_gib(device_type):
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (
        2**30 if sys.platform == "darwin" else 2**20
    )


# -----------------------------------------------------------------------------
# logging (rank 0): the resolved config, out_dir/log.jsonl, TensorBoard, and the closing summary


def run_epochs(cfg, run, state, train_tokens):
    """Passes over train.bin by max_iters: the tokens trained on so far (at whatever shape they
    ran), then the iterations left at this run's tokens per iteration."""
    return (
        state["tokens_seen"] + (cfg.max_iters - state["iter_num"]) * run.tokens_per_iter
    ) / train_tokens


def open_logs(cfg, run, state, resumed_from):
    """Print and save the resolved config and the run's size; -> log(record), which appends a line
    to out_dir/log.jsonl and sends its numbers to TensorBoard, and close()."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    print(
        "config: "
        + textwrap.fill(
            " ".join(f"{k}={v}" for k, v in asdict(cfg).items()), 110, subsequent_indent="  "
        )
    )
    write_atomic(os.path.join(cfg.out_dir, "config.json"), json.dumps(asdict(cfg), indent=1))
    train_tokens = len(state["data"]["train"]["tokens"])
    print(
        f"{state['model'].num_params() / 1e6:.2f}M parameters on {run.world} x {run.device} "
        f"({run.dtype}"
        f"{', compiled' if cfg.compile else ''}); {train_tokens:,} train tokens, "
        f"{run.tokens_per_iter:,} per iter, "
        f"{cfg.max_iters:,} iters = {run_epochs(cfg, run, state, train_tokens):.1f} epochs"
        + (f"; resuming {resumed_from} at iter {state['iter_num']}" if resumed_from else "")
    )
    if cfg.warmup_iters > cfg.max_iters // 2:
        print(
            f"note: warmup_iters={cfg.warmup_iters} is over half of the {cfg.max_iters:,} iters "
            "(set --warmup_iters)"
        )
    if not state["data"]["has_semantic"]:
        print(
            f"note: no {cfg.data_dir}/semantic.json, so every window is unconditional (run "
            "cluster.py first)"
        )
    writer = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import

        writer = SummaryWriter(os.path.join(cfg.out_dir, "tb"))
    log_file = open(os.path.join(cfg.out_dir, "log.jsonl"), "a" if resumed_from else "w")

    def log(record):
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        for key, value in record.items():
            if writer and key != "iter":
                writer.add_scalar(key, value, record["iter"])

    def close():
        log_file.close()
        if writer:
            writer.close()

    return log, close


def log_step(log, state, *, run, loss, speed):
    """A record every log_interval iterations: loss, learning rate, gradient norm, speed, MFU and
    memory; printed on a terminal each time, in a log file (not a terminal) about ten times a run.
    """
    tokens_per_s = run.tokens_per_iter * speed["iters"] / (time.time() - speed["t"])
    record = dict(
        iter=state["iter_num"],
        loss=loss,
        lr=state["lr"],
        grad_norm=float(state["grad_norm"]),
        tokens_per_s=tokens_per_s,
        mfu=speed["flops_per_token"] * tokens_per_s / run.world / speed["peak"],
        memory_gib=memory_gib(run.device_type),
    )
    log(record)
    if state["iter_num"] % speed["print_every"] and state["iter_num"] != speed["max_iters"]:
        return
    tqdm.write(
        f"iter {record['iter']}: loss {loss:.4f}, lr {record['lr']:.2e}, grad norm "
        f"{record['grad_norm']:.3f}, "
        f"{tokens_per_s:,.0f} tok/s, mfu {100 * record['mfu']:.1f}%, mem "
        f"{record['memory_gib']:.2f} GiB"
    )


def print_summary(cfg, run, state, started):
    """The closing table: what ran, how fast, the best val loss, the checkpoints this run leaves."""
    elapsed, best_path = time.time() - started["t"], os.path.join(cfg.out_dir, "ckpt_best.pt")
    if state["ev"] is not None:
        print(
            "val loss per semantic token (iter "
            f"{state['iter_num']}):\n{semantic_table(state['ev']['semantic'])}"
        )
    rows = [
        ("iterations", f"{started['iter']:,} -> {state['iter_num']:,} of {cfg.max_iters:,}"),
        ("time", f"{elapsed / 60:.1f} min"),
        (
            "tokens/s",
            f"{run.tokens_per_iter * (state['iter_num'] - started['iter']) / elapsed:,.0f} "
            f"(evals included)",
        ),
        (
            "best val loss",
            f"{state['best_val_loss']:.4f} (ppl {math.exp(min(state['best_val_loss'], 50)):.2f})",
        ),
        (
            "last checkpoint",
            state["last_checkpoint"] or "none",
        ),  # saved or resumed by this run, never a skipped one
        ("best checkpoint", best_path if os.path.exists(best_path) else "none"),
        (
            "tensorboard",
            f"tensorboard --logdir {os.path.join(cfg.out_dir, 'tb')}" if cfg.tensorboard else "off",
        ),
    ]
    print("\n".join(f"{k:<16} {v}" for k, v in rows))


# -----------------------------------------------------------------------------
# training


def train_step(model, state, data, *, cfg, run):
    """One optimizer step over grad_accum micro batches -> the mean loss (a tensor, not synced)."""
    state["lr"] = get_lr(state["iter_num"], cfg)
    for group in state["optimizer"].param_groups:
        group["lr"] = state["lr"]  # model.Muon scales it per group
    # the batches depend on (seed, rank, iter) alone, so a resumed run gets the same ones
    rng = np.random.default_rng([0, cfg.seed, run.rank, state["iter_num"]])
    loss_sum = torch.zeros((), device=run.device)
    for micro_step in range(run.grad_accum):
        x, y = to_device(
            get_batch(
                data,
                "train",
                rng,
                batch_size=cfg.batch_size,
                block_size=cfg.block_size,
                dropout=dropout_of(cfg),
                transpose=cfg.transpose,
                balance=cfg.balance,
                tempo_jitter=cfg.tempo_jitter,
                pack=cfg.pack,
                revoice=cfg.revoice,
            ),
            run,
        )
        if run.ddp:  # all-reduce the gradients on the last micro step only
            model.require_backward_grad_sync = micro_step == run.grad_accum - 1
        with run.ctx:
            _, loss = model(x, y)  # x, y (B, T)
        loss_sum += loss.detach()
        state["scaler"].scale(loss / run.grad_accum).backward()
    state["scaler"].unscale_(state["optimizer"])  # clip the true gradients, not the scaled ones
    state["grad_norm"] = torch.nn.utils.clip_grad_norm_(
        state["model"].parameters(), cfg.grad_clip or float("inf")
    )  # synced when logged
    state["scaler"].step(state["optimizer"])
    state["scaler"].update()
    state["optimizer"].zero_grad(set_to_none=True)
    return loss_sum / run.grad_accum


def train(cfg):
    """Train as cfg says -> the best val loss. Rank 0 holds out_dir as its one writer
    (files.folder_lock) from before it reads a checkpoint until its last one is written."""
    run = setup(cfg)
    with folder_lock(cfg.out_dir, create=True) if run.master else nullcontext():
        data = load_dataset(cfg.data_dir)
        cfg, run, resumed_from, ckpt = resolve(cfg, run, data)
        raw_model, optimizer, scaler, iter_num, best_val_loss = init_model(cfg, run, ckpt)
        state = dict(
            model=raw_model,
            optimizer=optimizer,
            scaler=scaler,
            data=data,
            iter_num=iter_num,
            best_val_loss=best_val_loss,
            ev=None,
            last_checkpoint=resumed_from,
            lr=0.0,
            grad_norm=0.0,
            tokens_seen=tokens_seen(ckpt, cfg),
        )
        del ckpt  # free its memory before training
        train_loop(cfg, run, state)
    if run.ddp:
        dist.destroy_process_group()
    return state["best_val_loss"]


def train_loop(cfg, run, state):
    """Optimizer steps from state's iter_num to max_iters, with logging, evals and checkpoints on
    the way."""
    raw_model, data = state["model"], state["data"]
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if run.ddp:
        model = DDP(model, device_ids=[run.local_rank] if run.device_type == "cuda" else None)
    eval_model = model.module if run.ddp else model  # eval needs no gradient sync
    log, close_logs = (
        open_logs(cfg, run, state, state["last_checkpoint"]) if run.master else (None, None)
    )
    speed = dict(
        peak=peak_flops(cfg, run),
        flops_per_token=raw_model.flops_per_token(),
        t=time.time(),
        iters=0,
        max_iters=cfg.max_iters,
        print_every=cfg.log_interval
        * (1 if sys.stdout.isatty() else max(1, cfg.max_iters // 10 // cfg.log_interval)),
    )
    started = dict(t=time.time(), iter=state["iter_num"])
    bar = tqdm(
        total=cfg.max_iters,
        initial=state["iter_num"],
        desc="train",
        unit="it",
        disable=not run.master or None,
        dynamic_ncols=True,
    )
    while state["iter_num"] < cfg.max_iters:
        loss = train_step(model, state, data, cfg=cfg, run=run)
        state["iter_num"] += 1
        state["tokens_seen"] += run.tokens_per_iter
        speed["iters"] += 1
        bar.update()
        last = state["iter_num"] == cfg.max_iters
        if run.master and (state["iter_num"] % cfg.log_interval == 0 or last):
            log_step(
                log, state, run=run, loss=loss.item(), speed=speed
            )  # .item() waits for the device
            speed.update(t=time.time(), iters=0)
        evaluated, improved = state["iter_num"] % cfg.eval_interval == 0 or last, False
        if evaluated:
            state["ev"] = ev = eval_splits(eval_model, data, cfg, run)
            improved, state["best_val_loss"] = (
                ev["val_loss"] < state["best_val_loss"],
                min(state["best_val_loss"], ev["val_loss"]),
            )
            if run.master:
                print_eval(ev, state["iter_num"], list(data["meta"]["blocks"]))
                log(
                    dict(iter=state["iter_num"], **{k: v for k, v in ev.items() if k != "semantic"})
                )
        if evaluated or state["iter_num"] % cfg.save_interval == 0:
            check_finite(
                raw_model, state
            )  # a diverged model must not rotate the good checkpoints out
            state["last_checkpoint"] = (
                save_checkpoints(state, cfg, run, improved) or state["last_checkpoint"]
            )
            speed.update(
                t=time.time(), iters=0
            )  # eval and saving don't count against training speed
    bar.close()
    if run.master:
        print_summary(cfg, run, state, started)
        close_logs()


if __name__ == "__main__":
    run_script(
        lambda: train(parse_config(sys.argv[1:])),
        interrupted="interrupted; go on with --init_from=resume",
    )
