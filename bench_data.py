"""Speed and fidelity of what prepare.py and cluster.py do, side by side with miditok and with the
corpus's own labels, in one run.

    python bench_data.py                           # every section
    python bench_data.py --only roundtrip,prepare  # some of them

Each section prints a markdown table for BENCHMARKS.md; bench.py and bench_runs.py print the
others. Ratios are taken within one run on one machine, because absolute numbers on a shared
machine are noisy.

    roundtrip  real multi-track MIDI (data/miditok_tests) through encode/decode
    prepare    prepare.py against miditok's REMI on the bundled corpus at 1 and all processes; peak
               RSS at 1x and 4x
    keys       describe.estimate_key against the keys the corpus's descriptions name
    labels     the index's key labels against the files' key signatures, by source; music21's
               ceiling on the val pieces
    embed      the sentence embedder's throughput (prompt.embed, as cluster.py uses it)
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing import Pool

import numpy as np

import benchlib
import chords
import dataset
import describe
import midifile
import tokenizer
from files import UserError, run_script
from render import markdown_table

# -----------------------------------------------------------------------------
# MIDI files built with mido


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
            tracks.append(benchlib.note_events(zip(onsets, lengths, pitches), channel))
    else:
        bpms = [8, 12, 30, 200, 600, 900, 1000]
        tempo_track = [tempo(i * 4 * tpb, b) for i, b in enumerate(bpms)]
        tempo_track += [
            tempo(len(bpms) * 4 * tpb + 10 * i, rng.uniform(20, 900))
            for i in range(4 * tpb // 10 * 16)
        ]
        onsets = np.arange(0, (len(bpms) + 16) * 4 * tpb, tpb // 4)
        tracks.append(benchlib.note_events([(o, tpb // 8, 60 + int(o) % 24) for o in onsets]))
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    mid.tracks += [midifile.track_from_events(events) for events in [tempo_track] + tracks]
    return mid


# -----------------------------------------------------------------------------
# round trip and prepare

ROUND_TRIP_HEADER = ["file", "notes", "kept", "seconds", "length error", "left out or changed"]


def round_trip_row(name, src):
    """One table row: notes in, kept, seconds, length error, what was left out or changed."""
    try:
        r = describe.round_trip(src)
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
    print(markdown_table(ROUND_TRIP_HEADER, rows))
    print(
        f"**All files: {total_kept}/{total_in} notes kept ({100 * total_kept / total_in:.3f}%), "
        f"worst length error {100 * worst_length:.2f}%.** Kept = same pitch and instrument, onset "
        f"and duration within one grid step (1/{tokenizer.STEPS_PER_QUARTER} beat).\n"
    )
    print("### Round trip on built files (bench_data.py's built_file)\n")
    print(
        markdown_table(
            ROUND_TRIP_HEADER,
            [
                round_trip_row(name, built_file(name))[0]
                for name in ("zero-length", "extreme tempos")
            ],
        )
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
    print(
        markdown_table(
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
# what the tokenizer and the embedder read

KEY_LABEL_RE = r"\bin ([A-G](?: flat| sharp)? (?:major|minor))\b"


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
    print(
        markdown_table(
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
                    ", ".join(
                        f"{k} {v}" for k, v in sorted(confusions.items(), key=lambda kv: -kv[1])
                    ),
                )
            ],
        )
    )


def collection_of(key):
    """A KEY_NAMES entry -> the pitch class of the major key with the same signature."""
    i = describe.KEY_NAMES.index(key)
    return (i % 12 + 3 * (i >= 12)) % 12


def bench_labels(args):
    """The index's key labels against each file's own key signature, by key_source, beside the
    Krumhansl-Schmuckler estimate alone (what labelled every file before); against the key the
    file's description names; and music21 on the first 20 s of the val pieces against the labels,
    the ceiling of the control report's key rows."""
    import re

    import metrics

    root, rows = dataset.midi_root(args.data_dir), dataset.read_index(args.data_dir)
    described = {
        r["midi_file"]: m.group(1)
        for r in map(json.loads, open(os.path.join(root, "descriptions.jsonl")))
        if (m := re.search(KEY_LABEL_RE, r.get("description", "")))
    }
    n, val = Counter(), []
    for r in rows:
        score = tokenizer.read_midi(os.path.join(root, r["midi_file"]))
        signed, estimate = describe.main_signature(score), describe.estimate_key(score.notes)
        for group in (r["key_source"], "all"):
            n[group] += 1
            if signed is not None and r["key"]:
                n[group, "signed"] += 1
                n[group, "label"] += collection_of(r["key"]) == signed
                n[group, "estimate"] += estimate is not None and collection_of(estimate) == signed
            if r["midi_file"] in described and r["key"]:
                n[group, "described"] += 1
                n[group, "agree"] += described[r["midi_file"]] == r["key"]
        if r["split"] == "val" and r["key"]:
            seconds = tokenizer.seconds_at([x.onset for x in score.notes], score.tempos)
            val.append((r["key"], [x for x, t in zip(score.notes, seconds) if t < 20]))
    share = lambda a, b: f"{100 * n[a] / max(n[b], 1):.1f}% of {n[b]:,}"
    print(f"### Key labels against the files' key signatures ({args.data_dir})\n")
    print(
        markdown_table(
            [
                "key_source",
                "files",
                "label shares the signature",
                "the estimate alone would",
                "label is the description's key",
            ],
            [
                (g, f"{n[g]:,}", share((g, "label"), (g, "signed")))
                + (share((g, "estimate"), (g, "signed")), share((g, "agree"), (g, "described")))
                for g in ("signature", "notes", "all")
            ],
        )
    )
    judged = [(key, metrics.music21_key(notes)) for key, notes in val]
    exact = np.mean([m == key for key, m in judged])
    mode = np.mean([m is not None and m.split()[-1] == key.split()[-1] for key, m in judged])
    print(
        f"\nmusic21 on the first 20 s of {len(judged)} val pieces names their label's key in "
        f"{100 * exact:.1f}% and its mode in {100 * mode:.1f}%: the ceiling of the control "
        "report's key (music21) and mode (music21) rows."
    )


