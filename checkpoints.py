"""Checkpoints: the files a training run leaves, which one a command means, loading and saving them,
and the one val figure of the model a checkpoint holds.

A run folder (out_dir) holds ckpt_NNNNNNN.pt, named by its iteration (every save_interval and at
the end; the newest keep_last stay), and ckpt_best.pt (at the eval with the lowest val loss). This
file is the only place that spells those names. A checkpoint is a dict of tensors and plain types,
so torch.load(weights_only=True) loads it and a file never runs code: model (weights), model_args
(model.GPTConfig's fields), optimizer, scaler, iter_num, best_val_loss, config, meta, labels, rng,
tokens_seen, programs_seen and token_examples (train.py's save_checkpoint writes it).

    model, ckpt = load_model(chosen("out/amt_cpu", "best"))
    split_loss(model, dataset.load_dataset(data_dir(ckpt)))["nats_per_note"]
"""

import os
import random
import re
from contextlib import nullcontext

import numpy as np
import torch
from tqdm import tqdm

import dataset
import tokenizer
from files import UserError, write_atomic
from model import GPT, GPTConfig, estimate_loss, summed_loss_per

OUT_DIR = "out/amt_cpu"  # the CPU demo's run: where sample.py, app.py and evaluate.py look first
TRAIN_COMMAND = "python train.py config/amt_cpu.py"
BEST = "ckpt_best.pt"
NUMBERED = re.compile(r"ckpt_\d{7}\.pt")  # .tmp leftovers of a write never match
# --ckpt, as chosen() reads it, in the help of every script that loads a checkpoint
CKPT_HELP = (
    f"a checkpoint file or run folder, or 'best' for OUT_DIR/{BEST}; default OUT_DIR's newest"
)


# -----------------------------------------------------------------------------
# finding and choosing


def best_path(out_dir):
    return os.path.join(out_dir, BEST)


def numbered_path(out_dir, iter_num):
    return os.path.join(out_dir, f"ckpt_{iter_num:07d}.pt")


def numbered_checkpoints(out_dir):
    """Paths of out_dir's numbered checkpoints, oldest first."""
    names = (
        [n for n in os.listdir(out_dir) if NUMBERED.fullmatch(n)] if os.path.isdir(out_dir) else []
    )
    return [os.path.join(out_dir, n) for n in sorted(names)]


def present(out_dir):
    """The names of every checkpoint in out_dir, whether it loads or not."""
    best = [BEST] if os.path.isfile(best_path(out_dir)) else []
    return [os.path.basename(p) for p in numbered_checkpoints(out_dir)] + best


def chosen(out_dir, ckpt=None):
    """What --ckpt names -> the path load_model takes: "best" is out_dir's ckpt_best.pt, a file or a
    run folder is itself, and none is out_dir (its newest checkpoint that loads)."""
    return best_path(out_dir) if ckpt == "best" else ckpt or out_dir


def train_command(out_dir):
    """The command that makes a checkpoint in out_dir."""
    same = os.path.normpath(out_dir) == os.path.normpath(OUT_DIR)
    return TRAIN_COMMAND + ("" if same else f" --out_dir={out_dir}")


def data_dir(ckpt, asked=None):
    """The dataset folder a command reads: the one asked for, else the one the checkpoint was
    trained on."""
    return asked or ckpt.get("config", {}).get("data_dir", dataset.DEFAULT_DATA_DIR)


# -----------------------------------------------------------------------------
# loading


