"""The prepared data folder, read back: where a folder's MIDI is, its index and memmaps, and the one
window builder that turns a file's tokens into a model input led by its attribute prefix. prepare.py
writes the folder; train.py, evaluate.py and bench.py read it through this file.

A dataset is one folder (default data/music21):
    midi/ (or the folder itself)  the MIDI files, with descriptions.jsonl
    train.bin, val.bin   uint16 tokens of every file in that split, file after file (START ... END)
    index.jsonl          one line per file: midi_file, split, start, end (token offsets), notes,
                         and the attributes measured from its notes (INDEX_ATTRIBUTES)
    meta.json            vocabulary layout, tokenizer settings, where the MIDI is, split, counts
    semantic.json        cluster.py: the semantic id of each file; clusters.json: centroids, labels

The prefix is not stored in the .bin files: build_windows puts the semantic token, then the key,
meter, tempo and instruments measured from the file's notes (attributes.attribute_prefix) in front
of every window, each of which training may drop to "unspecified". So re-clustering never needs
re-tokenizing. The chord slots hold the chords of the window's own bars, from the bar it starts in
(window_prefixes): the index keeps each file's bar lines and the chord of each bar.
"""

import json
import os
import re
from collections import Counter

import numpy as np

import attributes
import augment
import chords
import describe
import tokenizer
from attributes import PREFIX_LEN, PREFIX_SLOTS
from files import UserError, read_json, read_jsonl, rebuild_command

DEFAULT_DATA_DIR = "data/music21"  # the bundled corpus (data/music21/export.py)
# What the index keeps of each file's measured attributes (describe.measure): the condition a window
# carries, its texture, which no slot holds, where its key label came from (the file's key
# signature or the notes alone: describe.label_key), and the steps its bars start at (its chords are
# per bar).
INDEX_ATTRIBUTES = (*attributes.INDEX_FIELDS, "texture", "key_source", "bar_steps")
CHORD_SLOTS = PREFIX_SLOTS["chords"]
# (VOCAB_SIZE,) the steps each id moves time on: TIME_ON_k k, every other id 0
TIME_STEPS = np.zeros(tokenizer.VOCAB_SIZE, dtype=np.int64)
TIME_STEPS[tokenizer.OFFSET["TIME_ON"] :][: tokenizer.MAX_TIME_ON] = np.arange(
    1, tokenizer.MAX_TIME_ON + 1
)
KEY_SOURCES = ("signature", "notes", None)


# -----------------------------------------------------------------------------
# where the MIDI is

MIDI_SUFFIXES = (".mid", ".midi", ".kar")  # .kar: karaoke MIDI, a standard MIDI file with lyrics


def midi_root(data_dir):
    """Where a dataset folder keeps its MIDI: DATA_DIR/midi/ if it exists, else DATA_DIR itself.
    Every script finds the MIDI through this one function."""
    sub = os.path.join(data_dir, "midi")
    return sub if os.path.isdir(sub) else data_dir


def iter_midi(root):
    """Relative paths (with / separators) of the MIDI files under root, recursively, in a fixed
    order (folders and names sorted as they are walked), one at a time so no list grows with the
    corpus. Symlinked folders are followed, but each real folder is walked once (by its device and
    inode), so a link back up the tree is no loop; a file reached by two names is yielded twice, and
    prepare.py drops the second copy of any content."""
    walked = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        st = os.stat(folder)
        if (st.st_dev, st.st_ino) in walked:
            dirs[:] = []  # a folder seen under another name: neither it nor anything below it again
            continue
        walked.add((st.st_dev, st.st_ino))
        dirs.sort()
        for name in sorted(names):
            if name.lower().endswith(MIDI_SUFFIXES):
                yield os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")


