"""
Tokenize a folder of MIDI files into the uint16 memmaps that train.py reads, and read them back.

    python prepare.py --data_dir data/music21

reads data_dir/midi/ (or data_dir itself if it has no midi/; tokenizer.midi_root), recursively, and
writes into data_dir:
    train.bin, val.bin   uint16 tokens of every file in that split, file after file (START ... END)
    index.jsonl          one line per file: midi_file, split, start, end (token offsets), notes, and the
                         attributes measured from its notes: key, meter, tempo_bpm, instruments, texture
    meta.json            vocabulary layout, tokenizer settings, where the MIDI is, split rule and counts
    skipped.tsv          every file that could not be used, with a one-line reason
The split is by file, on a hash of its path, so a file keeps its split as the folder grows.
Tokens stream to disk as they come, so memory does not grow with the corpus.

Reading back (train.py, evaluate.py, bench.py): `load_dataset` opens the folder, and `build_windows`
is the one place that turns a file's tokens into a model input, led by its attribute prefix: the
semantic token, then the key, meter, tempo and instruments measured from the file's notes
(tokenizer.attribute_prefix), each of which training may drop to "unspecified".
"""

import argparse
import hashlib
import json
import os
import sys
import time
from collections import Counter
from contextlib import nullcontext
from multiprocessing import Pool

import numpy as np
from tqdm import tqdm

import describe
import tokenizer
from tokenizer import UserError

# What the index keeps of each file's measured attributes (describe.measure): the condition a window can carry.
INDEX_ATTRIBUTES = ("key", "meter", "tempo_bpm", "instruments", "texture")


def split_of(midi_file, val_fraction):
    """A stable split from a hash of the file's path: the same file is always in the same split."""
    h = int(hashlib.sha1(midi_file.encode("utf-8")).hexdigest()[:8], 16) / 2 ** 32
    return "val" if h < val_fraction else "train"


def tokenize_file(job):
    """(midi_root, midi_file) -> (midi_file, tokens or None, index fields, reason). Runs in a worker; never raises."""
    midi_root, midi_file = job
    return (midi_file, *tokenize_path(os.path.join(midi_root, midi_file)))


def tokenize_path(path):
    try:
        score = tokenizer.read_midi(path)
    except tokenizer.MidiError as e:
        return None, {}, str(e)
    except OSError as e:
        return None, {}, f"can't read the file ({e.strerror or e})"
    if not score.notes:
        return None, {}, "no notes"
    measured = describe.measure(score)
    fields = {"notes": len(score.notes)} | {name: measured[name] for name in INDEX_ATTRIBUTES}
    return tokenizer.score_to_tokens(score), fields, None


def meta_for(val_fraction, counts, midi_dir="midi"):
    """What a reader of the .bin files needs to know: vocabulary layout, settings, split, counts."""
    return {
        "midi_root": midi_dir,  # where index.jsonl's midi_file paths start, relative to the dataset folder
        "vocab_size": tokenizer.VOCAB_SIZE,
        "blocks": tokenizer.LAYOUT,
        "pad_token": tokenizer.PAD, "start_token": tokenizer.START, "end_token": tokenizer.END,
        "uncond_token": tokenizer.UNCOND, "semantic_offset": tokenizer.OFFSET["SEMANTIC"],
        "prefix_slots": {name: [s.start, s.stop] for name, s in tokenizer.PREFIX_SLOTS.items()},
        "n_semantic": tokenizer.N_SEMANTIC,
        "window_start_after": tokenizer.WINDOW_START_AFTER,
        "steps_per_quarter": tokenizer.STEPS_PER_QUARTER,
        "tokenizer": {"max_time_on": tokenizer.MAX_TIME_ON, "max_duration": tokenizer.MAX_DURATION,
                      "tempo_levels": tokenizer.TEMPO_LEVELS, "tempo_min_bpm": tokenizer.TEMPO_MIN_BPM,
                      "tempo_levels_per_octave": tokenizer.TEMPO_LEVELS_PER_OCTAVE,
                      "tempo_level_of_default": tokenizer.TEMPO_LEVEL_OF_DEFAULT,
                      "velocity_bins": tokenizer.N_VELOCITY, "max_numerator": tokenizer.MAX_NUMERATOR,
                      "denominators": tokenizer.DENOMINATORS},
        "split": {"rule": "sha1(midi_file)[:8] / 2**32 < val_fraction -> val", "val_fraction": val_fraction},
        "counts": counts,
    }


