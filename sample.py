"""
Sample MIDI from a trained AMT checkpoint: a semantic token, a text prompt or a MIDI prime in,
.mid files with a piano-roll .png beside each out. Sampling is constrained by tokenizer.py's
grammar, so every sample decodes with no token skipped.

    python sample.py --token SEMANTIC_TOKEN_3                    # 3 samples from the newest checkpoint
    python sample.py --prompt "a slow chorale in a minor key"    # the nearest semantic token
    python sample.py --prime song.mid --prime_seconds 8          # continue the first 8 s of a piece
    python sample.py --token 3 --seconds 30 --guidance 2 --seed 1 --ckpt best
"""

import argparse
import json
import os
import random
import sys
import time
import warnings
from dataclasses import replace

import numpy as np
import torch
from tqdm import tqdm

import cluster
import describe
import tokenizer
from model import GPT, autocast, latest_checkpoint, pick_device
from tokenizer import UserError, seconds_at, write_atomic

OUT_DIR = "out/amt_cpu"                  # the CPU demo's run
TRAIN_COMMAND = "python train.py config/amt_cpu.py"
CHUNK = 128  # tokens per model.generate call; between calls we check which samples are done


# -----------------------------------------------------------------------------
# checkpoint and tokens

def train_command(out_dir):
    return TRAIN_COMMAND + ("" if os.path.normpath(out_dir) == os.path.normpath(OUT_DIR) else f" --out_dir={out_dir}")


def load_model(path, device="cpu"):
    """A checkpoint file, or a run folder (its newest numbered checkpoint that loads) -> (model in eval mode,
    the checkpoint dict less its weights and optimizer state, plus "path"). GPT.from_checkpoint does the
    loading; this adds what a person needs to hear when there is nothing to load."""
    if os.path.isfile(path):
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle code from a file
        except Exception as e:
            raise UserError(f"{path} does not load ({type(e).__name__}); it may be cut short, try another") from None
    elif path.endswith(".pt"):
        raise UserError(f"checkpoint {path} not found; make one with: {train_command(os.path.dirname(path) or '.')}")
    else:
        out_dir = path
        path, ckpt = latest_checkpoint(out_dir)  # skips files that a crash cut short
        if ckpt is None:
            raise UserError(f"no checkpoint in {out_dir}; make one with: {train_command(out_dir)}")
    blocks = {name: [tokenizer.OFFSET[name], size] for name, size in tokenizer.BLOCKS}
    if "meta" in ckpt and ckpt["meta"]["blocks"] != blocks:
        raise UserError(f"{path} was trained on another vocabulary than tokenizer.py's; re-run prepare.py, train.py")
    if ckpt["model_args"]["vocab_size"] < tokenizer.VOCAB_SIZE:
        raise UserError(f"{path}: vocab_size {ckpt['model_args']['vocab_size']} < tokenizer.VOCAB_SIZE "
                        f"{tokenizer.VOCAB_SIZE}")
    model = GPT.from_checkpoint(ckpt, device)
    return model, {k: v for k, v in ckpt.items() if k not in ("model", "optimizer")} | {"path": path}


def token_labels(ckpt, data_dir):
    """Cluster labels of the semantic tokens: those the checkpoint was trained with, else clusters.json's."""
    path = os.path.join(data_dir, "clusters.json")
    on_disk = cluster.load_clusters(data_dir)["labels"] if os.path.exists(path) else []
    if ckpt.get("labels") and on_disk and on_disk != ckpt["labels"]:
        print(f"note: {path} differs from the clusters {ckpt['path']} was trained with (re-clustered since?)")
    return ckpt.get("labels") or on_disk


def semantic_token_id(token, labels=()):
    """'SEMANTIC_TOKEN_3', '3', 3 or 'SEMANTIC_UNCOND' -> token id. With labels, only the trained clusters count."""
    name = f"SEMANTIC_TOKEN_{token}" if str(token).isdigit() else str(token)
    k = len(labels) or tokenizer.N_SEMANTIC
    valid = [f"SEMANTIC_TOKEN_{i}" for i in range(k)] + ["SEMANTIC_UNCOND"]
    if name not in valid:
        listed = ", ".join(f"{v} ({label})" for v, label in zip(valid, labels)) if labels \
            else f"SEMANTIC_TOKEN_0..SEMANTIC_TOKEN_{k - 1}"
        raise UserError(f"unknown token {name!r}; valid tokens: {listed}, SEMANTIC_UNCOND (unconditional)")
    return tokenizer.token_id(name)


