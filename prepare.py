"""Tokenize a folder of MIDI files into the uint16 memmaps that train.py reads (dataset.py reads
them back).

    python prepare.py --data_dir data/music21

reads data_dir/midi/ (or data_dir itself if it has no midi/; dataset.midi_root), recursively, and
writes into data_dir:
    train.bin, val.bin   uint16 tokens of every file in that split, file after file (START ... END)
    index.jsonl          one line per file: midi_file, split, start, end (token offsets), notes,
                         and the attributes measured from its notes (dataset.INDEX_ATTRIBUTES)
    meta.json            vocabulary layout, tokenizer settings, where the MIDI is, split, counts
    skipped.tsv          every file that could not be used, with a one-line reason
The split is by file, on a hash of its path, so a file keeps its split as the folder grows.
Tokens stream to disk as they come, so memory does not grow with the corpus.
"""

import argparse
import hashlib
import json
import os
import time
from collections import Counter
from contextlib import nullcontext
from multiprocessing import Pool

from tqdm import tqdm

import attributes
import dataset
import describe
import midifile
import tokenizer
from dataset import INDEX_ATTRIBUTES
from files import (
    UserError,
    check_range,
    folder_lock,
    is_regular,
    open_new,
    remove_stale_temps,
    run_script,
    tsv_field,
    write_atomic,
)


def split_of(midi_file, val_fraction):
    """A stable split from a hash of the file's path: the same file is always in the same split. A
    name that is not UTF-8 hashes as its bytes on disk (os.walk keeps them as surrogates)."""
    h = int(hashlib.sha1(midi_file.encode("utf-8", "surrogateescape")).hexdigest()[:8], 16) / 2**32
    return "val" if h < val_fraction else "train"


def tokenize_file(job):
    """(midi_root, midi_file) -> (midi_file, sha1 of its bytes or None, tokens or None, index
    fields, reason). Runs in a worker; never raises for what a file holds: a FIFO or a device under
    a MIDI name, a file over a limit (midifile.read_file, tokenizer.MAX_HOURS) or one that runs out
    of memory is skipped with its reason, and the folder goes on."""
    midi_root, midi_file = job
    try:
        data = midifile.read_file(os.path.join(midi_root, midi_file))
        digest = hashlib.sha1(data).hexdigest()
        return (midi_file, digest, *tokenize_bytes(data))
    except tokenizer.MidiError as e:
        return midi_file, None, None, {}, str(e)
    except OSError as e:
        return midi_file, None, None, {}, f"can't read the file ({e.strerror or e})"
    except MemoryError:
        return midi_file, None, None, {}, "out of memory (too large to read)"


def tokenize_bytes(data):
    """A MIDI file's bytes -> (tokens or None, index fields, reason); MidiError for bad bytes."""
    score = tokenizer.read_midi(data)
    if not score.notes:
        return None, {}, "no notes"
    measured = describe.measure(score)
    fields = {"notes": len(score.notes)} | {name: measured[name] for name in INDEX_ATTRIBUTES}
    return tokenizer.score_to_tokens(score), fields, None


def meta_for(val_fraction, counts, midi_dir="midi"):
    """What a reader of the .bin files needs to know: vocabulary layout, settings, split, counts."""
    return {
        # where index.jsonl's midi_file paths start, relative to the dataset folder
        "midi_root": midi_dir,
        "vocab_size": tokenizer.VOCAB_SIZE,
        "blocks": tokenizer.LAYOUT,
        "pad_token": tokenizer.PAD,
        "start_token": tokenizer.START,
        "end_token": tokenizer.END,
        "uncond_token": tokenizer.UNCOND,
        "semantic_offset": tokenizer.OFFSET["SEMANTIC"],
        "prefix_slots": {name: [s.start, s.stop] for name, s in attributes.PREFIX_SLOTS.items()},
        "n_semantic": tokenizer.N_SEMANTIC,
        "window_start_after": tokenizer.WINDOW_START_AFTER,
        "steps_per_quarter": tokenizer.STEPS_PER_QUARTER,
        "tokenizer": {
            "max_time_on": tokenizer.MAX_TIME_ON,
            "max_duration": tokenizer.MAX_DURATION,
            "tempo_levels": tokenizer.TEMPO_LEVELS,
            "tempo_min_bpm": tokenizer.TEMPO_MIN_BPM,
            "tempo_levels_per_octave": tokenizer.TEMPO_LEVELS_PER_OCTAVE,
            "tempo_level_of_default": tokenizer.TEMPO_LEVEL_OF_DEFAULT,
            "velocity_bins": tokenizer.N_VELOCITY,
            "max_numerator": tokenizer.MAX_NUMERATOR,
            "denominators": tokenizer.DENOMINATORS,
        },
        "split": {
            "rule": "sha1(midi_file)[:8] / 2**32 < val_fraction -> val",
            "val_fraction": val_fraction,
        },
        "counts": counts,
    }