def prepare(data_dir, val_fraction=0.05, workers=None, quiet=False):
    """Tokenize data_dir's MIDI into train.bin/val.bin, index.jsonl, meta.json, skipped.tsv. Returns the counts."""
    t0 = time.time()
    midi_root = tokenizer.midi_root(data_dir)
    n_files = sum(1 for _ in tokenizer.iter_midi(midi_root))  # a cheap first walk, for the progress bar
    if not n_files:
        raise UserError(f"no {', '.join(tokenizer.MIDI_SUFFIXES)} files under {midi_root}; for the bundled corpus "
                        f"run `python data/music21/export.py` first")
    out = {split: open(os.path.join(data_dir, f"{split}.bin.tmp"), "wb") for split in ("train", "val")}
    index = open(os.path.join(data_dir, "index.jsonl.tmp"), "w")
    skipped = open(os.path.join(data_dir, "skipped.tsv.tmp"), "w")
    tokens_in = {"train": 0, "val": 0}
    files_in, notes, reasons = Counter(), 0, Counter()
    workers = workers or os.cpu_count()
    with Pool(workers) if workers > 1 else nullcontext() as pool:
        # imap keeps file order, so the output is the same for any number of workers. Chunks of
        # 32 files cut the round trips to the workers; one worker runs here (a pool only adds pickling).
        jobs = ((midi_root, midi_file) for midi_file in tokenizer.iter_midi(midi_root))
        results = pool.imap(tokenize_file, jobs, chunksize=32) if pool else map(tokenize_file, jobs)
        for midi_file, tokens, fields, reason in tqdm(results, total=n_files, desc="tokenizing", unit="file",
                                                       disable=True if quiet else None):  # None: a terminal only
            if tokens is None:
                reasons[reason.split(" (")[0]] += 1
                skipped.write(f"{midi_file}\t{reason}\n")
                continue
            split = split_of(midi_file, val_fraction)
            out[split].write(tokens.tobytes())
            start = tokens_in[split]
            tokens_in[split] += len(tokens)
            index.write(json.dumps({"midi_file": midi_file, "split": split, "start": start,
                                    "end": tokens_in[split], **fields}) + "\n")
            files_in[split] += 1
            notes += fields["notes"]
    for f in (*out.values(), index, skipped):
        f.close()
    n_good = files_in["train"] + files_in["val"]
    if n_good == 0:
        for name in ("train.bin", "val.bin", "index.jsonl", "skipped.tsv"):
            os.remove(os.path.join(data_dir, name + ".tmp"))
        raise UserError(f"none of the {n_files} MIDI files under {midi_root} could be used; reasons: {dict(reasons)}")
    for name in ("train.bin", "val.bin", "index.jsonl", "skipped.tsv"):
        os.replace(os.path.join(data_dir, name + ".tmp"), os.path.join(data_dir, name))
    counts = {"files_found": n_files, "files": n_good, "train_files": files_in["train"],
              "val_files": files_in["val"], "skipped": sum(reasons.values()), "skipped_by_reason": dict(reasons),
              "notes": notes, "train_tokens": tokens_in["train"], "val_tokens": tokens_in["val"],
              "seconds": round(time.time() - t0, 2)}
    meta = meta_for(val_fraction, counts, os.path.relpath(midi_root, data_dir).replace(os.sep, "/"))
    tokenizer.write_atomic(os.path.join(data_dir, "meta.json"), json.dumps(meta, indent=1))
    return counts


