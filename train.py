"""Train AMT: a GPT-2 (model.py) on MIDI event tokens, each training window led by the attribute
prefix of its piece. It follows nanoGPT's train.py, plus what this project needs: a tested config
parser (runconfig.py), windows that start on event boundaries, eval per token type and per semantic
token, and checkpoints that load with weights_only=True and resume exactly (checkpoints.py). The
settings come first, then train() and its loop, then the steps the loop takes.

python train.py config/amt_cpu.py                   # the CPU demo, about 5 minutes
python train.py config/amt.py --batch_size=16       # the reference GPU run
python train.py config/amt.py --init_from=resume    # go on from the newest checkpoint
python train.py config/finetune.py --init_from=out/amt_cpu --data_dir=data/my_midi  # your MIDI
torchrun --standalone --nproc_per_node=8 train.py config/amt.py    # DDP on 8 GPUs
"""

import json
import math
import os
import resource
import sys
import textwrap
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import attributes
import checkpoints
import dataset
import runconfig
import tokenizer
from dataset import get_batch, load_dataset
from files import UserError, folder_lock, rebuild_command, run_script, write_atomic
from model import GPT, GPTConfig, estimate_loss, measure_peak_flops, summed_loss_per

# -----------------------------------------------------------------------------
# config: the defaults below, then config files of plain assignments, then --key=value


@dataclass
class Config(GPTConfig):
    """Every setting of a run. The model's shape is model.GPTConfig's fields, at its defaults but
    the two below (block_size: tokens per window, the attribute prefix included)."""

    vocab_size: int = 0  # 0 = the dataset's; larger is fine (ids the data never uses)
    dropout: float = 0.1
    # I/O
    data_dir: str = dataset.DEFAULT_DATA_DIR
    out_dir: str = "out/amt"
    # 'scratch'; 'resume' from the newest checkpoint in out_dir that loads; or a checkpoint file or
    # run folder to fine-tune (its weights and shape, a fresh optimizer)
    init_from: str = "scratch"
    eval_interval: int = 1000
    eval_iters: int = 20  # batches per split per eval estimate; the same windows every time
    log_interval: int = 10
    save_interval: int = 1000
    keep_last: int = 3  # numbered checkpoints kept, besides the best one
    tensorboard: bool = True  # scalars in out_dir/tb
    seed: int = 1337
    # data
    batch_size: int = 32  # windows per micro step, per process
    # The attribute prefix's dropout, one setting per slot and prefix_dropout for all of it at once
    # (attributes.DROPOUTS: cond_dropout, key_dropout, ...): each slot is dropped to "unspecified"
    # on its own, so any subset can be asked for when sampling.
    __annotations__.update(dict.fromkeys(attributes.DROPOUTS, float))
    vars().update(attributes.DROPOUTS)
    transpose: int = 0  # > 0: shift pitched notes and key by -transpose..transpose semitones
    balance: bool = False  # pick each semantic token's files equally often (else by length)
    # > 0: play each window up to this many octaves faster or slower (0.5: x0.71..x1.41)
    tempo_jitter: float = 0.0
    # also add a learned embedding of the prefix at every position (GPTConfig.cond_prefix)
    cond_embedding: bool = False
    pack: bool = False  # fill a window with more pieces where one ends, each led by its own prefix
    revoice: float = 0.0  # share of windows played on other instruments (augment.revoice)
    # AdamW, linear warmup, then cosine decay to min_lr at lr_decay_iters (or over the budget)
    learning_rate: float = 1e-4
    muon_lr: float = 0.0  # > 0: Muon at this learning rate for the blocks' matrices, AdamW the rest
    max_iters: int = 0  # optimizer steps; 0 = as many as `epochs` passes over train.bin take
    # > 0: stop when this much wall-clock time is spent, the final eval and save included
    max_minutes: float = 0.0  # (runconfig.Clock); 0: at max_iters alone, which is reproducible
    epochs: float = 10.0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = no clipping
    gradient_accumulation_steps: int = 1  # micro steps per optimizer step, summed over processes
    warmup_iters: int = 1000
    lr_decay_iters: int = 0  # 0 = max_iters
    min_lr: float = 1e-5
    # system
    device: str = "auto"  # auto = cuda, then mps, then cpu; or name one ('cpu', 'cuda:1')
    dtype: str = "auto"  # auto = bfloat16 where supported, float16 on older GPUs, else float32
    compile: bool | None = None  # None = on for CUDA only (on CPU it gains little, costs 20-30 s)
    peak_flops: float = 0.0  # per device, for MFU; 0 = H100 bf16 dense on CUDA, measured elsewhere
    cond_prefix: int = field(default=0, init=False)  # follows cond_embedding; not a key of its own

    def __post_init__(self):
        self.cond_prefix = tokenizer.PREFIX_LEN if self.cond_embedding else 0


