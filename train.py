"""
Train AMT: a GPT-2 (model.py) on MIDI event tokens, each training window led by the semantic
token of its piece. It follows nanoGPT's train.py, plus what this project needs: a tested
config parser, windows that start on event boundaries, eval per token type and per semantic
token, and checkpoints that load with weights_only=True and resume exactly.

    python train.py config/amt_cpu.py                     # the CPU demo, about 5 minutes
    python train.py config/amt.py --batch_size=16         # the reference GPU run
    python train.py config/amt.py --init_from=resume      # go on from the newest checkpoint
    torchrun --standalone --nproc_per_node=8 train.py config/amt.py    # DDP on 8 GPUs
"""

import json
import math
import os
import random
import re
import resource
import runpy
import sys
import textwrap
import time
import types
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from model import GPT, GPTConfig


class UserError(Exception):
    """A mistake the user can fix (bad config, missing dataset); printed as one line, no traceback."""


# -----------------------------------------------------------------------------
# config: the defaults below, then config files of plain assignments, then --key=value

@dataclass
class Config:
    # I/O
    data_dir: str = "data/music21"
    out_dir: str = "out/amt"
    init_from: str = "scratch"   # 'scratch', or 'resume' from the newest checkpoint in out_dir that loads
    eval_interval: int = 1000
    eval_iters: int = 20         # batches per split per eval; the same windows every time, so evals compare
    log_interval: int = 10
    save_interval: int = 1000
    keep_last: int = 3           # numbered checkpoints kept, besides ckpt_best.pt
    tensorboard: bool = True     # scalars in out_dir/tb
    seed: int = 1337
    # data
    batch_size: int = 32         # windows per micro step, per process
    block_size: int = 1024       # tokens per window, the semantic token included
    cond_dropout: float = 0.1    # chance that a window gets the unconditional token (classifier-free guidance)
    # model
    vocab_size: int = 0          # 0 = the dataset's; larger is fine (ids the data never uses)
    n_layer: int = 6
    n_head: int = 8
    n_embd: int = 768
    dropout: float = 0.1
    bias: bool = True
    # AdamW, linear warmup, then cosine decay to min_lr at lr_decay_iters
    learning_rate: float = 1e-4
    max_iters: int = 0           # optimizer steps; 0 = as many as `epochs` passes over train.bin take
    epochs: float = 10.0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0       # 0 = no clipping
    gradient_accumulation_steps: int = 1  # micro steps per optimizer step, summed over DDP processes
    warmup_iters: int = 1000
    lr_decay_iters: int = 0      # 0 = max_iters
    min_lr: float = 1e-5
    # system
    device: str = "auto"         # auto = cuda, then mps, then cpu; or name one ('cpu', 'cuda:1')
    dtype: str = "auto"          # auto = bfloat16 where supported, float16 on older GPUs, else float32
    compile: bool | None = None  # None = on for CUDA only (on CPU it gains little and costs 20-30 s)
    peak_flops: float = 0.0      # per device, for MFU; 0 = H100 bf16 dense on CUDA, measured elsewhere


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
    """['config/amt.py', '--key=value', '--key', 'value', ...] -> Config; later settings win."""
    kinds = {f.name: f.type for f in fields(Config)}
    values, args = {}, list(argv)

    def set_value(key, value, where):
        if key not in kinds:
            raise UserError(f"unknown config key {key!r} ({where}); valid keys: {', '.join(kinds)}")
        values[key] = convert(key, value, kinds[key], where)

    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            if not os.path.isfile(arg):
                raise UserError(f"config file {arg} not found (give a path such as config/amt.py)")
            for key, value in runpy.run_path(arg).items():  # the file's own globals, no exec over ours
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
    if cfg.init_from not in ("scratch", "resume"):
        raise UserError(f"init_from={cfg.init_from!r}: use 'scratch' or 'resume'")
    if cfg.dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise UserError(f"dtype={cfg.dtype!r}: use auto, float32, bfloat16 or float16")
    if cfg.n_embd % cfg.n_head:
        raise UserError(f"n_embd={cfg.n_embd} must be a multiple of n_head={cfg.n_head}")
    return cfg