def check_outside_midi(folder, name):
    """Before MIDI is written to folder: a UserError if it is, or is inside, the MIDI folder of a
    dataset (the midi_root of a folder with meta.json, or a midi_root with descriptions.jsonl),
    links resolved: the next prepare.py would train on what is written there."""
    path = os.path.realpath(folder)
    while True:
        for data_dir in (path, os.path.dirname(path)):
            root = midi_root(data_dir)
            marked = os.path.isfile(os.path.join(data_dir, "meta.json")) or os.path.isfile(
                os.path.join(root, "descriptions.jsonl")
            )
            if marked and os.path.realpath(root) == path:
                raise UserError(
                    f"{name} {folder} is inside {root}, the MIDI of the dataset {data_dir}: the "
                    "next prepare.py would train on what is written there; choose a folder "
                    "outside it"
                )
        if os.path.dirname(path) == path:
            return
        path = os.path.dirname(path)


# -----------------------------------------------------------------------------
# reading a prepared folder


def block_mask(meta, names):
    """Boolean (vocab_size,) mask of the ids in the named vocabulary blocks of meta.json."""
    mask = np.zeros(meta["vocab_size"], dtype=bool)
    for name in names:
        offset, size = meta["blocks"][name]
        mask[offset : offset + size] = True
    return mask


def file_prefix(row, semantic):
    """An index.jsonl row and its semantic id (or None) -> its attribute prefix."""
    token = None if semantic is None else tokenizer.semantic_token(semantic)
    return attributes.attribute_prefix(token, **attributes.prefix_arguments(row))


def split_tokens(data_dir, split, files, meta):
    """A split's .bin as a uint16 memmap, checked against the index rows of its files: every file
    starts with START and ends with END where the index says, and no id is outside the vocabulary.
    """
    path, rebuild = os.path.join(data_dir, f"{split}.bin"), rebuild_command(data_dir)
    size = os.path.getsize(path)
    if size % 2:
        raise UserError(
            f"{path} is corrupt (an odd number of bytes: cut short?); rebuild it: {rebuild}"
        )
    tokens = np.memmap(path, dtype=np.uint16, mode="r") if size else np.zeros(0, dtype=np.uint16)
    start, end = np.array([f["start"] for f in files]), np.array([f["end"] for f in files])
    if not (
        (0 <= start).all()
        and (start < end).all()
        and end.max() <= len(tokens)
        and (tokens[start] == meta["start_token"]).all()
        and (tokens[end - 1] == meta["end_token"]).all()
    ):
        raise UserError(
            f"{path} does not match {os.path.join(data_dir, 'index.jsonl')} (files do not start "
            f"and end where the index says); rebuild both: {rebuild}"
        )
    if len(tokens) and int(tokens.max()) >= meta["vocab_size"]:
        raise UserError(
            f"{path} is corrupt (ids beyond the vocabulary of {meta['vocab_size']}); rebuild it: "
            f"{rebuild}"
        )
    return tokens, start, end


def load_split(data_dir, index, split, *, semantic, meta):
    """One split -> its tokens (memmap) and, per file, start, end, sampling weight (its length),
    attribute prefix (n_files, PREFIX_LEN) and semantic id (-1 for none)."""
    files = [f for f in index if f["split"] == split]
    if not files:
        raise UserError(
            f"{data_dir}: the {split} split has no files; make it with: "
            f"{rebuild_command(data_dir)} (with more MIDI files)"
        )
    tokens, start, end = split_tokens(data_dir, split, files, meta)
    sem = [semantic.get(f["midi_file"]) for f in files]
    return dict(
        tokens=tokens,
        start=start,
        end=end,
        weight=(end - start) / (end - start).sum(),
        semantic=np.array([-1 if k is None else k for k in sem]),
        prefix=np.array([file_prefix(f, k) for f, k in zip(files, sem)], dtype=np.int64),
        bar_steps=[np.asarray(f["bar_steps"], dtype=np.int64) for f in files],
        bar_chords=[
            np.array(attributes.chord_ids([c and chords.parse_symbol(c) for c in f["chords"]]))
            for f in files
        ],
    )