PROBABILITIES = (*attributes.DROPOUTS, "revoice")


@dataclass
class State:
    """What training changes as it goes: the loop and its steps below read and write it."""

    model: GPT  # the model itself (neither compiled nor wrapped by DDP): what is saved
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    iter_num: int = 0
    best_val_loss: float = float("inf")
    tokens_seen: int = 0  # the run's progress in tokens, whatever batch shapes it ran with
    last_checkpoint: str | None = None  # saved or resumed by this run, never a skipped one
    ev: dict | None = None  # the last eval's figures
    time_spent: float = 0.0  # seconds of training over the run, resumes included (runconfig.Clock)
    lr: float = 0.0
    grad_norm: float = 0.0


# -----------------------------------------------------------------------------
# training


def train(cfg):
    """Train as cfg says -> the best val loss. Rank 0 holds out_dir as its one writer
    (files.folder_lock) from before it reads a checkpoint until its last one is written."""
    run = runconfig.setup(cfg)
    with folder_lock(cfg.out_dir, create=True) if run.master else nullcontext():
        data = load_dataset(cfg.data_dir)
        cfg, run, resumed_from, ckpt = runconfig.resolve(cfg, run, data)
        state = init_state(cfg, run, ckpt, resumed_from)
        del ckpt  # free its memory before training
        train_loop(cfg, run, state, data)
    if run.ddp:
        # rank 0 ends with the split eval and the last save; the others wait for it, since a gloo
        # group torn down while its peer is still connected can abort the process
        dist.barrier()
        dist.destroy_process_group()
    return state.best_val_loss


def train_loop(cfg, run, state, data):
    """Optimizer steps from state.iter_num to max_iters, or until the budget (max_minutes) is spent,
    with logging, evals and checkpoints on the way (eval_and_save)."""
    model = torch.compile(state.model) if cfg.compile else state.model
    if run.ddp:
        model = DDP(model, device_ids=[run.local_rank] if run.device_type == "cuda" else None)
    eval_model = model.module if run.ddp else model  # eval needs no gradient sync
    clock = runconfig.Clock.of_run(cfg, run, state.time_spent, data)
    log, close_logs = open_logs(cfg, run, state, data, clock=clock) if run.master else (None, None)
    speed = Speed(peak=peak_flops(cfg, run), flops_per_token=state.model.flops_per_token())
    started = dict(t=clock.restart(), iter=state.iter_num)
    bar = tqdm(**clock.bar(cfg.max_iters, state.iter_num, run.master))
    share = clock.signal(run)  # with a budget, rank 0's clock decides for every process
    while state.iter_num < cfg.max_iters and not clock.stopped:
        step_start = time.time()
        loss = train_step(model, state, data, cfg=cfg, run=run, share=share)
        state.iter_num += 1
        state.tokens_seen += run.tokens_per_iter
        speed.iters += 1
        share = clock.step_done(time.time() - step_start, run, bar, state.iter_num)
        last = state.iter_num == cfg.max_iters or clock.stopped
        if run.master and (state.iter_num % cfg.log_interval == 0 or last):
            log_step(log, state, cfg=cfg, run=run, loss=loss.item(), speed=speed, clock=clock)
            speed.restart()
        if clock.stopped and run.master:
            tqdm.write(clock.bought(state.iter_num, state.tokens_seen))
        if last or not (state.iter_num % cfg.eval_interval and state.iter_num % cfg.save_interval):
            eval_and_save(eval_model, state, data, cfg=cfg, run=run, clock=clock, log=log)
            speed.restart()  # eval and saving don't count against training speed
    bar.close()
    if run.master:
        print_summary(cfg, run, state, started, clock=clock)
        close_logs()