def pick_device(cfg, local_rank=0):
    """The one place that picks the device and dtype -> (device, device_type, dtype name)."""
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    device_type, dtype = device.split(":")[0], cfg.dtype
    if dtype == "auto":
        if device_type == "cuda":
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        elif device_type == "cpu" and getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
            dtype = "bfloat16"  # with AVX-512 BF16, autocast steps 1.6x faster than fp32 (matmuls 2.4x)
        else:
            dtype = "float32"
    return device, device_type, dtype


# -----------------------------------------------------------------------------
# data: the dataset folder contract is in DESIGN.md

def block_mask(meta, names):
    """Boolean (vocab_size,) mask of the ids in the named vocabulary blocks of meta.json."""
    mask = np.zeros(meta["vocab_size"], dtype=bool)
    for name in names:
        offset, size = meta["blocks"][name]
        mask[offset:offset + size] = True
    return mask


def read_json(data_dir, name, default=None):
    if default is not None and not os.path.exists(os.path.join(data_dir, name)):
        return default
    with open(os.path.join(data_dir, name)) as f:
        return json.load(f)


def load_data(data_dir):
    """The dataset folder -> dict of meta, cluster labels, masks and, per split, the tokens (memmap)
    with each file's start, end, sampling weight (its length) and semantic token."""
    make = f"make it with: python prepare.py --data_dir {data_dir}"
    for name in ("meta.json", "index.jsonl", "train.bin", "val.bin"):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise UserError(f"no dataset in {data_dir} ({name} is missing); {make}")
    meta, semantic = read_json(data_dir, "meta.json"), read_json(data_dir, "semantic.json", {})  # none: all uncond
    with open(os.path.join(data_dir, "index.jsonl")) as f:
        index = [json.loads(line) for line in f if line.strip()]
    if any(not 0 <= k < meta["n_semantic"] for k in semantic.values()):
        raise UserError(f"{data_dir}/semantic.json has ids outside 0..{meta['n_semantic'] - 1}; re-run cluster.py")
    labels = read_json(data_dir, "clusters.json", {}).get("labels", [])
    data = dict(meta=meta, labels=labels, has_semantic=bool(semantic),
                # a window may start right after a complete event, on a token that does not continue a note
                after=block_mask(meta, meta["window_start_after"]), continues=block_mask(meta, ["DURATION"]),
                token_type=np.zeros(meta["vocab_size"], dtype=np.int64))  # (V,) block index of each id
    for i, (offset, size) in enumerate(meta["blocks"].values()):
        data["token_type"][offset:offset + size] = i
    for split in ("train", "val"):
        files = [f for f in index if f["split"] == split]
        if not files:
            raise UserError(f"{data_dir}: the {split} split has no files; {make} (with more MIDI files)")
        tokens = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
        start, end = np.array([f["start"] for f in files]), np.array([f["end"] for f in files])
        if not ((start < end).all() and end.max() <= len(tokens)):
            raise UserError(f"{data_dir}/index.jsonl does not match {split}.bin; {make}")
        sem = [semantic.get(f["midi_file"]) for f in files]
        data[split] = dict(tokens=tokens, start=start, end=end, weight=(end - start) / (end - start).sum(),
                           semantic=np.array([meta["uncond_token"] if k is None else meta["semantic_offset"] + k
                                              for k in sem]))
    return data


def next_boundary(data, tokens, i, end, limit):
    """The first event boundary at or after position i, at most `limit` tokens on; None if there is none."""
    chunk = np.asarray(tokens[i - 1:min(end, i + limit)], dtype=np.int64)  # the token before i, then i...
    ok = data["after"][chunk[:-1]] & ~data["continues"][chunk[1:]]        # ok[j]: position i + j is a boundary
    hits = np.flatnonzero(ok)
    return i + int(hits[0]) if len(hits) else None