def window_prefixes(data, split, picks):
    """picks [(file, start)] -> their prefixes (n, PREFIX_LEN), a copy: the file's, with the chord
    slots holding the chords of the bars from the one the window starts in (CHORD_NONE past the
    file's last bar)."""
    d = data[split]
    out = d["prefix"][[f for f, _ in picks]].copy()
    for row, (f, start) in zip(out, picks):
        step = int(TIME_STEPS[d["tokens"][d["start"][f] : start]].sum())
        bar = max(int(np.searchsorted(d["bar_steps"][f], step, "right")) - 1, 0)
        ids = d["bar_chords"][f][bar : bar + chords.MAX_CHORDS]
        row[CHORD_SLOTS] = tokenizer.OFFSET["CHORD_NONE"]
        row[CHORD_SLOTS.start : CHORD_SLOTS.start + len(ids)] = ids
    return out


META_KEYS = (
    "vocab_size",
    "blocks",
    "n_semantic",
    "window_start_after",
    "pad_token",
    "start_token",
    "end_token",
    "uncond_token",
    "semantic_offset",
)


def read_meta(data_dir):
    """meta.json, checked: a file that does not parse, lacks what readers need, or comes from an
    older tokenizer is a UserError that says how to rebuild it."""
    path, rebuild = os.path.join(data_dir, "meta.json"), rebuild_command(data_dir)
    meta = read_json(path, rebuild=rebuild)
    missing = [k for k in META_KEYS if k not in meta] if isinstance(meta, dict) else ["every field"]
    if missing:
        raise UserError(f"{path} is corrupt (it lacks {', '.join(missing)}); rebuild it: {rebuild}")
    if meta["blocks"] != tokenizer.LAYOUT:
        raise UserError(
            f"{data_dir} was prepared by an older tokenizer.py (another vocabulary); re-run: "
            f"{rebuild}"
        )
    return meta


def row_problem(row):
    """What is wrong with an index.jsonl row, or None."""
    if not isinstance(row, dict):
        return "not an object"
    missing = [name for name in INDEX_ATTRIBUTES if name not in row]
    if missing == ["key_source"]:
        return "no key_source: prepared before key labels came from key signatures"
    if missing:
        return f"no {', '.join(missing)}"
    kinds = dict(
        midi_file=str, start=int, end=int, tempo_bpm=(int, float, type(None)), instruments=list
    )
    wrong = [k for k, kind in kinds.items() if not isinstance(row.get(k), kind)]
    if row.get("split") not in ("train", "val"):
        wrong.append("split")
    if row.get("key") is not None and row["key"] not in describe.KEY_NAMES:
        wrong.append("key")
    if row.get("key_source") not in KEY_SOURCES:
        wrong.append("key_source")
    if row.get("meter") and not re.fullmatch(r"\d+/\d+", str(row["meter"])):
        wrong.append("meter")
    bars = row.get("bar_steps")
    if not isinstance(bars, list) or not isinstance(row.get("chords"), list):
        wrong.append("chords")
    elif len(bars) != len(row["chords"]) or not all(
        c is None or (isinstance(c, str) and chords.parse_symbol(c)) for c in row["chords"]
    ):
        wrong.append("chords")
    programs = row.get("instruments")
    if isinstance(programs, list) and not all(type(p) is int and 0 <= p <= 128 for p in programs):
        wrong.append("instruments")
    return f"bad {', '.join(wrong)}" if wrong else None


def read_index(data_dir):
    """index.jsonl -> its rows, each checked, so a broken line is one message that names it (not a
    KeyError deep in a batch)."""
    path, rebuild = os.path.join(data_dir, "index.jsonl"), rebuild_command(data_dir)
    rows = read_jsonl(path, rebuild=rebuild)
    for number, row in enumerate(rows, 1):
        problem = row_problem(row)
        if problem:
            raise UserError(
                f"{path} is corrupt, entry {number} ({problem}: {json.dumps(row)[:80]}); rebuild "
                f"it: {rebuild}"
            )
    return rows