def load_checkpoint(path):
    """A checkpoint file -> its dict, on the CPU. weights_only: tensors and plain types only, so a
    file can never run code (the one place that loads checkpoints)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def open_checkpoint(path, fix):
    """load_checkpoint, where a file that does not load (not a checkpoint, or one cut short) is a
    UserError that ends with what to do (fix)."""
    try:
        return load_checkpoint(path)
    except Exception as e:
        raise UserError(
            f"{path} does not load as a checkpoint ({type(e).__name__}); {fix}"
        ) from None


def latest_checkpoint(out_dir):
    """(path, checkpoint) of the newest checkpoint in out_dir that loads, else (None, None): the
    newest numbered one that loads, or ckpt_best.pt where it is newer (it is saved at evals, which
    may fall between numbered ones) or where no numbered one loads. A file cut short by a crash
    fails to load and is skipped."""
    found = None, None
    for path in reversed(numbered_checkpoints(out_dir)):
        try:
            found = path, load_checkpoint(path)
            break
        except Exception as e:  # whatever is wrong with the file, the one before may be fine
            print(f"skipping {path}: it does not load ({type(e).__name__})")
    best = best_path(out_dir)
    if os.path.isfile(best):
        try:
            ckpt = load_checkpoint(best)
        except Exception as e:
            print(f"skipping {best}: it does not load ({type(e).__name__})")
        else:
            if found[1] is None or ckpt.get("iter_num", -1) > found[1].get("iter_num", -1):
                return best, ckpt
    return found


def check_vocabulary(ckpt, path, fix):
    """The one check that a checkpoint and tokenizer.py agree: its vocabulary layout (meta.json's
    "blocks") must be tokenizer.LAYOUT and its model must have an id for every token. Else a
    UserError naming path and what to do (fix), for sampling and for resuming alike."""
    if not (
        isinstance(ckpt, dict)
        and isinstance(ckpt.get("model_args"), dict)
        and isinstance(ckpt.get("model"), dict)
        and isinstance(ckpt["model_args"].get("vocab_size"), int)
    ):
        raise UserError(
            f"{path} is not a checkpoint of train.py (no model weights or model_args); {fix}"
        )
    if not isinstance(ckpt.get("meta"), dict) or ckpt["meta"].get("blocks") != tokenizer.LAYOUT:
        raise UserError(
            f"{path} was trained on another vocabulary (an older one predates the attribute "
            f"prefix: key, meter, tempo, instruments); {fix}"
        )
    if ckpt["model_args"]["vocab_size"] < tokenizer.VOCAB_SIZE:
        raise UserError(
            f"{path}: its model has {ckpt['model_args']['vocab_size']} token ids, tokenizer.py "
            f"needs {tokenizer.VOCAB_SIZE}; {fix}"
        )


def model_of(ckpt, device="cpu", **overrides):
    """A checkpoint dict -> the GPT it holds, on device, in eval mode; overrides change model_args
    that do not touch the weights' shapes (dropout, when a run resumes)."""
    model = GPT(GPTConfig.from_settings(ckpt["model_args"], **overrides))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:  # weights of another shape than its model_args say
        raise UserError(
            f"the checkpoint's weights do not fit its own model shape "
            f"({str(e).splitlines()[-1].strip()[:160]}); use another checkpoint"
        ) from None
    return model.to(device).eval()


