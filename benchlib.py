"""What the three benchmark scripts share. Each prints markdown tables for BENCHMARKS.md, one per
section:

    bench_data.py  what prepare.py and cluster.py do: the tokenizer's round trip on real MIDI,
                   prepare.py against miditok, the key estimate, the sentence embedder
    bench.py       what train.py and sample.py do: training and sampling against Hugging Face's
                   GPT-2, the generation engine, rendering to WAV
    bench_runs.py  training runs side by side: the speedrun, the tables of evaluated runs, padding

Each script lists its sections in a plain dict, name -> (the function that runs it, the dev
packages it imports that `make demo` does not install). This file reads its flags, answers a
section asked of the wrong script with the command that runs it, checks the dev packages before
any section runs, and runs the sections. Also note_events, the notes of the MIDI pieces the
benchmarks build with mido."""

import importlib.util
import os
import time

from files import UserError, check_range

DEV_INSTALL = "pip install -c constraints.txt -r requirements-dev.txt"

# Each script's sections, in the order it runs them (tests/test_bench.py checks them against the
# scripts' own lists).
SCRIPTS = {
    "bench_data.py": ("roundtrip", "prepare", "keys", "labels", "embed", "chords"),
    "bench.py": ("train", "generate", "sample", "render"),
    "bench_runs.py": ("conditioning", "control", "padding", "speedrun"),
}


def parse_args(parser, script, sections, flags, *, default=None):
    """A benchmark script's command line -> its args: --only (comma-separated section names;
    default: the sections named in default, else all of them) and flags (name -> (default, help)).
    A count that defaults to 1 or more must stay at least 1. A section that another script runs is
    a one-line answer naming the command that runs it, before unknown flags are refused."""
    default = default or list(sections)
    parser.add_argument(
        "--only",
        default=",".join(default),
        help=f"comma-separated: {', '.join(sections)} (default {','.join(default)})",
    )
    for name, (value, help) in flags.items():
        kind = str if value is None else type(value)
        parser.add_argument(f"--{name}", type=kind, default=value, help=help)
    args, unknown = parser.parse_known_args()
    chosen = args.only.split(",")
    if said := elsewhere(script, chosen):
        raise UserError(said)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    for name, (value, _) in flags.items():
        if isinstance(value, int) and value >= 1:
            check_range(f"--{name}", getattr(args, name), low=1)
    unknown = [n for n in chosen if n not in sections]
    if unknown:
        raise UserError(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(sections)}")
    return args


def elsewhere(script, chosen):
    """The chosen sections that another script runs -> one line naming the command for them, or
    None."""
    where = {s: [n for n in chosen if n in names] for s, names in SCRIPTS.items() if s != script}
    where = {s: names for s, names in where.items() if names}
    if not where:
        return None
    asked = [n for names in where.values() for n in names]
    commands = "; ".join(f"python {s} --only {','.join(names)}" for s, names in where.items())
    return (
        f"--only {','.join(asked)}: {script} does not run {'it' if len(asked) == 1 else 'them'}; "
        f"{commands} (the other flags as they are)"
    )


def missing_packages(sections, chosen):
    """The chosen sections -> one line naming what to install for those whose dev packages are
    missing, or None."""
    missing = {
        name: [m for m in sections[name][1] if importlib.util.find_spec(m) is None]
        for name in chosen
    }
    missing = {name: mods for name, mods in missing.items() if mods}
    if not missing:
        return None
    said = "; ".join(f"{name} needs {', '.join(mods)}" for name, mods in missing.items())
    return (
        f"{said} (test and bench packages, not in requirements.txt): {DEV_INSTALL}, or leave "
        f"{'it' if len(missing) == 1 else 'them'} out with --only"
    )


def run(script, sections, args):
    """Each section of args.only in turn, after checking that every one's dev packages are
    there."""
    chosen = args.only.split(",")
    if missing_packages(sections, chosen):
        raise UserError(missing_packages(sections, chosen))
    print(f"_{script} on {os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d')}_\n")
    for name in chosen:
        sections[name][0](args)


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