def music21_bar_chords(path, bar_steps):
    """music21's chord of each bar of a MIDI file: its chordified verticalities' root (Chord.root)
    and triad class (Chord.quality), the one sounding longest in the bar; None without one."""
    import music21

    weights = [Counter() for _ in bar_steps]
    for c in music21.converter.parse(path).chordify().flatten().getElementsByClass("Chord"):
        if len({p.pitchClass for p in c.pitches}) < 3 or c.quality not in QUALITY_CLASS:
            continue
        step = float(c.offset) * tokenizer.STEPS_PER_QUARTER
        bar = max(int(np.searchsorted(bar_steps, step, "right")) - 1, 0)
        weights[bar][c.root().pitchClass, QUALITY_CLASS[c.quality]] += float(c.quarterLength)
    return [w.most_common(1)[0][0] if w else None for w in weights]


QUALITY_CLASS = dict(major="major", minor="minor", diminished="minor", augmented="major")


def bench_chords(args):
    """The index's chord of each bar (chords.py's template match) against music21's on the
    chorales: the share of bars, where both name one, with the same root and the same root and
    triad class (major or minor), and how fast each is."""
    root, rows = dataset.midi_root(args.data_dir), dataset.read_index(args.data_dir)
    chorales = [r for r in rows if r["midi_file"].startswith("bach/")][: args.chords_n]
    n, ours_s, theirs_s = Counter(), 0.0, 0.0
    for r in chorales:
        path = os.path.join(root, r["midi_file"])
        t = time.perf_counter()
        ours = [c and chords.triad(c) for c in chords.per_bar(tokenizer.read_midi(path))]
        ours_s, t = ours_s + time.perf_counter() - t, time.perf_counter()
        theirs = music21_bar_chords(path, r["bar_steps"])
        theirs_s += time.perf_counter() - t
        for a, b in zip(ours, theirs):
            n["bars"] += 1
            if a and b:
                n["both"] += 1
                n["root"] += a[0] == b[0]
                n["triad"] += a == b
    pct = lambda k: f"{100 * n[k] / max(n['both'], 1):.1f}%"
    print(f"### Chords per bar against music21 ({len(chorales)} chorales, {args.data_dir})\n")
    print(
        markdown_table(
            ["bars", "both name a chord", "same root", "same root and triad", "ours", "music21"],
            [
                (
                    f"{n['bars']:,}",
                    f"{n['both']:,}",
                    pct("root"),
                    pct("triad"),
                    f"{1000 * ours_s / max(len(chorales), 1):.1f} ms/file",
                    f"{1000 * theirs_s / max(len(chorales), 1):.0f} ms/file",
                )
            ],
        )
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
    print(
        markdown_table(
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
    )


# -----------------------------------------------------------------------------

# section -> (the function that runs it, the dev packages it imports: requirements-dev.txt)
SECTIONS = {
    "roundtrip": (bench_roundtrip, ()),
    "prepare": (bench_prepare, ("miditok",)),
    "keys": (bench_keys, ()),
    "labels": (bench_labels, ()),
    "embed": (bench_embed, ()),
    "chords": (bench_chords, ()),
}
# flag -> (default, help)
FLAGS = {
    "data_dir": (dataset.DEFAULT_DATA_DIR, None),
    "prepare_repeats": (2, "alternating timed runs per side in prepare"),
    "keys_n": (2000, "labelled pieces the keys section reads"),
    "embed_n": (1000, "descriptions embedded by the embed section"),
    "chords_n": (100, "chorales the chords section reads"),
}


def main():
    parser = argparse.ArgumentParser(description="AMT's data benchmarks; prints markdown tables")
    args = benchlib.parse_args(parser, "bench_data.py", SECTIONS, FLAGS)
    benchlib.run("bench_data.py", SECTIONS, args)


if __name__ == "__main__":
    run_script(main)