def load_model(path, device="cpu"):
    """A checkpoint file, or a run folder (its newest checkpoint that loads) -> (model in eval mode,
    the checkpoint dict less its weights and optimizer state, plus "path"). Where there is nothing
    to load, a UserError says what to do."""
    if os.path.isfile(path):
        ckpt = open_checkpoint(path, "it may be cut short, try another")
    elif path.endswith(".pt"):
        where = os.path.dirname(path) or "."
        raise UserError(f"checkpoint {path} not found; make one with: {train_command(where)}")
    else:
        out_dir = path
        path, ckpt = latest_checkpoint(out_dir)
        if ckpt is None and present(out_dir):
            raise UserError(
                f"none of the checkpoints in {out_dir} loads (cut short?); delete them, then train "
                f"again: {train_command(out_dir)}"
            )
        if ckpt is None:
            raise UserError(f"no checkpoint in {out_dir}; make one with: {train_command(out_dir)}")
    retrain = f"retrain it: python prepare.py, then {train_command(os.path.dirname(path) or '.')}"
    check_vocabulary(ckpt, path, retrain)
    model = model_of(ckpt, device)
    if not all(torch.isfinite(p).all() for p in model.parameters()):  # else multinomial fails
        raise UserError(
            f"{path} holds weights that are not finite (its training diverged); use an earlier "
            f"checkpoint (--ckpt), or retrain with a lower learning_rate"
        )
    kept = {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")}
    return model, kept | {"path": path}


# -----------------------------------------------------------------------------
# where a training run starts


def resume_from(out_dir, init_from):
    """The checkpoint a run in out_dir goes on from -> (path, checkpoint), or (None, None) to start
    from scratch: with init_from "resume", the newest in out_dir that loads. Every refusal names a
    next step that works: neither "start from scratch" nor "go on with resume" is said where it
    would only be refused in turn."""
    names = present(out_dir)
    if not names:
        if init_from == "resume":
            raise UserError(
                f"no checkpoint in {out_dir} to resume from; start one with --init_from=scratch"
            )
        return None, None
    path, ckpt = latest_checkpoint(out_dir)
    if ckpt is None:
        raise UserError(
            f"none of the checkpoints in {out_dir} loads ({', '.join(names)}: cut short?); delete "
            f"them to start over with --init_from=scratch, or choose another --out_dir"
        )
    if init_from == "scratch":
        raise UserError(
            f"{out_dir} already holds checkpoints; go on with --init_from=resume (from "
            f"{os.path.basename(path)}), or choose another --out_dir (or delete it) to start over"
        )
    check_vocabulary(ckpt, path, f"start over: delete {out_dir} or choose another --out_dir")
    return path, ckpt


def fine_tune_from(source, out_dir):
    """The checkpoint a fine-tune into out_dir (which must hold none) starts from -> (path,
    checkpoint): the file source, or a run folder's ckpt_best.pt, else its newest that loads."""
    if present(out_dir):
        raise UserError(
            f"{out_dir} already holds checkpoints; fine-tune into another --out_dir (or delete it)"
        )
    if os.path.isdir(source) and not os.path.isfile(best_path(source)):
        path, ckpt = latest_checkpoint(source)
        if ckpt is None:
            raise UserError(
                f"no checkpoint in {source} to fine-tune from; give a checkpoint file or the "
                f"folder of a trained run ({TRAIN_COMMAND} makes {OUT_DIR})"
            )
    else:
        path = best_path(source) if os.path.isdir(source) else source
        ckpt = open_checkpoint(path, "give another to fine-tune from")
    fix = "fine-tune from a checkpoint that this tokenizer.py trained"
    check_vocabulary(ckpt, path, fix)
    return path, ckpt


# -----------------------------------------------------------------------------
# saving


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


def save(ckpt, out_dir, *, best, numbered, keep_last):
    """Write ckpt as ckpt_best.pt when best, and as the numbered checkpoint of its iter_num when
    numbered, then remove all but the newest keep_last numbered ones -> the numbered path, or None.
    Its weights lose torch.compile's "_orig_mod." prefix, so compiled and plain models share them.
    Each file is written to a temporary name first: a crash never leaves one half-written."""
    ckpt = ckpt | dict(model={k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})

    def write(path):
        write_atomic(path, lambda f: torch.save(ckpt, f))

    if best:
        write(best_path(out_dir))
    if not numbered:
        return None
    path = numbered_path(out_dir, ckpt["iter_num"])
    write(path)
    for old in numbered_checkpoints(out_dir)[: -max(1, keep_last)]:
        os.remove(old)
    return path


# -----------------------------------------------------------------------------
# the one val figure


@torch.no_grad()
def split_loss(
    model,
    data,
    split="val",
    *,
    ctx=nullcontext(),
    batch_size=16,
    max_windows=None,
    variants=None,
    baseline_nll=None,
):
    """A model's loss on a split of a prepared folder: the figure train.py's final eval, evaluate.py
    and bench.py report. Every token of the split is scored once (but the few that finish an event
    cut at a window's end), in the windows of dataset.covering_windows: each starts on an event
    boundary, as in training, led by its file's full attribute prefix (max_windows: at most that
    many, spread evenly). -> the tables of
    model.estimate_loss ("overall", "type", "first", with its variants and baseline_nll), plus
    "windows" (how many), "loss" (nats per scored token) and "nats_per_note" (the summed loss over
    the notes: a figure that stays comparable across tokenizations)."""
    T = model.config.block_size
    device = next(model.parameters()).device
    windows = dataset.covering_windows(data, split, T, max_windows)
    chunks = [windows[i : i + batch_size] for i in range(0, len(windows), batch_size)]
    batches = (
        dataset.build_windows(
            data, split, chunk, dataset.window_prefixes(data, split, chunk), block_size=T
        )
        for chunk in tqdm(chunks, desc=f"{split} loss", unit="batch", disable=None, leave=False)
    )
    scored = estimate_loss(
        model,
        ([torch.from_numpy(a).to(device) for a in batch] for batch in batches),
        ctx=ctx,
        token_type=torch.from_numpy(data["token_type"]),
        variants=variants,
        baseline_nll=baseline_nll,
    )
    return scored | dict(
        windows=len(windows),
        loss=float(scored["overall"]["loss"][0]),
        nats_per_note=summed_loss_per(scored["type"], tokenizer.TYPE["NOTE"]),
    )