def prime_tokens(path, seconds):
    """The notes of a MIDI file that start in its first `seconds` -> tokens START ... (no END), the prompt
    that the model continues. Raises MidiError for a corrupt file, SampleError if nothing is left."""
    if not os.path.isfile(path):
        raise UserError(f"prime {path} not found")
    try:
        score = tokenizer.read_midi(path)
    except tokenizer.MidiError as e:
        raise tokenizer.MidiError(f"prime {path}: {e}") from None
    notes = [n for n, t in zip(score.notes, seconds_at([n.onset for n in score.notes], score.tempos)) if t < seconds]
    if not notes:
        raise UserError(f"prime {path}: no note starts in its first {seconds:g} s; raise --prime_seconds")
    last = notes[-1].onset  # the prompt ends right after the last kept note, where the model goes on
    score = replace(score, notes=notes, end_step=last, tempos=[t for t in score.tempos if t[0] <= last],
                    time_signatures=[t for t in score.time_signatures if t[0] <= last])
    return tokenizer.score_to_tokens(score)[:-1]  # drop END: the piece goes on


# -----------------------------------------------------------------------------
# constrained generation

def grammar_hook(vocab_size, device):
    """A model.generate logits_hook that leaves only the ids tokenizer.py's grammar allows after each row's last
    token. Ids >= tokenizer.VOCAB_SIZE (a model vocab rounded up) are never allowed."""
    V, T = tokenizer.VOCAB_SIZE, tokenizer.TYPE
    special = np.isin(tokenizer.TOKEN_TYPE, [T[n] for n in ("PAD", "UNK", "START", "SEMANTIC", "UNCOND")])  # (V,)
    mid_stream = ~np.isin(tokenizer.TOKEN_TYPE, [T[n] for n in ("PAD", "END", "SEMANTIC", "UNCOND")])       # (V,)
    assert not tokenizer.GRAMMAR_MASK[mid_stream][:, special].any(), "the grammar lets a special token in mid-stream"
    allowed = torch.zeros(vocab_size, vocab_size, dtype=torch.bool)  # (prev id, next id)
    allowed[:V, :V] = torch.from_numpy(tokenizer.GRAMMAR_MASK)
    allowed = allowed.to(device)

    def hook(tokens, logits):  # tokens (B, t), logits (B, vocab_size)
        return logits.masked_fill(~allowed[tokens[:, -1]], float("-inf"))  # (B, vocab_size)
    return hook


def stop_index(row, prompt_len, seconds=None):
    """Where a sample ends: just past its first END, or at the first TIME_ON that takes the music to
    `seconds`; None while it goes on."""
    ends = np.flatnonzero(row[prompt_len:] == tokenizer.END)
    stop = prompt_len + int(ends[0]) + 1 if len(ends) else None
    if seconds is not None:
        is_time = tokenizer.TOKEN_TYPE[row] == tokenizer.TYPE["TIME_ON"]                         # (t,)
        steps = np.cumsum(np.where(is_time, row - tokenizer.OFFSET["TIME_ON"] + 1, 0))  # (t,) time after each token
        late = np.flatnonzero(seconds_at(steps[prompt_len:], tokenizer.tokens_to_score(row)[0].tempos) >= seconds)
        if len(late) and (stop is None or prompt_len + late[0] < stop):
            stop = prompt_len + int(late[0])
    return stop


def finish(row, prompt_len, seconds=None):
    """Cut a sample where it ends and close it with END. A sample that ran out of tokens mid-event
    loses that event, so the file ends cleanly."""
    row = row[:stop_index(row, prompt_len, seconds) or len(row)]
    if row[-1] != tokenizer.END:
        while not tokenizer.GRAMMAR_MASK[row[-1], tokenizer.END]:
            row = row[:-1]
        row = np.append(row, tokenizer.END)
    return row