def read_semantic(data_dir, n_semantic):
    """semantic.json ({midi_file: semantic id}, {} before clustering) and clusters.json's labels,
    checked."""
    rebuild = rebuild_command(data_dir, "cluster.py")
    path = os.path.join(data_dir, "semantic.json")
    semantic = read_json(path, {}, rebuild=rebuild)
    if not isinstance(semantic, dict) or not all(type(k) is int for k in semantic.values()):
        raise UserError(
            f"{path} is corrupt (not a map of file names to ids); rebuild it: {rebuild}"
        )
    if any(not 0 <= k < n_semantic for k in semantic.values()):
        raise UserError(f"{path} has ids outside 0..{n_semantic - 1}; rebuild it: {rebuild}")
    clusters = read_json(os.path.join(data_dir, "clusters.json"), {}, rebuild=rebuild)
    labels = clusters.get("labels", []) if isinstance(clusters, dict) else None
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise UserError(
            f"{os.path.join(data_dir, 'clusters.json')} is corrupt (no list of labels); rebuild "
            f"it: {rebuild}"
        )
    return semantic, labels


def load_dataset(data_dir):
    """A prepared folder -> dict of meta, cluster labels, token masks, the programs heard in train
    and, per split, load_split's dict. Files without a semantic id (no semantic.json yet) are led by
    the unconditional token. A file that is missing, corrupt or out of step with the others is one
    UserError that says how to rebuild it."""
    for name in ("meta.json", "index.jsonl", "train.bin", "val.bin"):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise UserError(
                f"no dataset in {data_dir} ({name} is missing); "
                f"make it with: {rebuild_command(data_dir)}"
            )
    meta = read_meta(data_dir)
    index = read_index(data_dir)
    semantic, labels = read_semantic(data_dir, meta["n_semantic"])
    # (V,) block index of each id
    data = dict(
        meta=meta,
        labels=labels,
        has_semantic=bool(semantic),
        programs_seen=Counter(
            p for row in index if row["split"] == "train" for p in row["instruments"]
        ),
        # a window may start right after a complete event, on a token that does not continue a note
        after=block_mask(meta, meta["window_start_after"]),
        continues=block_mask(meta, ["DURATION"]),
        token_type=np.zeros(meta["vocab_size"], dtype=np.int64),
    )
    for i, (offset, size) in enumerate(meta["blocks"].values()):
        data["token_type"][offset : offset + size] = i
    for split in ("train", "val"):
        data[split] = load_split(data_dir, index, split, semantic=semantic, meta=meta)
    data["token_examples"] = token_examples(data)
    return data


def token_examples(data, per_token=256, seed=0):
    """{semantic id: prefixes (lists of ids) of up to per_token train files with that id}: what
    sample.py takes the attributes a prompt leaves unnamed from (prompt.follow_token)."""
    d, rng, out = data["train"], np.random.default_rng(seed), {}
    for k in np.unique(d["semantic"][d["semantic"] >= 0]):
        files = np.flatnonzero(d["semantic"] == k)
        files = np.sort(rng.choice(files, min(per_token, len(files)), replace=False))
        out[int(k)] = d["prefix"][files].tolist()
    return out


def next_boundary(data, tokens, i, *, end, limit):
    """The first event boundary at or after position i, at most `limit` tokens on; None if there is
    none."""
    # the token before i, then i...
    chunk = np.asarray(tokens[i - 1 : min(end, i + limit)], dtype=np.int64)
    # ok[j]: position i + j is a boundary
    ok = data["after"][chunk[:-1]] & ~data["continues"][chunk[1:]]
    hits = np.flatnonzero(ok)
    return i + int(hits[0]) if len(hits) else None