def get_batch(data, split, batch_size, block_size, rng, cond_dropout):
    """x, y int64 (B, T). Row b is [semantic token] + block_size tokens of one file (picked in proportion to
    its length) from an event boundary on, so every window shows the conditioning, not only a piece's start.
    y is x shifted by one, -1 where the file ran out (padding, left out of the loss)."""
    d, meta = data[split], data["meta"]
    files = rng.choice(len(d["start"]), size=batch_size, p=d["weight"])               # (B,)
    seq = np.full((batch_size, block_size + 1), meta["pad_token"], dtype=np.int64)     # (B, T+1)
    lengths = np.zeros(batch_size, dtype=np.int64)                                     # (B,) file tokens per row
    for b, f in enumerate(files):
        start, end = int(d["start"][f]), int(d["end"][f])
        i = int(rng.integers(start, max(start, end - block_size) + 1))
        if i > start:  # a file's first window starts at its START token, the others on an event boundary
            i = next_boundary(data, d["tokens"], i, end, block_size) or start
        window = d["tokens"][i:min(end, i + block_size)]
        seq[b, 0] = meta["uncond_token"] if rng.random() < cond_dropout else d["semantic"][f]
        seq[b, 1:1 + len(window)] = window
        lengths[b] = len(window)
    x = torch.from_numpy(np.ascontiguousarray(seq[:, :-1]))                            # (B, T)
    y = torch.from_numpy(np.ascontiguousarray(seq[:, 1:]))                             # (B, T)
    y[torch.arange(block_size) >= torch.from_numpy(lengths)[:, None]] = -1
    return x, y


def to_device(batch, device, device_type):
    if device_type == "cuda":  # pinned memory lets the copy overlap with the GPU's work
        return [t.pin_memory().to(device, non_blocking=True) for t in batch]
    return [t.to(device) for t in batch]


# -----------------------------------------------------------------------------
# eval

@torch.no_grad()
def evaluate(model, data, cfg, ctx, device, device_type):
    """Loss on the same eval_iters batches of each split every time. On val also perplexity, next-token
    accuracy, loss per token type and per semantic token, and the conditioning gain: the val loss with the
    unconditional token minus the loss with the file's own semantic token (nats; > 0: conditioning helps)."""
    meta, V, n_types = data["meta"], data["meta"]["vocab_size"], len(data["meta"]["blocks"])
    token_type, uncond = torch.from_numpy(data["token_type"]).to(device), meta["uncond_token"]
    ev = {}
    model.eval()
    for split_index, split in enumerate(("train", "val")):  # val last: `s` below holds its sums
        rng = np.random.default_rng([1, cfg.seed, split_index])  # stream 1 = eval (0 = training batches)
        s = {k: torch.zeros(n, device=device) for k, n in dict(
            loss=1, tokens=1, correct=1, type_loss=n_types, type_tokens=n_types, sem_loss=V, sem_tokens=V,
            cond=1, uncond=1, cond_tokens=1).items()}
        for _ in range(cfg.eval_iters):
            x, y = to_device(get_batch(data, split, cfg.batch_size, cfg.block_size, rng, 0.0), device, device_type)
            mask = (y >= 0).float()                                                    # (B, T)
            with ctx:
                logits, nll = model(x, y, reduction="none")                            # (B, T, V), (B, T)
            nll = nll.float()
            s["loss"] += nll.sum()
            s["tokens"] += mask.sum()
            if split == "train":
                continue
            s["correct"] += ((logits.argmax(-1) == y).float() * mask).sum()
            types = token_type[y.clamp(min=0)].flatten()                               # (B*T,)
            s["type_loss"].index_add_(0, types, nll.flatten())
            s["type_tokens"].index_add_(0, types, mask.flatten())
            s["sem_loss"].index_add_(0, x[:, 0], nll.sum(1))                           # by the row's first token
            s["sem_tokens"].index_add_(0, x[:, 0], mask.sum(1))
            if data["has_semantic"]:
                conditioned = (x[:, 0] != uncond).float()                              # (B,) rows of files with one
                x_uncond = x.clone()
                x_uncond[:, 0] = uncond
                with ctx:
                    _, nll_uncond = model(x_uncond, y, reduction="none")                # (B, T)
                s["cond"] += (nll.sum(1) * conditioned).sum()
                s["uncond"] += (nll_uncond.float().sum(1) * conditioned).sum()
                s["cond_tokens"] += (mask.sum(1) * conditioned).sum()
        ev[f"{split}_loss"] = (s["loss"] / s["tokens"]).item()
    model.train()
    ev["val_ppl"], ev["val_acc"] = math.exp(min(ev["val_loss"], 50.0)), (s["correct"] / s["tokens"]).item()
    if s["cond_tokens"] > 0:
        ev["val_cond_gain"] = ((s["uncond"] - s["cond"]) / s["cond_tokens"]).item()
    for name, loss, n in zip(meta["blocks"], s["type_loss"].tolist(), s["type_tokens"].tolist()):
        if n:
            ev[f"val_loss_{name}"] = loss / n
    names = {meta["semantic_offset"] + k: f"SEMANTIC_TOKEN_{k}" for k in range(meta["n_semantic"])}
    labels = {uncond: "(files without a semantic id)"} | \
        {meta["semantic_offset"] + k: label for k, label in enumerate(data["labels"])}
    ev["semantic"] = [(names.get(t, "SEMANTIC_UNCOND"), labels.get(t, ""), int(n), loss / n)  # token, label, n, loss
                      for t, (loss, n) in enumerate(zip(s["sem_loss"].tolist(), s["sem_tokens"].tolist())) if n]
    ev |= {f"val_loss_{name}": loss for name, _, _, loss in ev["semantic"]}
    return ev