def eval_and_save(model, state, data, *, cfg, run, clock, log):
    """An eval every eval_interval steps and at the last, which adds the val figure of every window
    of the split (checkpoints.split_loss); a checkpoint then and every save_interval steps. Timed,
    so that the budget knows what the final ones will cost (runconfig.Clock.reserve)."""
    last = state.iter_num == cfg.max_iters or clock.stopped
    evaluated, improved = state.iter_num % cfg.eval_interval == 0 or last, False
    if evaluated:
        eval_start = time.time()
        state.ev = ev = eval_splits(model, data, cfg, run)
        clock.window_s = (time.time() - eval_start) / clock.eval_windows
        improved = ev["val_loss"] < state.best_val_loss
        state.best_val_loss = min(state.best_val_loss, ev["val_loss"])
        if last and run.master:  # the figure evaluate.py reports, on the same windows
            split = checkpoints.split_loss(model, data, "val", ctx=run.ctx)
            ev |= dict(val_split_loss=split["loss"], val_nats_per_note=split["nats_per_note"])
        if run.master:
            print_eval(ev, state.iter_num, list(data["meta"]["blocks"]))
            log(dict(iter=state.iter_num, **{k: v for k, v in ev.items() if k != "semantic"}))
    check_finite(state)  # a diverged model must not rotate the good checkpoints out
    # a run stopped by its budget has spent all of it (resumed, it does nothing)
    state.time_spent = clock.budget if last and clock.stopped else clock.spent()
    save_start = time.time()
    saved = save_checkpoint(state, data, cfg=cfg, run=run, improved=improved, last=last)
    clock.save_s = time.time() - save_start
    state.last_checkpoint = saved or state.last_checkpoint


def train_step(model, state, data, *, cfg, run, share=None):
    """One optimizer step over grad_accum micro batches -> the mean loss (a tensor, not synced)."""
    state.lr = get_lr(state.iter_num, cfg, share)
    for group in state.optimizer.param_groups:
        group["lr"] = state.lr  # model.Muon scales it per group
    # the batches depend on (seed, rank, iter) alone, so a resumed run gets the same ones
    rng = np.random.default_rng([0, cfg.seed, run.rank, state.iter_num])
    loss_sum = torch.zeros((), device=run.device)
    for micro_step in range(run.grad_accum):
        batch = get_batch(
            data,
            "train",
            rng,
            batch_size=cfg.batch_size,
            block_size=cfg.block_size,
            dropout=attributes.dropout_of(cfg),
            transpose=cfg.transpose,
            balance=cfg.balance,
            tempo_jitter=cfg.tempo_jitter,
            pack=cfg.pack,
            revoice=cfg.revoice,
        )
        x, y = to_device(batch, run)  # (B, T) each
        if run.ddp:  # all-reduce the gradients on the last micro step only
            model.require_backward_grad_sync = micro_step == run.grad_accum - 1
        with run.ctx:
            _, loss = model(x, y)
        loss_sum += loss.detach()
        state.scaler.scale(loss / run.grad_accum).backward()
    state.scaler.unscale_(state.optimizer)  # clip the true gradients, not the scaled ones
    # synced when logged
    state.grad_norm = torch.nn.utils.clip_grad_norm_(
        state.model.parameters(), cfg.grad_clip or float("inf")
    )
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.optimizer.zero_grad(set_to_none=True)
    return loss_sum / run.grad_accum


