"""Speed and fidelity of AMT, side by side with the reference libraries, in one run.

    python bench.py                           # every section but speedrun
    python bench.py --only roundtrip,prepare  # some of them

Each section prints a markdown table for BENCHMARKS.md. Ratios are taken within one run on one
machine, because absolute numbers on a shared machine are noisy.

    roundtrip     real multi-track MIDI (data/miditok_tests) through encode/decode
    prepare       prepare.py against miditok's REMI on the bundled corpus at 1 and all processes;
                  peak RSS at 1x and 4x
    train         training tokens/s against HF GPT2LMHeadModel, and MFU against a bf16 matmul
    keys          describe.estimate_key against the keys the corpus's descriptions name
    embed         the sentence embedder's throughput (prompt.embed, as cluster.py uses it)
    generate      a 2,048-token sample through model.stream, the engine of every sample
    sample        sampling tokens/s against HF generate(use_cache=True), real-time factor, int8
    render        render.py's WAV rendering (sample.py --audio), as a real-time factor
    conditioning  evaluated training runs side by side (their eval/summary.json): loss gains,
                  control shares
    control       evaluated runs side by side on the user's path: the control measures with 95%
                  intervals
    padding       the share of a training window that is padding, per config, packed or not
    speedrun      variants of the demo's training side by side: val nats per note, tokens/s, MFU
"""

import argparse
import glob
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool

import numpy as np

import dataset
import describe
import metrics
import midifile
import tokenizer
from files import UserError, check_range, run_script
from render import markdown_table

SECTIONS = {}
# section -> the dev packages it imports (requirements-dev.txt), checked before any section runs
NEEDS = {}
DEV_INSTALL = "pip install -c constraints.txt -r requirements-dev.txt"


def section(*needs):
    """Register bench_NAME as the section NAME; needs: modules it imports that `make demo` does not
    install."""

    def register(fn):
        SECTIONS[fn.__name__.removeprefix("bench_")] = fn
        NEEDS[fn.__name__.removeprefix("bench_")] = needs
        return fn

    return register


def missing_packages(chosen):
    """The chosen sections -> one line naming what to install for those whose dev packages are
    missing, or None."""
    import importlib.util

    missing = {
        name: [m for m in NEEDS[name] if importlib.util.find_spec(m) is None] for name in chosen
    }
    missing = {name: mods for name, mods in missing.items() if mods}
    if not missing:
        return None
    said = "; ".join(f"{name} needs {', '.join(mods)}" for name, mods in missing.items())
    return (
        f"{said} (test and bench packages, not in requirements.txt): {DEV_INSTALL}, or leave "
        f"{'it' if len(missing) == 1 else 'them'} out with --only"
    )


def table(header, rows):
    print(markdown_table(header, rows))


# -----------------------------------------------------------------------------
# MIDI files built with mido


def note_events(notes, channel=0):
    """(onset, length, pitch) in ticks -> (tick, order, message) for midifile.track_from_events: at
    a tick the note-offs of earlier notes, then the note-ons, then the offs of zero-length notes."""
    import mido

    notes = list(notes)
    on = lambda p: mido.Message("note_on", channel=channel, note=int(p), velocity=80)
    return [(int(o), 1, on(p)) for o, _, p in notes] + [
        (int(o + n), 2 if n == 0 else 0, mido.Message("note_off", channel=channel, note=int(p)))
        for o, n, p in notes
    ]