def print_summary(data_dir, c):
    rows = [("files found", c["files_found"]), ("files used", c["files"]),
            ("  train / val", f"{c['train_files']} / {c['val_files']}"), ("skipped", c["skipped"])]
    rows += [(f"  {reason}", n) for reason, n in sorted(c["skipped_by_reason"].items(), key=lambda r: -r[1])]
    rows += [("notes", f"{c['notes']:,}"), ("train tokens", f"{c['train_tokens']:,}"),
             ("val tokens", f"{c['val_tokens']:,}"),
             ("tokens per note", f"{(c['train_tokens'] + c['val_tokens']) / max(c['notes'], 1):.2f}"),
             ("time", f"{c['seconds']:.1f} s ({c['files_found'] / max(c['seconds'], 1e-9):.0f} files/s, "
                      f"{c['notes'] / max(c['seconds'], 1e-9):,.0f} notes/s)")]
    width = max(len(r[0]) for r in rows)
    print(f"\nprepared {data_dir}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if c["skipped"]:
        print(f"  the skipped files and why: {os.path.join(data_dir, 'skipped.tsv')}")


# -----------------------------------------------------------------------------
# reading a prepared folder back

def block_mask(meta, names):
    """Boolean (vocab_size,) mask of the ids in the named vocabulary blocks of meta.json."""
    mask = np.zeros(meta["vocab_size"], dtype=bool)
    for name in names:
        offset, size = meta["blocks"][name]
        mask[offset:offset + size] = True
    return mask


def read_json(path, default=None):
    if default is not None and not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def file_prefix(row, semantic):
    """An index.jsonl row and its semantic id (or None) -> its attribute prefix (tokenizer.attribute_prefix)."""
    key = describe.KEY_NAMES.index(row["key"]) if row["key"] in describe.KEY_NAMES else None
    meter = tuple(int(v) for v in row["meter"].split("/")) if row["meter"] else None
    return tokenizer.attribute_prefix(None if semantic is None else tokenizer.semantic_token(semantic),
                                      key, meter, row["tempo_bpm"], row["instruments"])


def load_split(data_dir, index, split, semantic):
    """One split -> its tokens (memmap) and, per file, start, end, sampling weight (its length), attribute prefix
    (n_files, PREFIX_LEN) and semantic id (-1 for none)."""
    make = f"make it with: python prepare.py --data_dir {data_dir}"
    files = [f for f in index if f["split"] == split]
    if not files:
        raise UserError(f"{data_dir}: the {split} split has no files; {make} (with more MIDI files)")
    tokens = np.memmap(os.path.join(data_dir, f"{split}.bin"), dtype=np.uint16, mode="r")
    start, end = np.array([f["start"] for f in files]), np.array([f["end"] for f in files])
    if not ((start < end).all() and end.max() <= len(tokens)):
        raise UserError(f"{data_dir}/index.jsonl does not match {split}.bin; {make}")
    sem = [semantic.get(f["midi_file"]) for f in files]
    return dict(tokens=tokens, start=start, end=end, weight=(end - start) / (end - start).sum(),
                semantic=np.array([-1 if k is None else k for k in sem]),
                prefix=np.array([file_prefix(f, k) for f, k in zip(files, sem)], dtype=np.int64))


def load_dataset(data_dir):
    """A prepared folder -> dict of meta, cluster labels, token masks, the programs heard in train and, per split,
    load_split's dict. Files without a semantic id (no semantic.json yet) are led by the unconditional token."""
    for name in ("meta.json", "index.jsonl", "train.bin", "val.bin"):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise UserError(f"no dataset in {data_dir} ({name} is missing); "
                            f"make it with: python prepare.py --data_dir {data_dir}")
    meta = read_json(os.path.join(data_dir, "meta.json"))
    semantic = read_json(os.path.join(data_dir, "semantic.json"), {})
    with open(os.path.join(data_dir, "index.jsonl")) as f:
        index = [json.loads(line) for line in f if line.strip()]
    if meta["blocks"] != tokenizer.LAYOUT or any(set(INDEX_ATTRIBUTES) - set(row) for row in index[:1]):
        raise UserError(f"{data_dir} was prepared by an older tokenizer.py (no attribute prefix); "
                        f"re-run: python prepare.py --data_dir {data_dir}")
    if any(not 0 <= k < meta["n_semantic"] for k in semantic.values()):
        raise UserError(f"{data_dir}/semantic.json has ids outside 0..{meta['n_semantic'] - 1}; re-run cluster.py")
    data = dict(meta=meta, labels=read_json(os.path.join(data_dir, "clusters.json"), {}).get("labels", []),
                has_semantic=bool(semantic),
                programs_seen=Counter(p for row in index if row["split"] == "train" for p in row["instruments"]),
                # a window may start right after a complete event, on a token that does not continue a note
                after=block_mask(meta, meta["window_start_after"]), continues=block_mask(meta, ["DURATION"]),
                token_type=np.zeros(meta["vocab_size"], dtype=np.int64))  # (V,) block index of each id
    for i, (offset, size) in enumerate(meta["blocks"].values()):
        data["token_type"][offset:offset + size] = i
    for split in ("train", "val"):
        data[split] = load_split(data_dir, index, split, semantic)
    return data


def next_boundary(data, tokens, i, end, limit):
    """The first event boundary at or after position i, at most `limit` tokens on; None if there is none."""
    chunk = np.asarray(tokens[i - 1:min(end, i + limit)], dtype=np.int64)  # the token before i, then i...
    ok = data["after"][chunk[:-1]] & ~data["continues"][chunk[1:]]        # ok[j]: position i + j is a boundary
    hits = np.flatnonzero(ok)
    return i + int(hits[0]) if len(hits) else None


def build_windows(data, split, picks, prefixes, block_size, shifts=None, tempo_levels=None):
    """The one window builder. picks [(file, start)] with prefixes (B, PREFIX_LEN) -> x, y int64 (B, block_size):
    row b is prefixes[b] + the file's tokens from start on, cut at block_size or the file's end; y is x shifted
    by one, -1 where nothing is predicted (the prefix's own tokens, and padding). shifts (B,): transpose the
    pitched notes and the KEY token by that many semitones (tokenizer.transpose); tempo_levels (B,): move every
    tempo, the prefix's too, by that many levels (tokenizer.scale_tempo)."""
    d, meta, P = data[split], data["meta"], tokenizer.PREFIX_LEN
    seq = np.full((len(picks), block_size + 1), meta["pad_token"], dtype=np.int64)     # (B, T+1)
    y_valid = np.zeros((len(picks), block_size), dtype=bool)                           # (B, T)
    seq[:, :P] = prefixes
    for b, (f, start) in enumerate(picks):
        window = d["tokens"][start:min(int(d["end"][f]), start + window_span(block_size))]
        seq[b, P:P + len(window)] = window
        y_valid[b, P - 1:P - 1 + len(window)] = True
    if shifts is not None:
        tokenizer.transpose(seq, shifts, key_at=tokenizer.PREFIX_SLOTS["key"].start)
    if tempo_levels is not None:
        tokenizer.scale_tempo(seq, tempo_levels)
    x, y = seq[:, :-1], seq[:, 1:].copy()                                              # (B, T) each
    y[~y_valid] = -1
    return np.ascontiguousarray(x), y


def drop_attributes(prefixes, dropout, rng):
    """Each slot of each prefix (B, PREFIX_LEN) set to unspecified with its probability: dropout maps a slot
    name of tokenizer.PREFIX_SLOTS to a probability, and "all" to that of blanking the whole prefix. One draw
    per slot, per row, in slot order, then one for "all". In place."""
    for name, where in tokenizer.PREFIX_SLOTS.items():
        drop = rng.random(len(prefixes)) < dropout.get(name, 0.0)                       # (B,)
        prefixes[drop, where] = tokenizer.UNCOND_PREFIX[where]
    prefixes[rng.random(len(prefixes)) < dropout.get("all", 0.0)] = tokenizer.UNCOND_PREFIX
    return prefixes


def window_span(block_size):
    """How many of a file's tokens a window of block_size holds, after its prefix (the last one only as a target)."""
    return block_size + 1 - tokenizer.PREFIX_LEN


def random_start(data, split, f, block_size, rng):
    """A random window start in file f: its START token, or an event boundary further in."""
    d, span = data[split], window_span(block_size)
    start, end = int(d["start"][f]), int(d["end"][f])
    i = int(rng.integers(start, max(start, end - span) + 1))
    if i > start:  # a file's first window starts at its START token, the others on an event boundary
        i = next_boundary(data, d["tokens"], i, end, span) or start
    return i


def get_batch(data, split, batch_size, block_size, rng, dropout=None, transpose=0, balance=False, tempo_jitter=0.0):
    """Training windows: files picked in proportion to their length (balance: each semantic token as often,
    then by length within it), each from a random event boundary, led by the file's attribute prefix with
    slots dropped to unspecified (drop_attributes; dropout None keeps them all); transpose > 0 shifts each
    window by a random -transpose..transpose semitones; tempo_jitter > 0 plays it up to that many octaves faster
    or slower (uniform on a log scale) -> x, y (B, T)."""
    d = data[split]
    if balance:
        groups = np.unique(d["semantic"])
        members = {g: np.flatnonzero(d["semantic"] == g) for g in groups.tolist()}      # files of each group
        picked = rng.choice(groups, size=batch_size)                                    # (B,) semantic ids
        files = np.array([rng.choice(members[g], p=d["weight"][members[g]] / d["weight"][members[g]].sum())
                          for g in picked.tolist()])
    else:
        files = rng.choice(len(d["start"]), size=batch_size, p=d["weight"])           # (B,)
    picks = [(f, random_start(data, split, f, block_size, rng)) for f in files]
    prefixes = drop_attributes(d["prefix"][files].copy(), dropout or {}, rng)          # (B, PREFIX_LEN)
    shifts = rng.integers(-transpose, transpose + 1, size=batch_size) if transpose else None
    levels = np.round(rng.uniform(-tempo_jitter, tempo_jitter, size=batch_size) * tokenizer.TEMPO_LEVELS_PER_OCTAVE
                      ).astype(np.int64) if tempo_jitter else None
    return build_windows(data, split, picks, prefixes, block_size, shifts, levels)


def covering_windows(data, split, block_size, max_windows):
    """Fixed windows (file, start) that cover a split file by file, each starting on an event boundary as in
    training; at most max_windows of them, spread evenly over the split."""
    d, windows, span = data[split], [], window_span(block_size)
    for f, (start, end) in enumerate(zip(d["start"].tolist(), d["end"].tolist())):
        i = start
        while i is not None:
            windows.append((f, i))
            stop = min(end, i + span)
            # the tokens that finish an event cut at `stop` are left out, so the next window starts on an event
            i = next_boundary(data, d["tokens"], stop, end, span) if stop < end else None
    if len(windows) > max_windows:
        windows = [windows[i] for i in np.unique(np.linspace(0, len(windows) - 1, max_windows).round().astype(int))]
    return windows


# -----------------------------------------------------------------------------

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--data_dir", default="data/music21", help="dataset folder (MIDI in DATA_DIR/midi/ or DATA_DIR)")
    parser.add_argument("--val_fraction", type=float, default=0.05, help="share of files in the val split")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args()
    try:
        if args.workers is not None and args.workers < 1:
            raise UserError(f"--workers must be at least 1, got {args.workers}")
        if not os.path.isdir(args.data_dir):
            raise UserError(f"no folder {args.data_dir}; for the bundled corpus run `python data/music21/export.py`")
        print_summary(args.data_dir, prepare(args.data_dir, args.val_fraction, args.workers))
    except UserError as e:
        sys.exit(f"error: {e}")