def semantic_table(rows):
    lines = [f"  {'token':<18} {'label':<44} {'tokens':>8} {'loss':>7} {'ppl':>8}"]
    for name, label, n, loss in rows:
        lines.append(f"  {name:<18} {label[:44]:<44} {n:>8,} {loss:>7.3f} {math.exp(min(loss, 50)):>8.2f}")
    return "\n".join(lines)


# -----------------------------------------------------------------------------
# checkpoints: dicts of tensors and plain types, so torch.load(path, weights_only=True) loads them

def save_checkpoint(ckpt, path):
    torch.save(ckpt, path + ".tmp")  # a crash mid-write leaves only the .tmp; the last good file stays
    os.replace(path + ".tmp", path)


def numbered_checkpoints(out_dir):
    """Paths of out_dir/ckpt_NNNNNNN.pt, oldest first (.tmp leftovers and ckpt_best.pt never match)."""
    names = [n for n in os.listdir(out_dir) if re.fullmatch(r"ckpt_\d{7}\.pt", n)] if os.path.isdir(out_dir) else []
    return [os.path.join(out_dir, n) for n in sorted(names)]


def latest_checkpoint(out_dir):
    """(path, checkpoint) of the newest numbered checkpoint that loads, else (None, None).
    A file cut short by a crash fails to load and is skipped."""
    for path in reversed(numbered_checkpoints(out_dir)):
        try:
            return path, torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # whatever is wrong with the file, the one before may be fine
            print(f"skipping {path}: it does not load ({type(e).__name__})")
    return None, None


def rng_state():
    """This process's random states, as tensors and plain types."""
    np_state = np.random.get_state()
    return dict(torch=torch.get_rng_state(), cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                numpy=[np_state[0], np_state[1].tolist(), *np_state[2:]], python=random.getstate())


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    random.setstate(state["python"])


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


def peak_flops(cfg, device, device_type, ptdtype):
    """FLOP/s that MFU is measured against: the config's, an H100's bf16 dense peak on CUDA, or elsewhere
    the fastest a 2048x2048 matmul in the training dtype runs here (the best of a second of tries, so
    that other jobs on the machine lower it less)."""
    if cfg.peak_flops or device_type == "cuda":
        return cfg.peak_flops or 989e12
    a, best, t_end = torch.randn(2048, 2048, device=device, dtype=ptdtype), float("inf"), time.perf_counter() + 1.0
    (a @ a)[0, 0].item()  # warm up
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        (a @ a)[0, 0].item()  # .item() waits for the device
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048 ** 3 / best