def build_windows(
    data, split, picks, prefixes, *, block_size, shifts=None, tempo_levels=None, voicings=None
):
    """The one window builder. picks [(file, start)] with prefixes (B, PREFIX_LEN) -> x, y int64 (B,
    block_size): row b is prefixes[b] + the file's tokens from start on, cut at block_size or the
    file's end; y is x shifted by one, -1 where nothing is predicted (the prefix's own tokens, and
    padding). A packed row is a list of (file, start) segments instead, with prefixes[b] (segments,
    PREFIX_LEN): each segment is led by its own prefix and follows the one before, until the row is
    full. shifts (B,): transpose the pitched notes and the KEY tokens by that many semitones
    (augment.transpose); tempo_levels (B,): move every tempo, the prefixes' too, by that many
    levels (augment.scale_tempo); voicings (B,): play the rows whose value is not nan on other
    instruments (augment.revoice)."""
    d, meta, P = data[split], data["meta"], PREFIX_LEN
    seq = np.full((len(picks), block_size + 1), meta["pad_token"], dtype=np.int64)  # (B, T+1)
    y_valid = np.zeros((len(picks), block_size), dtype=bool)  # (B, T)
    for b, (row, row_prefixes) in enumerate(zip(picks, prefixes)):
        at = 0  # where the next segment starts in the row
        for (f, start), prefix in zip(
            row if isinstance(row, list) else [row], np.atleast_2d(row_prefixes)
        ):
            # its tokens that fit
            n = max(min(int(d["end"][f]) - start, block_size + 1 - at - P), 0)
            seq[b, at : at + P] = prefix
            seq[b, at + P : at + P + n] = d["tokens"][start : start + n]
            y_valid[b, at + P - 1 : at + P - 1 + n] = True
            at += P + n
    if shifts is not None:
        augment.transpose(seq, shifts)
    if tempo_levels is not None:
        augment.scale_tempo(seq, tempo_levels)
    if voicings is not None:
        augment.revoice(seq, voicings)
    x, y = seq[:, :-1], seq[:, 1:].copy()  # (B, T) each
    y[~y_valid] = -1
    return np.ascontiguousarray(x), y


def drop_attributes(prefixes, dropout, rng):
    """Each slot of each prefix (B, PREFIX_LEN) set to unspecified with its probability: dropout
    maps a slot name (attributes.PREFIX_SLOTS) to a probability, and "all" to that of blanking the
    whole prefix (attributes.dropout_of). One draw per slot, per row, in slot order, then one for
    "all". In place."""
    for name, where in PREFIX_SLOTS.items():
        drop = rng.random(len(prefixes)) < dropout.get(name, 0.0)  # (B,)
        prefixes[drop, where] = attributes.UNCOND_PREFIX[where]
    prefixes[rng.random(len(prefixes)) < dropout.get("all", 0.0)] = attributes.UNCOND_PREFIX
    return prefixes


def window_span(block_size):
    """How many of a file's tokens a window of block_size holds, after its prefix (the last one only
    as a target)."""
    return block_size + 1 - PREFIX_LEN


def random_start(data, split, f, *, block_size, rng):
    """A random window start in file f: its START token, or an event boundary further in."""
    d, span = data[split], window_span(block_size)
    start, end = int(d["start"][f]), int(d["end"][f])
    i = int(rng.integers(start, max(start, end - span) + 1))
    # a file's first window starts at its START token, the others on an event boundary
    if i > start:
        i = next_boundary(data, d["tokens"], i, end=end, limit=span) or start
    return i


def packed_picks(data, split, rng, *, batch_size, block_size, dropout):
    """Rows packed with pieces: each row takes a window of a file (picked by length, from a random
    event boundary) and, where that file ends before the row does, more of them, each led by its own
    prefix with slots dropped (drop_attributes), until fewer than MIN_SEGMENT tokens are left ->
    (picks, prefixes) for build_windows."""
    d, P, picks, prefixes = data[split], PREFIX_LEN, [], []
    for _ in range(batch_size):
        row, at = [], 0
        while not row or block_size + 1 - at - P >= MIN_SEGMENT:  # one piece at least
            f = int(rng.choice(len(d["start"]), p=d["weight"]))
            start = random_start(data, split, f, block_size=block_size - at, rng=rng)
            row.append((f, start))
            at += P + min(int(d["end"][f]) - start, block_size + 1 - at - P)
        picks.append(row)
        prefixes.append(drop_attributes(window_prefixes(data, split, row), dropout or {}, rng))
    return picks, prefixes