OUTPUTS = ("train.bin", "val.bin", "index.jsonl", "skipped.tsv")


def prepare(data_dir, val_fraction=0.05, workers=None, quiet=False):
    """Tokenize data_dir's MIDI into train.bin/val.bin, index.jsonl, meta.json, skipped.tsv. Returns
    the counts. The folder is locked to this process; the outputs stream to temporary names (this
    process's own) and replace the old ones only when every file is done, so a failure at any point
    leaves the previous set whole."""
    t0 = time.time()
    with folder_lock(data_dir):
        # left by a killed run; the lock says no other run is writing them now
        remove_stale_temps(os.path.join(data_dir, name) for name in (*OUTPUTS, "meta.json"))
        midi_root = dataset.midi_root(data_dir)
        # a cheap first walk, for the progress bar
        n_files = sum(1 for _ in dataset.iter_midi(midi_root))
        if not n_files:
            raise UserError(
                f"no {', '.join(dataset.MIDI_SUFFIXES)} files under {midi_root}; for the bundled "
                "corpus "
                f"run `python data/music21/export.py` first"
            )
        tmp = {name: os.path.join(data_dir, f"{name}.{os.getpid()}.tmp") for name in OUTPUTS}
        try:
            counts = tokenize_all(
                midi_root,
                tmp,
                n_files=n_files,
                val_fraction=val_fraction,
                workers=workers,
                quiet=quiet,
            )
            if counts["files"] == 0:
                raise UserError(
                    f"none of the {n_files} MIDI files under {midi_root} could be used; reasons: "
                    f"{counts['skipped_by_reason']}"
                )
            for name in OUTPUTS:
                os.replace(tmp[name], os.path.join(data_dir, name))
        except OSError as e:
            if e.filename:
                raise
            raise OSError(
                e.errno, e.strerror, data_dir
            ) from e  # a streamed write names no file: name the folder
        finally:
            for path in tmp.values():
                if is_regular(path, follow_links=False):
                    os.remove(path)
        counts["seconds"] = round(time.time() - t0, 2)
        meta = meta_for(
            val_fraction, counts, os.path.relpath(midi_root, data_dir).replace(os.sep, "/")
        )
        write_atomic(os.path.join(data_dir, "meta.json"), json.dumps(meta, indent=1))
    return counts