def built_file(name, seed=0):
    """The cases real files showed, built with mido: "zero-length" (an ensemble where a third of
    the notes and every drum hit have note-on and note-off on one tick) and "extreme tempos"
    (8 to 1000 bpm, then a performance's tempo map changing every 10 ticks)."""
    import mido

    rng = np.random.default_rng(seed)
    tpb, tracks = 480, []
    tempo = lambda tick, bpm: (tick, 0, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))
    if name == "zero-length":
        tempo_track = [tempo(0, 96)]
        for channel in (0, 1, 2, 9):
            onsets = np.sort(rng.integers(0, 256 * tpb // 4, 400)) * 4
            lengths = np.where(rng.random(400) < 1 / 3, 0, rng.integers(1, 4 * tpb, 400))
            if channel == 9:
                lengths[:] = 0
            pitches = rng.integers(40, 90, 400)
            tracks.append(note_events(zip(onsets, lengths, pitches), channel))
    else:
        bpms = [8, 12, 30, 200, 600, 900, 1000]
        tempo_track = [tempo(i * 4 * tpb, b) for i, b in enumerate(bpms)]
        tempo_track += [
            tempo(len(bpms) * 4 * tpb + 10 * i, rng.uniform(20, 900))
            for i in range(4 * tpb // 10 * 16)
        ]
        onsets = np.arange(0, (len(bpms) + 16) * 4 * tpb, tpb // 4)
        tracks.append(note_events([(o, tpb // 8, 60 + int(o) % 24) for o in onsets]))
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    mid.tracks += [midifile.track_from_events(events) for events in [tempo_track] + tracks]
    return mid


def band_midi(path, seconds=60, bpm=120, seed=0):
    """A busy test piece, `seconds` long: piano chords, a bass line, a flute melody, a drum kit."""
    import mido

    rng, tpb, beats = np.random.default_rng(seed), 480, int(seconds * bpm / 60)
    mid = mido.MidiFile(ticks_per_beat=tpb)
    parts = [  # (channel, program, pitches at beat b, beats per note)
        (0, 0, lambda b: [48 + int(x) for x in rng.choice(12, 3, replace=False)], 1.0),  # chords
        (1, 33, lambda b: [36 + int(rng.integers(12))], 1.0),  # bass
        (2, 73, lambda b: [72 + int(rng.integers(12))], 0.5),  # flute
        (9, 0, lambda b: [36 if b % 2 == 0 else 38, 42], 0.5),  # drums
    ]
    for channel, program, pitches, step in parts:
        events = [(0, -1, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))]
        if channel != 9:
            events.append((0, 0, mido.Message("program_change", channel=channel, program=program)))
        notes = []
        for b in np.arange(0, beats, step):
            on, off = int(b * tpb), int((b + step * 0.9) * tpb)
            notes += [(on, off - on, pitch) for pitch in pitches(int(b))]
        mid.tracks.append(midifile.track_from_events(events + note_events(notes, channel)))
    mid.save(path)


# -----------------------------------------------------------------------------
# round trip and prepare

ROUND_TRIP_HEADER = ["file", "notes", "kept", "seconds", "length error", "left out or changed"]


def round_trip_row(name, src):
    """One table row: notes in, kept, seconds, length error, what was left out or changed."""
    try:
        r = tokenizer.round_trip(src)
    except tokenizer.MidiError as e:
        return (name, "-", "-", "-", "-", f"skipped: {e}"), None
    if r["notes_in"] == 0:
        return (name, 0, "-", "-", "-", "no notes"), None
    length_error = abs(r["seconds_out"] / r["seconds_in"] - 1)
    notes = "; ".join(f"{n} {why}" for why, n in (r["dropped"] + r["changed"]).items())
    return (
        name,
        r["notes_in"],
        f"{100 * r['notes_kept'] / r['notes_in']:.2f}%",
        f"{r['seconds_in']:.1f}",
        f"{100 * length_error:.2f}%",
        notes,
    ), (r["notes_in"], r["notes_kept"], length_error)


@section()
def bench_roundtrip(args):
    root = "data/miditok_tests/midi"
    if not os.path.isdir(root):
        subprocess.run([sys.executable, "data/miditok_tests/fetch.py"], check=True)
    rows, total_in, total_kept, worst_length = [], 0, 0, 0.0
    for midi_file in dataset.iter_midi(root):
        row, measured = round_trip_row(midi_file, os.path.join(root, midi_file))
        rows.append(row)
        if measured:
            total_in, total_kept = total_in + measured[0], total_kept + measured[1]
            worst_length = max(worst_length, measured[2])
    print(f"### Round trip on real MIDI ({root})\n")
    table(ROUND_TRIP_HEADER, rows)
    print(
        f"**All files: {total_kept}/{total_in} notes kept ({100 * total_kept / total_in:.3f}%), "
        f"worst length error {100 * worst_length:.2f}%.** Kept = same pitch and instrument, onset "
        f"and duration within one grid step (1/{tokenizer.STEPS_PER_QUARTER} beat).\n"
    )
    print("### Round trip on built files (bench.py's built_file)\n")
    table(
        ROUND_TRIP_HEADER,
        [round_trip_row(name, built_file(name))[0] for name in ("zero-length", "extreme tempos")],
    )


_miditok = None


def _miditok_init():
    global _miditok
    import miditok

    _miditok = miditok.REMI(
        miditok.TokenizerConfig(use_programs=True, use_tempos=True, use_time_signatures=True)
    )


def _miditok_one(path):
    import symusic

    try:
        score = symusic.Score(path)
        n_notes = sum(len(t.notes) for t in score.tracks)
        tokens = _miditok.encode(score)
        return n_notes, sum(len(s.ids) for s in tokens) if isinstance(tokens, list) else len(
            tokens.ids
        )
    except Exception:
        return 0, 0


def peak_rss_mib(cmd):
    """Peak resident memory of any process of cmd (prepare.py and its workers), in MiB."""
    probe = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, "
        "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, check=True
    )
    return int(out.stdout) / 1024


def time_prepare(corpus, tmp, n_proc):
    """Seconds for `prepare.py --workers n_proc` (as prepare() times itself, in meta.json: the
    tokenizing, not Python's start-up), its counts, and its output bytes."""
    out = os.path.join(tmp, f"amt{n_proc}")
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(os.path.join(out, "midi")):
        os.symlink(os.path.abspath(corpus), os.path.join(out, "midi"))
    subprocess.run(
        [sys.executable, "prepare.py", "--data_dir", out, "--workers", str(n_proc)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    counts = json.load(open(os.path.join(out, "meta.json")))["counts"]
    written = b"".join(
        open(os.path.join(out, name), "rb").read()
        for name in ("train.bin", "val.bin", "index.jsonl")
    )
    return counts["seconds"], counts, written


def time_miditok(paths, n_proc):
    """Seconds for miditok's REMI on every file with n_proc processes (one: in this process), notes,
    tokens."""
    # imported and built before the clock starts, for both; forked workers inherit the import
    _miditok_init()
    t0 = time.time()
    if n_proc == 1:
        results = list(map(_miditok_one, paths))
    else:
        with Pool(n_proc, initializer=_miditok_init) as pool:
            results = pool.map(_miditok_one, paths, chunksize=16)
    seconds = time.time() - t0
    notes, tokens = map(sum, zip(*results))
    return seconds, notes, tokens


def race_prepare(corpus, paths, procs, repeats):
    """prepare.py against miditok at each number of processes, alternating the two sides and
    keeping each one's best of `repeats` runs (other jobs on a shared machine slow whichever run
    they overlap); then prepare.py's peak RSS on the corpus and on it four times over (symlinked
    copies) -> (ours, theirs, whether every process count wrote the same bytes, rss1, rss4)."""
    ours, theirs, written = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeats):
            for n_proc in procs:
                seconds, counts, written[n_proc] = time_prepare(corpus, tmp, n_proc)
                ours[n_proc] = min(ours.get(n_proc, (seconds,))[0], seconds), counts
                seconds, notes, tokens = time_miditok(paths, n_proc)
                theirs[n_proc] = min(theirs.get(n_proc, (seconds,))[0], seconds), notes, tokens
        identical = all(written[n] == written[procs[0]] for n in procs)
        four = os.path.join(tmp, "four")
        os.makedirs(os.path.join(four, "midi"))
        for i in range(4):
            os.symlink(os.path.abspath(corpus), os.path.join(four, "midi", f"copy{i}"))
        rss1 = peak_rss_mib(
            [sys.executable, "prepare.py", "--data_dir", os.path.join(tmp, f"amt{procs[-1]}")]
        )
        rss4 = peak_rss_mib([sys.executable, "prepare.py", "--data_dir", four])
    return ours, theirs, identical, rss1, rss4


@section("miditok")
def bench_prepare(args):
    corpus = os.path.join(args.data_dir, "midi")
    if not os.path.isdir(corpus):
        raise UserError(f"no {corpus}; run `python data/music21/export.py` first")
    files = list(dataset.iter_midi(corpus))
    procs = sorted({1, os.cpu_count()})
    paths = [os.path.join(corpus, f) for f in files]
    ours, theirs, identical, rss1, rss4 = race_prepare(corpus, paths, procs, args.prepare_repeats)
    row = lambda name, seconds, notes, tokens, ratio: (
        name,
        f"{len(files) / seconds:,.0f}",
        f"{notes / seconds:,.0f}",
        f"{seconds:.1f}",
        f"{tokens:,}",
        ratio,
    )
    rows = []
    for n_proc in procs:
        s = "es" * (n_proc > 1)
        (seconds, counts), (their_seconds, notes, tokens) = ours[n_proc], theirs[n_proc]
        ours_tokens = counts["train_tokens"] + counts["val_tokens"]
        rows += [
            row(f"AMT prepare.py --workers {n_proc}", seconds, counts["notes"], ours_tokens, ""),
            row(
                f"miditok 3.1 REMI, programs+tempos+meters ({n_proc} process{s})",
                their_seconds,
                notes,
                tokens,
                f"**{their_seconds / seconds:.2f}x**",
            ),
        ]
    print(
        f"### prepare throughput on {corpus} ({len(files)} files), {os.cpu_count()} cores, "
        f"best of {args.prepare_repeats} alternating runs\n"
    )
    table(
        [
            "tokenizer",
            "files/s",
            "notes/s",
            "seconds",
            "tokens",
            "AMT / miditok at equal processes",
        ],
        rows,
    )
    print(
        f"- `.bin` and index files with {' and '.join(map(str, procs))} workers: "
        f"**{'byte-identical' if identical else 'DIFFERENT'}**"
    )
    print(
        f"- peak RSS of `prepare.py`: **{rss1:.0f} MiB** on the corpus, **{rss4:.0f} MiB** on it "
        f"4x ({100 * (rss4 / rss1 - 1):+.1f}%)\n"
    )


# -----------------------------------------------------------------------------
# the model: ours against Hugging Face's GPT-2 of the same shape, same weights, same dtype

# 19M parameters
BENCH_MODEL = dict(n_layer=6, n_head=8, n_embd=512, block_size=256, vocab_size=512)


def hf_twin(ours):
    """GPT2LMHeadModel with our GPT's shape and weights (transformers is bench/test only)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    c = ours.config
    config = GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    config._attn_implementation = "sdpa"  # the same fused attention kernel as ours
    hf = GPT2LMHeadModel(config)
    state = ours.state_dict()
    transposed = (
        "attn.c_attn.weight",
        "attn.c_proj.weight",
        "mlp.c_fc.weight",
        "mlp.c_proj.weight",
    )
    with torch.no_grad():
        for name, p in hf.state_dict().items():
            if name in state:
                p.copy_(state[name].t() if name.endswith(transposed) else state[name])
    return hf


def time_training(model, step, dtype, steps):
    """Median seconds of a training step with AdamW, after two that warm up allocators and
    kernels."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = step(model)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    return np.median(times[2:])


@section("transformers")
def bench_train(args):
    import torch

    from model import GPT, GPTConfig, measure_peak_flops

    torch.manual_seed(0)
    batch, steps = 8, args.train_steps
    ours = GPT(GPTConfig(**BENCH_MODEL))
    hf = hf_twin(ours)
    T = BENCH_MODEL["block_size"]
    x = torch.randint(0, BENCH_MODEL["vocab_size"], (batch, T + 1))
    flops_per_token = ours.flops_per_token(T)
    rows = []
    for dtype in (torch.bfloat16, torch.float32):
        peak = measure_peak_flops("cpu", str(dtype).removeprefix("torch."))
        for name, model, step in (
            ("AMT model.py", ours, lambda m: m(x[:, :-1], x[:, 1:])[1]),
            (
                "HF GPT2LMHeadModel (sdpa)",
                hf,
                lambda m: m(input_ids=x[:, :-1], labels=x[:, :-1]).loss,
            ),
        ):
            tokens_per_s = batch * T / time_training(model, step, dtype, steps)
            rows.append(
                (
                    name,
                    str(dtype).removeprefix("torch."),
                    f"{tokens_per_s:,.0f}",
                    f"{100 * flops_per_token * tokens_per_s / peak:.1f}%",
                    f"{peak / 1e9:.0f}",
                )
            )
    print(
        f"### Training throughput on CPU ({ours.num_params() / 1e6:.1f}M parameters, "
        f"batch {batch} x {T}, AdamW, median of {steps} steps)\n"
    )
    table(
        [
            "model",
            "dtype",
            "tokens/s",
            "MFU",
            "matmul GFLOP/s (2048², same dtype, same run, best of 1 s)",
        ],
        rows,
    )
    for i in (0, 2):
        ours, theirs = (float(rows[j][2].replace(",", "")) for j in (i, i + 1))
        print(f"- {rows[i][1]}: AMT at **{ours / theirs:.2f}x** the HF model's tokens/s")
    print()


# -----------------------------------------------------------------------------
# what the tokenizer and the embedder read

KEY_LABEL_RE = r"\bin ([A-G](?: flat| sharp)? (?:major|minor))\b"


@section()
def bench_keys(args):
    """describe.estimate_key (Krumhansl-Schmuckler on the notes) against the keys the corpus labels:
    ABC K: fields and the scores' declared keys, as export.py writes them into the descriptions."""
    import re

    midi_root = dataset.midi_root(args.data_dir)
    rows = [json.loads(line) for line in open(os.path.join(midi_root, "descriptions.jsonl"))]
    labelled = [
        (r["midi_file"], m.group(1))
        for r in rows
        if (m := re.search(KEY_LABEL_RE, r["description"]))
    ]
    # spread over the collections
    labelled = labelled[:: max(len(labelled) // args.keys_n, 1)][: args.keys_n]
    tally, confusions = dict(exact=0, mode=0, related=0, n=0), {}
    for midi_file, label in labelled:
        try:
            guess = describe.estimate_key(
                tokenizer.read_midi(os.path.join(midi_root, midi_file)).notes
            )
        except tokenizer.MidiError:
            continue
        tally["n"] += 1
        tally["exact"] += guess == label
        tally["mode"] += guess is not None and guess.split()[-1] == label.split()[-1]
        if guess == label:
            tally["related"] += 1
            continue
        kind = (related_keys(guess, label) or "other") if guess else "none"
        tally["related"] += kind not in ("other", "none")
        confusions[kind] = confusions.get(kind, 0) + 1
    n = max(tally["n"], 1)
    print(
        f"### Key estimation against the corpus's labels ({tally['n']} labelled pieces of "
        f"{args.data_dir})\n"
    )
    table(
        [
            "key and mode exact",
            "mode right",
            "exact or a closely related key",
            "wrong keys by kind",
        ],
        [
            (
                f"**{100 * tally['exact'] / n:.1f}%**",
                f"{100 * tally['mode'] / n:.1f}%",
                f"{100 * tally['related'] / n:.1f}%",
                ", ".join(f"{k} {v}" for k, v in sorted(confusions.items(), key=lambda kv: -kv[1])),
            )
        ],
    )


def related_keys(a, b):
    """'relative', 'parallel', 'dominant' or 'subdominant' when key a is that neighbour of key b,
    else None."""
    names = describe.KEY_NAMES
    ia, ib = names.index(a), names.index(b)
    (ta, ma), (tb, mb) = divmod(ia, 12)[::-1], divmod(ib, 12)[::-1]  # (tonic, minor?)
    if ma != mb and (ta - tb) % 12 == (9 if ma else 3):
        return "relative"
    if ma != mb and ta == tb:
        return "parallel"
    if ma == mb and (ta - tb) % 12 in (5, 7):
        return "dominant" if (ta - tb) % 12 == 7 else "subdominant"
    return None


@section()
def bench_embed(args):
    import prompt

    rows = [
        json.loads(line) for line in open(os.path.join(args.data_dir, "midi", "descriptions.jsonl"))
    ]
    texts = [r["description"] for r in rows[:: max(len(rows) // args.embed_n, 1)]][: args.embed_n]
    prompt.embed(texts[:64])  # load the model and warm up
    t0 = time.time()
    emb = prompt.embed(texts)
    seconds = time.time() - t0
    print(
        f"### Sentence embedding ({prompt.DEFAULT_EMBEDDER}, {emb.shape[1]} dimensions, batch 64)\n"
    )
    table(
        ["descriptions", "seconds", "descriptions/s", "mean words"],
        [
            (
                len(texts),
                f"{seconds:.1f}",
                f"**{len(texts) / seconds:.0f}**",
                f"{np.mean([len(t.split()) for t in texts]):.0f}",
            )
        ],
    )


# -----------------------------------------------------------------------------
# generation


def timed_generate(fn, reps=5, warmup=True):
    """Best of reps wall times of fn(), after one untimed call that warms up (unless warmup is
    False)."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def random_model(config, **overrides):
    """A GPT of a config file's shape (vocab_size from overrides or the config), random weights,
    in eval mode."""
    from model import GPT, GPTConfig

    cfg = runpy.run_path(config) | overrides
    shape = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")
    return GPT(GPTConfig(**{k: cfg[k] for k in shape})).eval()


def demo_model(args):
    """The demo run's checkpoint (args.out_dir), else random weights of config/amt_cpu.py's shape ->
    (model in eval mode, its checkpoint dict or None, what it is in words)."""
    import checkpoints

    try:
        model, ckpt = checkpoints.load_model(args.out_dir)
        return model, ckpt, f"checkpoint {ckpt['path']}"
    except UserError:
        model = random_model("config/amt_cpu.py", vocab_size=512)
        return model, None, "random weights of config/amt_cpu.py's shape (no checkpoint)"


def start_prompt(batch):
    """(batch, PREFIX_LEN + 1): the attribute prefix of SEMANTIC_TOKEN_0, then START."""
    import torch

    return torch.tensor(
        [tokenizer.attribute_prefix(tokenizer.semantic_token(0)) + [tokenizer.START]] * batch
    )


def without_end(hook):
    """A logits hook that also forbids END, so that every timed sample runs to its full length."""

    def no_end(tokens, logits):
        logits = hook(tokens, logits)
        logits[:, tokenizer.END] = float("-inf")
        return logits

    return no_end


def stream(model, prompt, n_new, *, logits_hook, seed):
    """n_new tokens through model.stream, as generation.generate_tokens drives it: one KV cache for
    the whole sample, rebuilt only when the context slides."""
    import torch

    steps = model.stream(
        prompt,
        logits_hook=logits_hook,
        keep_first=tokenizer.PREFIX_LEN,
        generator=torch.Generator().manual_seed(seed),
    )
    return torch.cat([prompt] + [next(steps) for _ in range(n_new)], dim=1)


@section()
def bench_generate(args):
    """One long sample through generation's engine, model.stream, for the demo model and
    config/amt.py's shape. BENCHMARKS.md's table of it beside the loop it replaced (model.generate
    restarted every 128 tokens) was made by bench.py at commit e7adc56, which still had that
    loop."""
    import torch

    import generation

    torch.manual_seed(0)
    demo, _, source = demo_model(args)
    big = random_model("config/amt.py")
    n_new, rows = args.generate_tokens, []
    for name, model, batches in (
        (f"demo ({source})", demo, (1, 8)),
        ("config/amt.py's shape, random weights", big, (1,)),
    ):
        hook = without_end(generation.grammar_hook(model.config.vocab_size, "cpu"))
        for batch in batches:
            prompt = torch.tensor([generation.prompt_row(tokenizer.semantic_token(0))] * batch)
            with torch.no_grad():
                seconds = timed_generate(
                    lambda: stream(model, prompt, n_new, logits_hook=hook, seed=0),
                    reps=args.generate_reps,
                    warmup=False,
                )
            tokens_per_s = f"{batch * n_new / seconds:,.0f}"
            rows.append((name, model.config.block_size, batch, tokens_per_s))
    print(
        f"### Generation: a {n_new:,}-token sample per row on CPU, fp32, with the grammar mask, "
        f"best of {args.generate_reps}\n"
    )
    table(["model", "block_size", "batch", "tokens/s"], rows)


def sampling_rows(model, hf, n_new):
    """Tokens/s of our sampling (with and without the grammar mask) and of HF's generate, at
    batch 1 and 8."""
    import torch

    import generation

    rows = []
    with torch.no_grad():
        for batch in (1, 8):
            prompt = start_prompt(batch)
            ours = timed_generate(lambda: model.generate(prompt, n_new, top_k=None))
            theirs = timed_generate(
                lambda: hf.generate(
                    prompt,
                    do_sample=True,
                    top_k=0,
                    max_new_tokens=n_new,
                    min_new_tokens=n_new,
                    use_cache=True,
                    pad_token_id=0,
                )
            )
            hook = generation.grammar_hook(model.config.vocab_size, "cpu")
            grammar = timed_generate(lambda: model.generate(prompt, n_new, logits_hook=hook))
            rows.append(
                (
                    batch,
                    f"{batch * n_new / ours:,.0f}",
                    f"{batch * n_new / grammar:,.0f}",
                    f"{batch * n_new / theirs:,.0f}",
                    f"**{theirs / ours:.2f}x**",
                )
            )
    return rows


def real_time_factor(model, source):
    """Seconds of music per second of compute, as sample.py makes it: 3 samples of 60 s."""
    import generation

    music, compute = 0.0, 0.0
    for k in range(3):
        t0 = time.perf_counter()
        pieces = generation.generate_tokens(
            model,
            [generation.prompt_row(tokenizer.semantic_token(k))],
            generation.Sampling(max_new_tokens=1024, top_p=0.95, seed=k, seconds=60.0),
        )
        compute += time.perf_counter() - t0
        score = tokenizer.tokens_to_score(pieces[0])[0]
        music += tokenizer.seconds_at(score.end_step, score.tempos)
    print(
        f"- real-time factor of {source} on {os.cpu_count()} cores: **{music / compute:.1f}x** "
        f"({music:.0f} s of music in {compute:.1f} s, 3 samples at batch 1 with the grammar mask)"
    )


def int8_line(model, data_dir, n_new):
    """INT8 dynamic quantisation of the Linear layers: speed against val loss."""
    import torch

    import generation

    quantized, prompt = generation.quantize(model), start_prompt(1)
    with torch.no_grad():
        fp32_s = timed_generate(lambda: model.generate(prompt, n_new))
        int8_s = timed_generate(lambda: quantized.generate(prompt, n_new))
        data = dataset.load_dataset(data_dir)
        windows = dataset.covering_windows(data, "val", model.config.block_size, 32)
        x, y = (
            torch.from_numpy(a)
            for a in dataset.build_windows(
                data,
                "val",
                windows,
                np.tile(tokenizer.UNCOND_PREFIX, (len(windows), 1)),
                block_size=model.config.block_size,
            )
        )
        loss_fp32 = model(x, y)[1].item()
        loss_int8 = quantized(x, y)[1].item()
    print(
        f"- INT8 dynamic quantisation (batch 1): {n_new / int8_s:,.0f} tokens/s against "
        f"{n_new / fp32_s:,.0f} in fp32 (**{fp32_s / int8_s:.2f}x**), val loss {loss_int8:.4f} "
        f"against {loss_fp32:.4f} (**{100 * (loss_int8 / loss_fp32 - 1):+.2f}%**) on 32 fixed val "
        "windows led by the unconditional prefix"
    )


@section("transformers")
def bench_sample(args):
    import torch

    torch.manual_seed(0)
    model, ckpt, source = demo_model(args)
    hf = hf_twin(model).eval()
    n_prompt = tokenizer.PREFIX_LEN + 1  # the attribute prefix and START
    # HF's positions end at block_size
    n_new = min(args.sample_tokens, model.config.block_size - n_prompt)
    rows = sampling_rows(model, hf, n_new)
    print(f"### Sampling on CPU, fp32, {n_new} new tokens, {source}\n")
    table(
        [
            "batch",
            "AMT tokens/s",
            "AMT + grammar mask tokens/s",
            "HF generate(use_cache=True) tokens/s",
            "AMT / HF",
        ],
        rows,
    )
    if ckpt is not None:
        real_time_factor(model, source)
        int8_line(model, args.data_dir, n_new)
    print()


@section()
def bench_render(args):
    import render

    with tempfile.TemporaryDirectory() as tmp:
        pieces = []
        for i in range(3):
            pieces.append(os.path.join(tmp, f"band_{i}.mid"))
            band_midi(pieces[-1], seed=i)
        render.render_wav(pieces[0])  # reads the SoundFont once, as a batch of samples does
        t0, audio = time.perf_counter(), 0.0
        for path in pieces:
            audio += render.render_wav(path)[1]
        seconds = time.perf_counter() - t0
    print(
        f"### Audio rendering (sample.py --audio: midirenderer, TimGM6mb.sf2, {render.SAMPLE_RATE} "
        "Hz stereo WAV)\n"
    )
    table(
        ["pieces", "audio seconds", "render seconds", "real-time factor"],
        [
            (
                f"{len(pieces)} x 60 s, 4 parts with drums",
                f"{audio:.0f}",
                f"{seconds:.2f}",
                f"**{audio / seconds:.0f}x**",
            )
        ],
    )


# -----------------------------------------------------------------------------
# evaluated runs side by side (evaluate.py's eval/summary.json in each run folder)


def evaluated_runs(pattern):
    """Run folders matching pattern that evaluate.py has scored -> [(folder, its summary.json, its
    config.json or {})]."""
    out = []
    for path in sorted(glob.glob(os.path.join(pattern, "eval", "summary.json"))):
        folder = os.path.dirname(os.path.dirname(path))
        config = os.path.join(folder, "config.json")
        config = json.load(open(config)) if os.path.exists(config) else {}
        out.append((folder, json.load(open(path)), config))
    return out


@section()
def bench_conditioning(args):
    """Training runs side by side (BENCHMARKS.md, "Which conditioning"): how much the condition
    saves in loss, and how often samples realise it on the user's path (the fixed prompt set)."""
    runs = evaluated_runs(args.runs)
    print(f"\n## Conditioning: {len(runs)} evaluated runs matching {args.runs}\n")
    measures = ["key", "mode", "meter", "tempo word", "instrument recall", "instrument precision"]
    rows = []
    for folder, s, config in runs:
        c = s.get("control", {})
        share = lambda name: (
            f"{100 * c[f'fixed/user/{name}']['mean']:.0f}" if f"fixed/user/{name}" in c else ""
        )
        adherence = (
            " / ".join(f"{100 * v:.0f}" for v in s["adherence"].values())
            + f" (ceiling {100 * s['ceiling']:.0f})"
            if "adherence" in s
            else ""
        )
        settings = [
            f"{k}={config[k]}"
            for k in ("transpose", "tempo_jitter", "balance", "cond_embedding")
            if config.get(k)
        ]
        settings += [
            f"dropout {config['key_dropout']:g} per slot, {config['prefix_dropout']:g} all",
            f"{s['iter']} steps",
        ]
        gains = [f"{s['gain'][k]:+.4f}" for k in ("all", "key", "meter", "semantic")]
        rows.append(
            [os.path.basename(folder), ", ".join(settings), f"{s['val_loss']:.4f}"]
            + [f"{s['val_nats_per_note']:.3f}", *gains, adherence]
            + [share(m) for m in measures]
        )
    table(
        [
            "run",
            "settings",
            "val loss",
            "nats/note",
            "gain all",
            "gain key",
            "gain meter",
            "gain semantic",
            "semantic adherence %",
            "key %",
            "mode %",
            "meter %",
            "tempo word %",
            "instr. recall %",
            "instr. precision %",
        ],
        rows,
    )


@section()
def bench_control(args):
    """Evaluated runs side by side on the user's path, from their eval/summary.json (evaluate.py
    --only control): the per-prompt measures (metrics.PER_PROMPT_MEASURES) with 95% intervals, one
    table per prompt set; each row says what its run changed (its training config against
    config/amt_cpu.py's and its lab settings of the user's path)."""
    runs = [run for run in evaluated_runs(args.runs) if "control" in run[1]]
    demo = {k: v for k, v in runpy.run_path("config/amt_cpu.py").items() if not k.startswith("_")}
    measures = metrics.PER_PROMPT_MEASURES
    cell = lambda v: (
        f"{100 * v['mean']:.0f} [{100 * v['ci'][0]:.0f}, {100 * v['ci'][1]:.0f}]" if v else ""
    )
    sets = sorted({key.split("/")[0] for _, s, _ in runs for key in s["control"]})
    for name in sets:
        rows = []
        for folder, s, config in runs:
            changed = [
                f"{k}={v}"
                for k, v in config.items()
                if k in demo and demo[k] != v and k != "out_dir"
            ]
            lab = [f"{k}={v}" for k, v in s["lab"].items()]
            rows.append(
                [
                    os.path.basename(folder),
                    ", ".join(changed + lab) or "the demo, sample.py's defaults",
                ]
                + [f"{s['val_nats_per_note']:.3f}"]
                + [cell(s["control"].get(f"{name}/user/{m}")) for m in measures]
            )
        print(
            f"### Control on the user's path, prompt set {name}: % of samples, 95% interval "
            f"({len(runs)} runs)\n"
        )
        table(["run", "changed", "val nats/note"] + measures, rows)


@section()
def bench_padding(args):
    """The share of each training window that is padding, at the demo's and the GPU config's block
    size, with and without packing (dataset.get_batch on --data_dir's train split, 50 batches of
    32)."""
    data, rows = dataset.load_dataset(args.data_dir), []
    for config in ("config/amt_cpu.py", "config/amt.py"):
        block = runpy.run_path(config)["block_size"]
        for pack in (False, True):
            rng, pad, total = np.random.default_rng(0), 0, 0
            for _ in range(50):
                x, _ = dataset.get_batch(
                    data, "train", rng, batch_size=32, block_size=block, pack=pack
                )
                pad, total = (
                    pad + int((np.asarray(x) == tokenizer.PAD).sum()),
                    total + np.asarray(x).size,
                )
            rows.append([config, block, "yes" if pack else "no", f"{100 * pad / total:.1f}%"])
    print(f"### Padding in the training windows ({args.data_dir})\n")
    table(["config", "block_size", "packed", "padding share"], rows)


# The speedrun's variants: train.py flags on top of --speedrun_config and RACE_BASE (one lever at a
# time, then combinations). RACE_BASE is the demo's recipe without the levers the race tried, so
# that every variant, the winners in config/amt_cpu.py included, starts from the same place.
RACE_BASE = [
    "--pos=learned",
    "--muon_lr=0",
    "--pack=false",
    "--batch_size=16",
    "--learning_rate=1e-3",
    "--min_lr=1e-4",
    "--max_iters=500",
    "--lr_decay_iters=500",
    "--eval_interval=100",
]
SPEEDRUN = {
    "baseline": [],
    "pack": ["--pack=true"],
    "rope": ["--pos=rope"],
    "relu2": ["--mlp=relu2"],
    "qk_norm": ["--qk_norm=true"],
    "untied_zero": ["--tie_head=false", "--zero_init=true"],
    "muon": ["--muon_lr=0.02"],
    "lr_2e-3": ["--learning_rate=2e-3", "--min_lr=2e-4"],
    "batch_32": ["--batch_size=32"],
    "wide_384": ["--n_embd=384", "--n_head=6"],
    "deep_6": ["--n_layer=6"],
}
# the second round: the winners of the first together, then one more lever at a time on top of them
WINNERS = ["--pos=rope", "--muon_lr=0.02", "--pack=true"]
SPEEDRUN |= {
    "rope_muon_pack": WINNERS,
    "+lr_2e-3": WINNERS + ["--learning_rate=2e-3", "--min_lr=2e-4"],
    "+muon_0.04": WINNERS[:1] + ["--muon_lr=0.04"] + WINNERS[2:],
    "+muon_0.01": WINNERS[:1] + ["--muon_lr=0.01"] + WINNERS[2:],
    "+qk_norm": WINNERS + ["--qk_norm=true"],
    "+relu2": WINNERS + ["--mlp=relu2"],
    "+batch_32": WINNERS + ["--batch_size=32"],
    "+wide_384": WINNERS + ["--n_embd=384", "--n_head=6"],
}


def speedrun_one(name, flags, args):
    """One variant trained in a fresh process -> (its final eval record, mean tokens/s and MFU of
    its log, wall seconds)."""
    out = os.path.join(args.speedrun_dir, name)
    if os.path.isdir(out):
        import shutil

        shutil.rmtree(out)  # a race always starts from scratch
    extra = (
        [f"--max_iters={args.speedrun_iters}", f"--lr_decay_iters={args.speedrun_iters}"]
        if args.speedrun_iters
        else []
    )
    cmd = [
        sys.executable,
        "train.py",
        args.speedrun_config,
        f"--out_dir={out}",
        "--tensorboard=false",
        f"--data_dir={args.data_dir}",
        *RACE_BASE,
        *extra,
        *flags,
    ]
    t0 = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    seconds = time.time() - t0
    log = [json.loads(line) for line in open(os.path.join(out, "log.jsonl"))]
    steps = [r for r in log if "tokens_per_s" in r]
    final = [r for r in log if "val_nats_per_note" in r][-1]
    return (
        final,
        float(np.mean([r["tokens_per_s"] for r in steps])),
        float(np.mean([r["mfu"] for r in steps])),
        seconds,
    )


@section()
def bench_speedrun(args):
    """Variants of the demo's training side by side, one lever at a time (SPEEDRUN), each trained
    from scratch in its own process with the same number of steps (--speedrun_iters, default
    RACE_BASE's): val nats per note (the number to race on: comparable across tokenizations),
    tokens/s and MFU while training, and wall time."""
    # checked by main
    names = args.speedrun_variants.split(",") if args.speedrun_variants else list(SPEEDRUN)
    rows = []
    for name in names:
        final, tokens_per_s, mfu, seconds = speedrun_one(name, SPEEDRUN[name], args)
        rows.append(
            [
                name,
                " ".join(SPEEDRUN[name]) or "(config as it is)",
                final["iter"],
                f"**{final['val_nats_per_note']:.3f}**",
                f"{final['val_loss']:.4f}",
                f"{tokens_per_s:,.0f}",
                f"{100 * mfu:.1f}%",
                f"{seconds / 60:.1f}",
            ]
        )
        print(
            f"speedrun {name}: {final['val_nats_per_note']:.3f} nats/note, "
            f"{tokens_per_s:,.0f} tok/s",
            file=sys.stderr,
        )
    print(f"### Speedrun on {args.speedrun_config} ({os.cpu_count()} cores), one lever at a time\n")
    table(
        [
            "variant",
            "flags",
            "steps",
            "val nats/note",
            "val loss (nats/token)",
            "tokens/s",
            "MFU",
            "minutes",
        ],
        rows,
    )


# -----------------------------------------------------------------------------

# flag -> (default, help); a count that defaults to 1 or more must stay at least 1
FLAGS = {
    "data_dir": (dataset.DEFAULT_DATA_DIR, None),
    "out_dir": ("out/amt_cpu", "checkpoint used by the sample section"),
    "prepare_repeats": (2, "alternating timed runs per side in prepare"),
    "train_steps": (6, "timed training steps per model and dtype"),
    "embed_n": (1000, "descriptions embedded by the embed section"),
    "sample_tokens": (256, "new tokens per timed generation"),
    "generate_tokens": (2048, "new tokens per sample in the generate section"),
    "generate_reps": (2, "timed runs per row in the generate section"),
    "keys_n": (2000, "labelled pieces the keys section reads"),
    "runs": ("out/cmp/*", "run folders (a glob) the conditioning section compares"),
    "speedrun_config": ("config/amt_cpu.py", "the config the speedrun varies"),
    "speedrun_variants": (None, f"comma-separated, default all: {', '.join(SPEEDRUN)}"),
    "speedrun_iters": (0, "steps per variant; 0 = RACE_BASE's 500"),
    "speedrun_dir": ("out/speedrun", "where the variants' runs go"),
}


def parse_args():
    parser = argparse.ArgumentParser(description="AMT benchmarks; prints markdown tables")
    parser.add_argument(
        "--only",
        default=",".join(n for n in SECTIONS if n != "speedrun"),
        help=f"comma-separated: {', '.join(SECTIONS)} (all but speedrun, an hour of training, by "
        "default)",
    )
    for name, (default, help) in FLAGS.items():
        kind = str if default is None else type(default)
        parser.add_argument(f"--{name}", type=kind, default=default, help=help)
    args = parser.parse_args()
    for name, (default, _) in FLAGS.items():
        if isinstance(default, int) and default >= 1:
            check_range(f"--{name}", getattr(args, name), low=1)
    check_range("--speedrun_iters", args.speedrun_iters, low=0, note="0 = RACE_BASE's 500")
    variants = args.speedrun_variants.split(",") if args.speedrun_variants else []
    for flag, names, known in (
        ("--only", args.only.split(","), SECTIONS),
        ("--speedrun_variants", variants, SPEEDRUN),
    ):
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def main():
    args = parse_args()
    chosen = args.only.split(",")
    if missing_packages(chosen):
        raise UserError(missing_packages(chosen))
    print(f"_bench.py on {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}_\n")
    for name in chosen:
        SECTIONS[name](args)


if __name__ == "__main__":
    run_script(main)