def memory_gib(device_type):
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2 ** 30 if sys.platform == "darwin" else 2 ** 20)


# -----------------------------------------------------------------------------
# training

def train(cfg):
    # DDP when launched by torchrun: every process trains, rank 0 alone logs and saves
    ddp = int(os.environ.get("RANK", -1)) != -1
    rank, local_rank, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")) if ddp else (0, 0, 1)
    device, device_type, dtype = pick_device(cfg, local_rank)
    if ddp:
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
        if device_type == "cuda":
            torch.cuda.set_device(device)
    master = rank == 0
    if cfg.gradient_accumulation_steps % world:
        raise UserError(f"gradient_accumulation_steps={cfg.gradient_accumulation_steps} must be a multiple of the "
                        f"{world} processes")
    grad_accum = cfg.gradient_accumulation_steps // world  # per process, as nanoGPT
    torch.manual_seed(cfg.seed + rank)  # dropout differs per process; DDP copies rank 0's initial weights to all
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    ptdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if dtype == "float32" else torch.autocast(device_type, dtype=ptdtype)

    data = load_data(cfg.data_dir)
    ckpt_path, ckpt = latest_checkpoint(cfg.out_dir) if cfg.init_from == "resume" else (None, None)
    if cfg.init_from == "resume" and ckpt is None:
        raise UserError(f"no checkpoint in {cfg.out_dir} to resume from; start one with --init_from=scratch")
    if cfg.init_from == "scratch" and numbered_checkpoints(cfg.out_dir):
        raise UserError(f"{cfg.out_dir} already holds checkpoints; go on with --init_from=resume, "
                        f"or choose another --out_dir (or delete it) to start over")
    if ckpt:  # the model's shape comes from the checkpoint; dropout may change
        cfg = replace(cfg, **{k: v for k, v in ckpt["model_args"].items() if k != "dropout"})
    vocab_size = cfg.vocab_size or data["meta"]["vocab_size"]
    if vocab_size < data["meta"]["vocab_size"]:
        raise UserError(f"vocab_size={vocab_size} is below the dataset's {data['meta']['vocab_size']}; "
                        f"use --vocab_size=0 for the dataset's")
    train_tokens = len(data["train"]["tokens"])
    tokens_per_iter = grad_accum * world * cfg.batch_size * cfg.block_size
    max_iters = cfg.max_iters or math.ceil(cfg.epochs * train_tokens / tokens_per_iter)
    cfg = replace(cfg, vocab_size=vocab_size, max_iters=max_iters, lr_decay_iters=cfg.lr_decay_iters or max_iters,
                  device=device, dtype=dtype, compile=device_type == "cuda" if cfg.compile is None else cfg.compile)

    model_args = dict(block_size=cfg.block_size, vocab_size=cfg.vocab_size, n_layer=cfg.n_layer,
                      n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, bias=cfg.bias)
    raw_model = GPT(GPTConfig(**model_args))
    if ckpt:
        raw_model.load_state_dict(ckpt["model"])
    raw_model.to(device)
    # float16 needs loss scaling so that small gradients don't flush to zero; bf16 and fp32 don't
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == "float16"))
    optimizer = raw_model.configure_optimizers(cfg.weight_decay, cfg.learning_rate, (cfg.beta1, cfg.beta2), device_type)
    iter_num, best_val_loss = 0, float("inf")
    if ckpt:
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        iter_num, best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
        if len(ckpt["rng"]) == world:  # each process gets its own dropout stream back
            set_rng_state(ckpt["rng"][rank])
        del ckpt  # free its memory before training
    model = torch.compile(raw_model) if cfg.compile else raw_model
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == "cuda" else None)
    eval_model = model.module if ddp else model  # eval needs no gradient sync

    writer = log_file = None
    if master:
        os.makedirs(cfg.out_dir, exist_ok=True)
        print("config: " + textwrap.fill(" ".join(f"{k}={v}" for k, v in asdict(cfg).items()), 110,
                                         subsequent_indent="  "))
        with open(os.path.join(cfg.out_dir, "config.json.tmp"), "w") as f:
            json.dump(asdict(cfg), f, indent=1)
        os.replace(os.path.join(cfg.out_dir, "config.json.tmp"), os.path.join(cfg.out_dir, "config.json"))
        print(f"{raw_model.num_params() / 1e6:.2f}M parameters on {world} x {device} ({dtype}"
              f"{', compiled' if cfg.compile else ''}); {train_tokens:,} train tokens, {tokens_per_iter:,} per iter, "
              f"{max_iters:,} iters = {max_iters * tokens_per_iter / train_tokens:.1f} epochs"
              + (f"; resuming {ckpt_path} at iter {iter_num}" if ckpt_path else ""))
        if cfg.warmup_iters > max_iters // 2:
            print(f"note: warmup_iters={cfg.warmup_iters} is over half of the {max_iters:,} iters (set --warmup_iters)")
        if not data["has_semantic"]:
            print(f"note: no {cfg.data_dir}/semantic.json, so every window is unconditional (run cluster.py first)")
        if cfg.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow to import
            writer = SummaryWriter(os.path.join(cfg.out_dir, "tb"))
        log_file = open(os.path.join(cfg.out_dir, "log.jsonl"), "a" if ckpt_path else "w")
    peak, flops_per_token = peak_flops(cfg, device, device_type, ptdtype), raw_model.flops_per_token()
    type_names = list(data["meta"]["blocks"])  # token types, for the eval line

    def log(record):  # a line of out_dir/log.jsonl, and its numbers to TensorBoard
        log_file.write(json.dumps(record) + "\n")
        log_file.flush()
        for key, value in record.items():
            if writer and key != "iter":
                writer.add_scalar(key, value, record["iter"])

    def checkpoint():
        states = [rng_state()]
        if ddp:  # a collective: every process hands rank 0 its random state
            states = [None] * world
            dist.all_gather_object(states, rng_state())
        return dict(model={k.removeprefix("_orig_mod."): v for k, v in raw_model.state_dict().items()},
                    optimizer=optimizer.state_dict(), scaler=scaler.state_dict(), model_args=model_args,
                    iter_num=iter_num, best_val_loss=best_val_loss, config=asdict(cfg), meta=data["meta"],
                    labels=data["labels"], rng=states)

    iter_start, t_start, t_log, iters_since_log, ev = iter_num, time.time(), time.time(), 0, None
    bar = tqdm(total=max_iters, initial=iter_num, desc="train", unit="it", disable=None if master else True,
               dynamic_ncols=True)  # None: a bar on a terminal only
    # In a log file (not a terminal) a line every log_interval is a wall of text: about ten lines a run do.
    print_every = cfg.log_interval * (1 if sys.stdout.isatty() else max(1, max_iters // 10 // cfg.log_interval))
    while iter_num < max_iters:
        lr = get_lr(iter_num, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # the batches depend on (seed, rank, iter) alone, so a resumed run gets the same ones
        rng = np.random.default_rng([0, cfg.seed, rank, iter_num])
        loss_sum = torch.zeros((), device=device)
        for micro_step in range(grad_accum):
            x, y = to_device(get_batch(data, "train", cfg.batch_size, cfg.block_size, rng, cfg.cond_dropout),
                             device, device_type)                                      # (B, T) each
            if ddp:  # all-reduce the gradients on the last micro step only
                model.require_backward_grad_sync = micro_step == grad_accum - 1
            with ctx:
                _, loss = model(x, y)
            loss_sum += loss.detach()
            scaler.scale(loss / grad_accum).backward()
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip or float("inf"))
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        iter_num, iters_since_log, last = iter_num + 1, iters_since_log + 1, iter_num + 1 == max_iters
        bar.update()

        if master and (iter_num % cfg.log_interval == 0 or last):
            loss = loss_sum.item() / grad_accum  # rank 0's batches; .item() waits for the device
            tokens_per_s = tokens_per_iter * iters_since_log / (time.time() - t_log)
            record = dict(iter=iter_num, loss=loss, lr=lr, grad_norm=grad_norm.item(), tokens_per_s=tokens_per_s,
                          mfu=flops_per_token * tokens_per_s / world / peak, memory_gib=memory_gib(device_type))
            log(record)
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}")
            if iter_num % print_every == 0 or last:
                tqdm.write(f"iter {iter_num}: loss {loss:.4f}, lr {lr:.2e}, grad norm {record['grad_norm']:.3f}, "
                           f"{tokens_per_s:,.0f} tok/s, mfu {100 * record['mfu']:.1f}%, "
                           f"mem {record['memory_gib']:.2f} GiB")
            t_log, iters_since_log = time.time(), 0

        evaluated, improved = iter_num % cfg.eval_interval == 0 or last, False
        if evaluated:
            ev = evaluate(eval_model, data, cfg, ctx, device, device_type)
            improved, best_val_loss = ev["val_loss"] < best_val_loss, min(best_val_loss, ev["val_loss"])
            if master:
                gain = f"{ev['val_cond_gain']:+.4f} nats" if "val_cond_gain" in ev else "n/a (no semantic ids)"
                tqdm.write(f"eval {iter_num}: train loss {ev['train_loss']:.4f}, val loss {ev['val_loss']:.4f} "
                           f"(ppl {ev['val_ppl']:.2f}, acc {100 * ev['val_acc']:.1f}%), conditioning gain {gain}\n"
                           "  val loss by type: " + ", ".join(f"{name} {ev['val_loss_' + name]:.3f}"
                                                              for name in type_names if "val_loss_" + name in ev))
                log(dict(iter=iter_num, **{k: v for k, v in ev.items() if k != "semantic"}))
        if evaluated or iter_num % cfg.save_interval == 0:
            ckpt = checkpoint()
            if master and improved:
                save_checkpoint(ckpt, os.path.join(cfg.out_dir, "ckpt_best.pt"))
            if master and (iter_num % cfg.save_interval == 0 or last):
                save_checkpoint(ckpt, os.path.join(cfg.out_dir, f"ckpt_{iter_num:07d}.pt"))
                for old in numbered_checkpoints(cfg.out_dir)[:-max(1, cfg.keep_last)]:
                    os.remove(old)
            del ckpt
            t_log, iters_since_log = time.time(), 0  # eval and saving don't count against training speed
    bar.close()

    if master:
        elapsed, latest = time.time() - t_start, numbered_checkpoints(cfg.out_dir)
        best_path = os.path.join(cfg.out_dir, "ckpt_best.pt")
        if ev is not None:
            print(f"val loss per semantic token (iter {iter_num}):\n{semantic_table(ev['semantic'])}")
        rows = [("iterations", f"{iter_start:,} -> {iter_num:,} of {max_iters:,}"),
                ("time", f"{elapsed / 60:.1f} min"),
                ("tokens/s", f"{tokens_per_iter * (iter_num - iter_start) / elapsed:,.0f} (evals included)"),
                ("best val loss", f"{best_val_loss:.4f} (ppl {math.exp(min(best_val_loss, 50)):.2f})"),
                ("last checkpoint", latest[-1] if latest else "none"),
                ("best checkpoint", best_path if os.path.exists(best_path) else "none"),
                ("tensorboard", f"tensorboard --logdir {os.path.join(cfg.out_dir, 'tb')}" if writer else "off")]
        print("\n".join(f"{k:<16} {v}" for k, v in rows))
        log_file.close()
        if writer:
            writer.close()
    if ddp:
        dist.destroy_process_group()
    return best_val_loss


if __name__ == "__main__":
    try:
        train(parse_config(sys.argv[1:]))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ninterrupted; go on with --init_from=resume", file=sys.stderr)
        sys.exit(130)