def tokenize_all(midi_root, tmp, *, n_files, val_fraction, workers, quiet):
    """Every MIDI file under midi_root -> the temporary outputs tmp {name: path}; -> the counts. A
    file with the same bytes as an earlier one (a copy, or one file reached by two names) is skipped
    as a duplicate, so no piece is trained on twice or sits in both splits."""
    tokens_in, files_in, reasons = {"train": 0, "val": 0}, Counter(), Counter()
    notes, first_of = 0, {}  # first_of: the first file of each content (sha1)
    workers = workers or os.cpu_count()
    with (
        open_new(tmp["train.bin"]) as train_bin,
        open_new(tmp["val.bin"]) as val_bin,
        open_new(tmp["index.jsonl"], "w", encoding="utf-8") as index,
        open_new(tmp["skipped.tsv"], "w", encoding="utf-8", errors="surrogateescape") as skipped,
        Pool(workers) if workers > 1 else nullcontext() as pool,
    ):
        out = {"train": train_bin, "val": val_bin}
        # imap keeps file order, so the output is the same for any number of workers. Chunks of
        # 32 files cut the round trips to the workers; one worker runs here (a pool only adds
        # pickling).
        jobs = ((midi_root, midi_file) for midi_file in dataset.iter_midi(midi_root))
        results = pool.imap(tokenize_file, jobs, chunksize=32) if pool else map(tokenize_file, jobs)
        # None: a terminal only
        bar = tqdm(
            results, total=n_files, desc="tokenizing", unit="file", disable=True if quiet else None
        )
        for midi_file, digest, tokens, fields, reason in bar:
            if tokens is not None and digest in first_of:
                tokens, reason = None, f"duplicate (the same bytes as {first_of[digest]})"
            if tokens is None:
                reasons[reason.split(" (")[0]] += 1
                # a name (or a reason) with a TAB or a newline keeps to its column and its line
                skipped.write(f"{tsv_field(midi_file)}\t{tsv_field(reason)}\n")
                continue
            first_of[digest] = midi_file
            split = split_of(midi_file, val_fraction)
            out[split].write(tokens.tobytes())
            start = tokens_in[split]
            tokens_in[split] += len(tokens)
            row = dict(midi_file=midi_file, split=split, start=start, end=tokens_in[split])
            index.write(json.dumps(row | fields) + "\n")
            files_in[split] += 1
            notes += fields["notes"]
    return {
        "files_found": n_files,
        "files": files_in["train"] + files_in["val"],
        "train_files": files_in["train"],
        "val_files": files_in["val"],
        "skipped": sum(reasons.values()),
        "skipped_by_reason": dict(reasons),
        "notes": notes,
        "train_tokens": tokens_in["train"],
        "val_tokens": tokens_in["val"],
    }


def print_summary(data_dir, c):
    rows = [
        ("files found", c["files_found"]),
        ("files used", c["files"]),
        ("  train / val", f"{c['train_files']} / {c['val_files']}"),
        ("skipped", c["skipped"]),
    ]
    rows += [
        (f"  {reason}", n)
        for reason, n in sorted(c["skipped_by_reason"].items(), key=lambda r: -r[1])
    ]
    rows += [
        ("notes", f"{c['notes']:,}"),
        ("train tokens", f"{c['train_tokens']:,}"),
        ("val tokens", f"{c['val_tokens']:,}"),
        ("tokens per note", f"{(c['train_tokens'] + c['val_tokens']) / max(c['notes'], 1):.2f}"),
        (
            "time",
            f"{c['seconds']:.1f} s ({c['files_found'] / max(c['seconds'], 1e-9):.0f} files/s, "
            f"{c['notes'] / max(c['seconds'], 1e-9):,.0f} notes/s)",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\nprepared {data_dir}")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    if c["skipped"]:
        print(f"  the skipped files and why: {os.path.join(data_dir, 'skipped.tsv')}")


# -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument(
        "--data_dir",
        default=dataset.DEFAULT_DATA_DIR,
        help="dataset folder (MIDI in DATA_DIR/midi/ or DATA_DIR)",
    )
    parser.add_argument(
        "--val_fraction",
        type=float,
        default=0.05,
        help="share of files in the val split, in (0, 1)",
    )
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    args = parser.parse_args(argv)
    check_range(
        "--val_fraction",
        args.val_fraction,
        low=0,
        high=1,
        low_open=True,
        high_open=True,
        note="both splits need files",
    )
    if args.workers is not None:
        check_range("--workers", args.workers, low=1)
    if os.path.isfile(args.data_dir):
        raise UserError(
            f"{args.data_dir} is a file; give the dataset folder (MIDI in DATA_DIR/midi/ or "
            "DATA_DIR)"
        )
    if not os.path.isdir(args.data_dir):
        raise UserError(
            f"no folder {args.data_dir}; for the bundled corpus run `python data/music21/export.py`"
        )
    print_summary(args.data_dir, prepare(args.data_dir, args.val_fraction, args.workers))


if __name__ == "__main__":
    run_script(main)