def generate_tokens(model, token, *, n_samples=1, max_new_tokens=512, temperature=1.0, top_k=None, top_p=None,
                    guidance=1.0, seed=None, prime_tokens=None, device=None, seconds=None, dtype="float32"):
    """Sample n_samples pieces for one semantic token (name, semantic id or 'SEMANTIC_UNCOND') ->
    list of int64 arrays [semantic token, START, ..., END]. prime_tokens (START ...) are continued.
    Generation stops at max_new_tokens, or once every sample has reached END (or `seconds`).
    guidance != 1: classifier-free guidance against the same prompt led by the unconditional token."""
    device = device or next(model.parameters()).device
    device_type = torch.device(device).type
    body = [tokenizer.START] if prime_tokens is None else [int(t) for t in prime_tokens]
    assert body[0] == tokenizer.START and tokenizer.END not in body, "a prompt is START ... without END"
    prompt = torch.tensor([[semantic_token_id(token)] + body] * n_samples, device=device)  # (B, T)
    generator = None if seed is None else torch.Generator(device).manual_seed(seed)
    hook, block = grammar_hook(model.config.vocab_size, device), model.config.block_size
    ctx = autocast(device_type, dtype)
    seq, prompt_len = prompt, prompt.size(1)
    with tqdm(total=max_new_tokens, desc="sampling", unit="tok", disable=None, leave=False) as bar:
        while seq.size(1) - prompt_len < max_new_tokens:
            n = min(CHUNK, max_new_tokens - (seq.size(1) - prompt_len))
            # The model sees the semantic token (pinned at position 0, keep_first=1) and the newest tokens.
            # A context that is already full would slide at the first step, so hand generate the slid one.
            window = seq if seq.size(1) < block else torch.cat([seq[:, :1], seq[:, -(block // 2):]], dim=1)
            uncond = window.clone()
            uncond[:, 0] = tokenizer.UNCOND                                                   # (B, t)
            with ctx:
                out = model.generate(window, n, temperature, top_k, top_p, logits_hook=hook, uncond_idx=uncond,
                                     guidance=guidance, keep_first=1, generator=generator)    # (B, t + n)
            seq = torch.cat([seq, out[:, window.size(1):]], dim=1)                            # (B, T + new)
            bar.update(n)
            if all(stop_index(row, prompt_len, seconds) is not None for row in seq.cpu().numpy()):
                break
    return [finish(row, prompt_len, seconds) for row in seq.cpu().numpy()]


# -----------------------------------------------------------------------------
# output

def piano_roll(score, path, title, prime_end=None):
    """A PNG of the notes: time (s) x pitch, a bar per note, coloured by instrument, and a dashed line at
    prime_end (seconds), where a prime's last note starts. Written atomically."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    ax = fig.subplots()
    programs = list(describe.program_counts(score.notes))  # most notes first: the legend names the top 12
    colors = colormaps["tab10" if len(programs) <= 10 else "tab20"]
    for i, program in enumerate(programs):
        notes = [n for n in score.notes if n.program == program]
        start = seconds_at([n.onset for n in notes], score.tempos)                      # (n,)
        end = seconds_at([n.onset + n.duration for n in notes], score.tempos)           # (n,)
        ax.barh([n.pitch for n in notes], end - start, left=start, height=0.8, color=colors(i % colors.N),
                label=describe.instrument_name(program) if i < 12 else "_")  # labels starting with _ stay out of the legend
    more = f" (+{len(programs) - 12} more instruments)" if len(programs) > 12 else ""
    ax.set(xlabel="time (s)", ylabel="MIDI pitch", title=title + more,
           xlim=(0, max(float(seconds_at(score.end_step, score.tempos)), 1.0)))
    if prime_end is not None:
        ax.axvline(prime_end, color="black", linestyle="--", linewidth=1, label="end of prime")
    if programs:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    write_atomic(path, lambda f: fig.savefig(f, format="png"))


def write_sample(tokens, path, title, prime_end=None):
    """tokens -> path (.mid) and its piano roll (.png); returns (score, png path)."""
    score, skipped = tokenizer.tokens_to_score(tokens)
    assert skipped == 0, f"{skipped} tokens of a grammar-constrained sample did not decode"
    midi = tokenizer.score_to_midi(score)
    write_atomic(path, lambda f: midi.save(file=f))
    png = os.path.splitext(path)[0] + ".png"
    piano_roll(score, png, title, prime_end)
    return score, png


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Sample MIDI from an AMT checkpoint.")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--token", help="SEMANTIC_TOKEN_k (or k, or SEMANTIC_UNCOND); default unconditional")
    what.add_argument("--prompt", help="free text, mapped to the nearest semantic token (cluster.py)")
    p.add_argument("--prime", help="a MIDI file whose beginning the samples continue")
    p.add_argument("--prime_seconds", type=float, default=10.0, help="how much of the prime to keep")
    p.add_argument("--out_dir", default=OUT_DIR, help="the training run's folder")
    p.add_argument("--ckpt", help="a checkpoint file, or 'best' for OUT_DIR/ckpt_best.pt; default the newest")
    p.add_argument("--data_dir", help="dataset folder with clusters.json; default the checkpoint's")
    p.add_argument("--sample_dir", help="where to write; default OUT_DIR/samples")
    p.add_argument("--num_samples", type=int, default=3)
    p.add_argument("--max_new_tokens", type=int, help="default 512, or 4096 with --seconds")
    p.add_argument("--seconds", type=float, help="stop each sample once the music (prime included) is this long")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0, help="0 = off")
    p.add_argument("--top_p", type=float, default=0.95, help="1 = off")
    p.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance scale; 1 = off")
    p.add_argument("--seed", type=int, help="default: a random one, printed and put in the file names")
    p.add_argument("--device", default="auto", help="auto = cuda, then mps, then cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--quantize", action="store_true",
                   help="CPU only: INT8 dynamic quantisation of the Linear layers (bench.py: faster, same val loss)")
    p.add_argument("--tempo", help="bpm ('96', '96 bpm') or a word (adagio, slow, fast...); overrides the prompt")
    p.add_argument("--meter", help="n/d ('3/4', '6/8') or a dance (waltz, jig, march...); overrides the prompt")
    p.add_argument("--key", help="'A minor', 'E flat major', 'F# minor', or just 'major'/'minor'; overrides the prompt")
    p.add_argument("--instruments", help="comma-separated GM names, families (strings, brass) or numbers, 'drums'")
    p.add_argument("--dry_run", action="store_true",
                   help="print what the prompt and flags ask for as one JSON line and exit; loads no checkpoint")
    args = p.parse_args(argv)
    if args.num_samples < 1 or (args.max_new_tokens or 1) < 1:
        raise UserError("--num_samples and --max_new_tokens must be at least 1")
    return args


def quantize(model):
    """INT8 dynamic quantisation of the Linear layers, for CPU sampling."""
    with warnings.catch_warnings():  # torch marks the quantized tensor API as deprecated; it still works
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def asked_attributes(args):
    """What the prompt and the flags ask for -> dict of tempo_bpm, meter, key, mode, instruments, plus notes
    (contradictions, and how they were settled) and unused (words no rule read). Flags override the text."""
    asked = describe.parse_prompt(args.prompt or "")
    overrides = dict(tempo_bpm=args.tempo and describe.parse_tempo(args.tempo),
                     meter=args.meter and describe.parse_meter(args.meter),
                     instruments=args.instruments and describe.parse_instruments(args.instruments))
    if args.key:
        overrides["key"], overrides["mode"] = describe.parse_key(args.key)
    for name, value in overrides.items():
        if value is not None and asked.get(name) not in (None, [], value):
            asked["notes"].append(f"--{name.split('_')[0]} overrides the prompt's {name.replace('_', ' ')}")
    return asked | {k: v for k, v in overrides.items() if v is not None}


def dry_run(args):
    """The JSON line of --dry_run: the nearest semantic token (clusters.json and the embedder only, no
    checkpoint) and the attributes asked for."""
    token, cosine = args.token, None
    if args.prompt:
        k, _, cosine = cluster.nearest_tokens(args.prompt, args.data_dir or "data/music21", top=1)[0]
        token, cosine = f"SEMANTIC_TOKEN_{k}", round(cosine, 4)
    elif token and str(token).isdigit():
        token = f"SEMANTIC_TOKEN_{token}"
    asked = asked_attributes(args)
    return dict(token=token, cosine=cosine, **{k: asked[k] for k in ("tempo_bpm", "meter", "key", "mode",
                                                                     "instruments")})


def print_understood(u):
    """One line a person reads before the music is made: what was taken from the words, and what was not."""
    names = ", ".join(describe.instrument_name(p) for p in u["instruments"]) or None
    asked = dict(tempo=u["tempo_bpm"] and f"{u['tempo_bpm']:g} bpm", meter=u["meter"], key=u["key"] or u["mode"],
                 instruments=names)
    print("understood: " + (", ".join(f"{k} {v}" for k, v in asked.items() if v) or "no tempo, meter, key or "
                            "instruments") + (f"; words used only for the semantic token: {' '.join(u['unused'])}"
                                              if u["unused"] else ""))
    for note in u["notes"]:
        print(f"  note: {note}")


def choose_token(args, ckpt):
    """--token, or the semantic token nearest --prompt (printing the three nearest) -> (token name, label)."""
    data_dir = args.data_dir or ckpt.get("config", {}).get("data_dir", "data/music21")
    labels, token = token_labels(ckpt, data_dir), args.token
    if args.prompt:
        nearest = cluster.nearest_tokens(args.prompt, data_dir, top=3)
        for k, label, similarity in nearest:
            print(f"  SEMANTIC_TOKEN_{k:<3} {label:<40} cosine {similarity:.3f}")
        token = f"SEMANTIC_TOKEN_{nearest[0][0]}"
        print(f"prompt {args.prompt!r} -> {token} ({nearest[0][1]}), cosine {nearest[0][2]:.3f}")
    semantic = semantic_token_id(token or "SEMANTIC_UNCOND", labels)
    k = semantic - tokenizer.semantic_token(0)
    label = "unconditional" if semantic == tokenizer.UNCOND else labels[k] if labels else "no label"
    return tokenizer.token_name(semantic), label


def write_samples(samples, args, *, token, label, seed, prime=None):
    """Each sample -> .mid and .png in the sample folder; -> rows (path, notes, seconds, instruments, new tokens)."""
    sample_dir = args.sample_dir or os.path.join(args.out_dir, "samples")
    os.makedirs(sample_dir, exist_ok=True)
    prime_name, prime_end, prompt_len = "", None, 2  # the semantic token and START
    if prime is not None:  # names say what a file continues; its piano roll marks where the prime's last note starts
        prime_name = os.path.splitext(os.path.basename(args.prime))[0]
        prime_score = tokenizer.tokens_to_score(prime)[0]
        prime_end, prompt_len = float(seconds_at(prime_score.notes[-1].onset, prime_score.tempos)), 1 + len(prime)
    rows = []
    for i, tokens in enumerate(samples):
        path = os.path.join(sample_dir, f"{token}{'_after_' + prime_name if prime_name else ''}_s{seed}_{i}.mid")
        title = f"{token}: {label} (seed {seed}, sample {i})" + (f", after {prime_name}" if prime_name else "")
        score, png = write_sample(tokens, path, title, prime_end)
        print(f"wrote {path} and {png}")
        programs = sorted({n.program for n in score.notes})
        instruments = f"{len(programs)}: " + ", ".join(map(describe.instrument_name, programs))
        n_new = len(tokens) - prompt_len - 1  # the tokens the model added, END aside
        rows.append((path, len(score.notes), float(seconds_at(score.end_step, score.tempos)), instruments, n_new))
    return rows


def print_table(rows, elapsed):
    width = max(len(r[0]) for r in rows)
    print(f"\n{'file':<{width}} {'notes':>6} {'seconds':>8}  {'instruments':<36} {'tokens':>7} {'tok/s':>7}")
    for path, notes, seconds, instruments, n in rows:
        print(f"{path:<{width}} {notes:>6} {seconds:>8.1f}  {instruments[:36]:<36} {n:>7} {n / elapsed:>7.1f}")
    total = sum(r[4] for r in rows)
    print(f"{len(rows)} samples, {total} tokens in {elapsed:.1f} s: {total / elapsed:.1f} tokens/s as one batch")


def main(argv=None):
    args = parse_args(argv)
    if args.dry_run:
        print(json.dumps(dry_run(args)))
        return []
    asked = asked_attributes(args)  # before the checkpoint loads: a malformed flag fails fast
    device, device_type, dtype = pick_device(args.device, args.dtype)
    ckpt_path = os.path.join(args.out_dir, "ckpt_best.pt") if args.ckpt == "best" else args.ckpt or args.out_dir
    model, ckpt = load_model(ckpt_path, device)
    if args.quantize:
        if device_type != "cpu":
            raise UserError("--quantize is for CPU sampling; leave it out on cuda or mps")
        model, dtype = quantize(model), "float32"  # int8 kernels take fp32 activations
    token, label = choose_token(args, ckpt)
    print_understood(asked)
    if any(asked[k] for k in ("tempo_bpm", "meter", "key", "mode", "instruments")):
        print("  note: this checkpoint has no attribute tokens, so only the semantic token steers the samples")
    prime = prime_tokens(args.prime, args.prime_seconds) if args.prime else None
    seed = random.randrange(10 ** 6) if args.seed is None else args.seed
    print(f"{ckpt['path']} (iter {ckpt.get('iter_num', '?')}) on {device} ({dtype}); {token} ({label}), seed {seed}"
          + (f", continuing {args.prime} ({len(prime)} tokens)" if args.prime else ""))
    t0 = time.perf_counter()
    samples = generate_tokens(
        model, token, n_samples=args.num_samples, max_new_tokens=args.max_new_tokens or (4096 if args.seconds else 512),
        temperature=args.temperature, top_k=args.top_k or None, top_p=args.top_p, guidance=args.guidance, seed=seed,
        prime_tokens=prime, device=device, seconds=args.seconds, dtype=dtype)
    elapsed = time.perf_counter() - t0
    rows = write_samples(samples, args, token=token, label=label, seed=seed, prime=prime)
    print_table(rows, elapsed)
    return [r[0] for r in rows]


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