MIN_SEGMENT = 16  # packing: a row's tail shorter than this (after a prefix) is left as padding


def get_batch(
    data,
    split,
    rng,
    *,
    batch_size,
    block_size,
    dropout=None,
    transpose=0,
    balance=False,
    tempo_jitter=0.0,
    pack=False,
    revoice=0.0,
):
    """Training windows: files picked in proportion to their length (balance: each semantic token as
    often, then by length within it), each from a random event boundary, led by the file's attribute
    prefix with slots dropped to unspecified (drop_attributes; dropout None keeps them all);
    transpose > 0 shifts each window by a random -transpose..transpose semitones; tempo_jitter > 0
    plays it up to that many octaves faster or slower (uniform on a log scale); pack: rows filled
    with more pieces where one ends (packed_picks); revoice: the share of windows played on other
    instruments (augment.revoice) -> x, y (B, T)."""
    d = data[split]
    if pack:
        picks, prefixes = packed_picks(
            data, split, rng, batch_size=batch_size, block_size=block_size, dropout=dropout
        )
    else:
        if balance:
            groups = np.unique(d["semantic"])
            members = {g: np.flatnonzero(d["semantic"] == g) for g in groups.tolist()}  # its files
            picked = rng.choice(groups, size=batch_size)  # (B,) semantic ids
            weights = {g: d["weight"][members[g]] / d["weight"][members[g]].sum() for g in members}
            files = np.array([rng.choice(members[g], p=weights[g]) for g in picked.tolist()])
        else:
            files = rng.choice(len(d["start"]), size=batch_size, p=d["weight"])  # (B,)
        picks = [(f, random_start(data, split, f, block_size=block_size, rng=rng)) for f in files]
        prefixes = drop_attributes(window_prefixes(data, split, picks), dropout or {}, rng)
    played = augmentation(
        rng, batch_size, transpose=transpose, tempo_jitter=tempo_jitter, revoice=revoice
    )
    return build_windows(data, split, picks, prefixes, block_size=block_size, **played)


def augmentation(rng, batch_size, *, transpose, tempo_jitter, revoice=0.0):
    """A row's transposition (semitones, -transpose..transpose), tempo move (levels: up to
    tempo_jitter octaves, uniform on a log scale) and voicing (nan: as written; else the draw that
    picks its instruments, for a share revoice of the rows), as build_windows takes them; None where
    off."""
    shifts = rng.integers(-transpose, transpose + 1, size=batch_size) if transpose else None
    levels = (
        np.round(
            rng.uniform(-tempo_jitter, tempo_jitter, size=batch_size)
            * tokenizer.TEMPO_LEVELS_PER_OCTAVE
        ).astype(np.int64)
        if tempo_jitter
        else None
    )
    voicings = (
        np.where(rng.random(batch_size) < revoice, rng.random(batch_size), np.nan)
        if revoice
        else None
    )
    return dict(shifts=shifts, tempo_levels=levels, voicings=voicings)


def covering_windows(data, split, block_size, max_windows=None):
    """Fixed windows (file, start) that cover a split file by file, each starting on an event
    boundary as in training; all of them, or at most max_windows, spread evenly over the split."""
    d, windows, span = data[split], [], window_span(block_size)
    for f, (start, end) in enumerate(zip(d["start"].tolist(), d["end"].tolist())):
        i = start
        while i is not None:
            windows.append((f, i))
            stop = min(end, i + span)
            # the tokens that finish an event cut at `stop` are left out, so the next window starts
            # on an event
            i = next_boundary(data, d["tokens"], stop, end=end, limit=span) if stop < end else None
    if max_windows is not None and len(windows) > max_windows:
        windows = [
            windows[i]
            for i in np.unique(np.linspace(0, len(windows) - 1, max_windows).round().astype(int))
        ]
    return windows