def get_lr(it, cfg, share=None):
    """Linear warmup to learning_rate, cosine decay to min_lr at lr_decay_iters, min_lr after.
    With a budget (share: of its training time spent, 0..1) the schedule follows the time: share s
    is its iteration s * lr_decay_iters, so warm-up takes warmup_iters / lr_decay_iters of the
    budget and the decay ends with it (or with max_iters, if the steps run out first)."""
    if share is not None:
        it = max(share, it / cfg.max_iters) * cfg.lr_decay_iters
    if it < cfg.warmup_iters:
        return cfg.learning_rate * (it + 1) / (cfg.warmup_iters + 1)
    if it > cfg.lr_decay_iters:
        return cfg.min_lr
    ratio = (it - cfg.warmup_iters) / max(1, cfg.lr_decay_iters - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (cfg.learning_rate - cfg.min_lr)


def to_device(batch, run):
    """numpy (x, y) -> tensors on the device; pinned memory lets the copy overlap the GPU's work."""
    tensors = [torch.from_numpy(a) for a in batch]
    if run.device_type == "cuda":
        return [t.pin_memory().to(run.device, non_blocking=True) for t in tensors]
    return [t.to(run.device) for t in tensors]


# -----------------------------------------------------------------------------
# eval: an estimate on the same batches every time, so evals compare


def eval_splits(model, data, cfg, run):
    """The estimate at each eval: model.estimate_loss on eval_iters fixed batches of each split,
    every window led by its full attribute prefix. On val also perplexity, next-token accuracy,
    nats per note (val_nats_per_note_est), loss per token type and per semantic token, and what
    conditioning gains (nats; > 0: it helps): val_cond_gain, the val loss with the whole prefix
    unspecified minus the loss with it; val_semantic_gain, the same for the semantic token alone
    (windows of files that have one)."""
    uncond, ev = data["meta"]["uncond_token"], {}
    variants = dict(
        uncond=attributes.blank_prefix(attributes.PREFIX_SLOTS),
        no_semantic=attributes.blank_prefix(["semantic"]),
    )
    for split_index, split in enumerate(("train", "val")):  # val last: `t` below holds its tables
        rng = np.random.default_rng([1, cfg.seed, split_index])  # stream 1 = eval (0 = training)
        shape = dict(batch_size=cfg.batch_size, block_size=cfg.block_size)
        batches = (
            to_device(get_batch(data, split, rng, **shape), run) for _ in range(cfg.eval_iters)
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
    ev["val_ppl"] = math.exp(min(ev["val_loss"], 50.0))
    ev["val_acc"] = float(t["overall"]["acc"][0])
    first, types_ = t["first"], t["type"]
    ev["val_cond_gain"] = float(t["overall"]["loss_uncond"][0] - t["overall"]["loss"][0])
    # windows of files with a semantic id
    conditioned = [i for i in np.flatnonzero(first["tokens"]) if i != uncond]
    if conditioned:
        n = first["tokens"][conditioned]
        gain = first["loss_no_semantic"][conditioned] - first["loss"][conditioned]
        ev["val_semantic_gain"] = float((n * gain).sum() / n.sum())
    ev["val_nats_per_note_est"] = summed_loss_per(types_, tokenizer.TYPE["NOTE"])
    for i, name in enumerate(data["meta"]["blocks"]):
        if i < len(types_["tokens"]) and types_["tokens"][i]:
            ev[f"val_loss_{name}"] = float(types_["loss"][i])
    ev["semantic"] = semantic_rows(first, data)
    ev |= {f"val_loss_{name}": loss for name, _, _, loss in ev["semantic"]}
    return ev


def semantic_rows(first, data):
    """estimate_loss's "first" table -> (token, label, tokens, loss) of each semantic token."""
    meta, uncond = data["meta"], data["meta"]["uncond_token"]
    offset = meta["semantic_offset"]
    names = {offset + k: tokenizer.semantic_name(k) for k in range(meta["n_semantic"])}
    labels = {uncond: "(files without a semantic id)"} | {
        offset + k: label for k, label in enumerate(data["labels"])
    }
    rows = []
    for i in np.flatnonzero(first["tokens"]):
        name = names.get(i, "SEMANTIC_UNCOND")
        rows.append((name, labels.get(i, ""), int(first["tokens"][i]), float(first["loss"][i])))
    return rows


def semantic_table(rows):
    lines = [f"  {'token':<18} {'label':<44} {'tokens':>8} {'loss':>7} {'ppl':>8}"]
    for name, label, n, loss in rows:
        ppl = math.exp(min(loss, 50))
        lines.append(f"  {name:<18} {label[:44]:<44} {n:>8,} {loss:>7.3f} {ppl:>8.2f}")
    return "\n".join(lines)


def print_eval(ev, iter_num, type_names):
    semantic = ev.get("val_semantic_gain")
    semantic = "n/a (no semantic ids)" if semantic is None else f"{semantic:+.4f}"
    by_type = [f"{n} {ev['val_loss_' + n]:.3f}" for n in type_names if "val_loss_" + n in ev]
    tqdm.write(
        f"eval {iter_num}: train loss {ev['train_loss']:.4f}, val loss {ev['val_loss']:.4f} "
        f"(ppl {ev['val_ppl']:.2f}, acc {100 * ev['val_acc']:.1f}%, "
        f"{ev['val_nats_per_note_est']:.3f} nats per note est.), conditioning gain "
        f"{ev['val_cond_gain']:+.4f} nats (semantic token alone {semantic})\n"
        f"  val loss by type: {', '.join(by_type)}"
    )
    if "val_nats_per_note" in ev:
        tqdm.write(
            f"val split, every window: loss {ev['val_split_loss']:.4f}, "
            f"{ev['val_nats_per_note']:.3f} nats per note"
        )


# -----------------------------------------------------------------------------
# checkpoints: checkpoints.py writes and rotates them


def check_finite(state):
    """Stop with a UserError, before anything is saved, once a weight is not finite: training has
    diverged, and saving it would replace the last good checkpoints (keep_last) with useless ones.
    """
    if not all(torch.isfinite(p).all() for p in state.model.parameters()):
        raise UserError(
            f"the weights are not finite at iter {state.iter_num} (training diverged); the "
            f"checkpoints before it are kept: resume from them with a lower learning_rate"
        )


def save_checkpoint(state, data, *, cfg, run, improved, last=False):
    """The best checkpoint when val improved, a numbered one every save_interval and at the end ->
    the numbered path written, or None. Every process joins (the random states are gathered)."""
    states = [checkpoints.rng_state()]
    if run.ddp:  # a collective: every process hands rank 0 its random state
        states = [None] * run.world
        dist.all_gather_object(states, checkpoints.rng_state())
    if not run.master:
        return None
    ckpt = dict(
        model=state.model.state_dict(),
        optimizer=state.optimizer.state_dict(),
        scaler=state.scaler.state_dict(),
        model_args=asdict(GPTConfig.from_settings(cfg)),
        iter_num=state.iter_num,
        best_val_loss=state.best_val_loss,
        config=asdict(cfg),
        meta=data["meta"],
        labels=data["labels"],
        rng=states,
        tokens_seen=state.tokens_seen,
        time_spent=state.time_spent,
        programs_seen=dict(data["programs_seen"]),  # {GM program: train files}, for sample.py
        token_examples=data["token_examples"],  # what a prompt leaves unnamed follows its token
    )
    numbered = state.iter_num % cfg.save_interval == 0 or state.iter_num == cfg.max_iters or last
    return checkpoints.save(
        ckpt, cfg.out_dir, best=improved, numbered=numbered, keep_last=cfg.keep_last
    )


# -----------------------------------------------------------------------------
# the run's start: the model and optimizer, fresh or from the checkpoint resolve() chose


def init_state(cfg, run, ckpt, resumed_from):
    """-> State: a fresh model; the checkpoint's weights with the rest fresh (a fine-tune); or
    everything as the checkpoint left it (resume)."""
    if ckpt:
        model = checkpoints.model_of(ckpt, run.device, dropout=cfg.dropout).train()
    else:
        model = GPT(GPTConfig.from_settings(cfg)).to(run.device)
    # float16 needs loss scaling so that small gradients don't flush to zero; bf16 and fp32 don't
    scaler = torch.amp.GradScaler(run.device_type, enabled=(run.dtype == "float16"))
    optimizer = model.configure_optimizers(
        weight_decay=cfg.weight_decay,
        learning_rate=cfg.learning_rate,
        betas=(cfg.beta1, cfg.beta2),
        device_type=run.device_type,
        muon_lr=cfg.muon_lr,
    )
    state = State(model, optimizer, scaler, tokens_seen=runconfig.tokens_seen(ckpt, cfg))
    state.last_checkpoint = resumed_from
    if not ckpt or runconfig.fine_tuning(cfg):
        return state
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    if len(ckpt["rng"]) == run.world:  # each process gets its own dropout stream back
        checkpoints.set_rng_state(ckpt["rng"][run.rank])
    state.iter_num, state.best_val_loss = ckpt["iter_num"], ckpt["best_val_loss"]
    state.time_spent = ckpt.get("time_spent", 0.0)  # not in checkpoints of older code
    return state


# -----------------------------------------------------------------------------
# logging (rank 0): the resolved config, out_dir/log.jsonl, TensorBoard, and the closing summary


@dataclass
class Speed:
    """Tokens per second since the last log line, and the figures MFU is measured with."""

    peak: float  # FLOP/s of one device (peak_flops)
    flops_per_token: float
    t: float = field(default_factory=time.time)
    iters: int = 0

    def restart(self):
        self.t, self.iters = time.time(), 0


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


def open_logs(cfg, run, state, data, *, clock):
    """Print and save the resolved config and the run's size; -> log(record), which appends a line
    to out_dir/log.jsonl and sends its numbers to TensorBoard, and close()."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    settings = " ".join(f"{k}={v}" for k, v in asdict(cfg).items())
    print("config: " + textwrap.fill(settings, 110, subsequent_indent="  "))
    write_atomic(os.path.join(cfg.out_dir, "config.json"), json.dumps(asdict(cfg), indent=1))
    train_tokens, resumed_from = len(data["train"]["tokens"]), state.last_checkpoint
    # passes over train.bin by max_iters, each part of the run at the shape it ran with
    to_come = (cfg.max_iters - state.iter_num) * run.tokens_per_iter
    epochs = (state.tokens_seen + to_come) / train_tokens
    length = clock.plan(f"{cfg.max_iters:,} iters = {epochs:.1f} epochs")
    print(
        f"{state.model.num_params() / 1e6:.2f}M parameters on {run.world} x {run.device} "
        f"({run.dtype}{', compiled' if cfg.compile else ''}); {train_tokens:,} train tokens, "
        f"{run.tokens_per_iter:,} per iter, {length}"
        + (f"; resuming {resumed_from} at iter {state.iter_num}" if resumed_from else "")
    )
    if cfg.warmup_iters > cfg.max_iters // 2:
        print(
            f"note: warmup_iters={cfg.warmup_iters} is over half of the {cfg.max_iters:,} iters "
            "(set --warmup_iters)"
        )
    if not data["has_semantic"]:
        print(
            f"note: no {cfg.data_dir}/semantic.json, so every window is unconditional (make it "
            f"with: {rebuild_command(cfg.data_dir, 'cluster.py')})"
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


def log_step(log, state, *, cfg, run, loss, speed, clock):
    """A record every log_interval iterations: loss, learning rate, gradient norm, speed, MFU and
    memory; printed on a terminal each time, in a log file (not a terminal) about ten times a run.
    """
    tokens_per_s = run.tokens_per_iter * speed.iters / (time.time() - speed.t)
    record = dict(
        iter=state.iter_num,
        loss=loss,
        lr=state.lr,
        grad_norm=float(state.grad_norm),
        tokens_per_s=tokens_per_s,
        mfu=speed.flops_per_token * tokens_per_s / run.world / speed.peak,
        memory_gib=memory_gib(run.device_type),
    )
    log(record)
    tty, last = sys.stdout.isatty(), state.iter_num == cfg.max_iters or clock.stopped
    print_every = cfg.log_interval * (1 if tty else max(1, cfg.max_iters // 10 // cfg.log_interval))
    due = clock.new_tenth() if clock.budget and not tty else state.iter_num % print_every == 0
    if not (due or last):
        return
    tqdm.write(
        f"iter {record['iter']}: loss {loss:.4f}, lr {record['lr']:.2e}, grad norm "
        f"{record['grad_norm']:.3f}, {tokens_per_s:,.0f} tok/s, mfu {100 * record['mfu']:.1f}%, "
        f"mem {record['memory_gib']:.2f} GiB"
    )


def print_summary(cfg, run, state, started, *, clock):
    """The closing table: what ran (with a budget: what it bought), how fast, the val figures, the
    checkpoints this run leaves."""
    elapsed, best = time.time() - started["t"], checkpoints.best_path(cfg.out_dir)
    ev, best_loss = state.ev or {}, state.best_val_loss
    if state.ev is not None:
        print(f"val loss per semantic token (iter {state.iter_num}):")
        print(semantic_table(ev["semantic"]))
    tokens_per_s = run.tokens_per_iter * (state.iter_num - started["iter"]) / elapsed
    rows = [
        ("iterations", f"{started['iter']:,} -> {state.iter_num:,} of {cfg.max_iters:,}"),
        ("tokens", f"{state.tokens_seen:,} trained on"),
        ("time", f"{elapsed / 60:.1f} min"),
        ("tokens/s", f"{tokens_per_s:,.0f} (evals included)"),
        ("best val loss", f"{best_loss:.4f} (ppl {math.exp(min(best_loss, 50)):.2f})"),
    ]
    if cfg.max_minutes:
        rows.insert(3, ("budget", clock.summary(state.time_spent)))
    if "val_nats_per_note" in ev:
        rows.append(("val nats/note", f"{ev['val_nats_per_note']:.3f} (every window of val)"))
    tb = f"tensorboard --logdir {os.path.join(cfg.out_dir, 'tb')}" if cfg.tensorboard else "off"
    rows += [
        ("last checkpoint", state.last_checkpoint or "none"),
        ("best checkpoint", best if os.path.exists(best) else "none"),
        ("tensorboard", tb),
    ]
    print("\n".join(f"{k:<16} {v}" for k, v in rows))


# -----------------------------------------------------------------------------
# the command line


def parse_config(argv):
    """['config/amt.py', '--key=value', '--key', 'value', ...] -> Config; later settings win. Every
    setting is range-checked before any work (runconfig.check_training)."""
    cfg, where = runconfig.parse(argv, Config)
    runconfig.check_training(cfg, where, PROBABILITIES)
    return cfg


if __name__ == "__main__":
    run_script(
        lambda: train(parse_config(sys.argv[1:])),
        interrupted="interrupted; go on with --init_from=resume",
    )
