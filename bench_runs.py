"""Training runs side by side, for BENCHMARKS.md: the speedrun trains variants of the demo, the
tables of runs that evaluate.py has scored compare them, and the padding share says what packing
saves.

    python bench_runs.py                                     # every section but speedrun
    python bench_runs.py --only control --runs 'out/cmp/*'   # the runs of a comparison
    python bench_runs.py --only speedrun                     # about an hour of training

Each section prints a markdown table; bench.py and bench_data.py print the others.

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
import time

import numpy as np

import benchlib
import dataset
import metrics
import tokenizer
from files import UserError, check_range, run_script
from render import markdown_table

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
    print(
        markdown_table(
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
    )


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
        print(markdown_table(["run", "changed", "val nats/note"] + measures, rows))


# -----------------------------------------------------------------------------
# training: the padding in a window, and the speedrun


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
    print(markdown_table(["config", "block_size", "packed", "padding share"], rows))


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
    print(
        markdown_table(
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
    )


# -----------------------------------------------------------------------------

# section -> (the function that runs it, the dev packages it imports: requirements-dev.txt)
SECTIONS = {
    "conditioning": (bench_conditioning, ()),
    "control": (bench_control, ()),
    "padding": (bench_padding, ()),
    "speedrun": (bench_speedrun, ()),
}
# flag -> (default, help)
FLAGS = {
    "data_dir": (dataset.DEFAULT_DATA_DIR, None),
    "runs": ("out/cmp/*", "run folders (a glob) the conditioning and control sections compare"),
    "speedrun_config": ("config/amt_cpu.py", "the config the speedrun varies"),
    "speedrun_variants": (None, f"comma-separated, default all: {', '.join(SPEEDRUN)}"),
    "speedrun_iters": (0, "steps per variant; 0 = RACE_BASE's 500"),
    "speedrun_dir": ("out/speedrun", "where the variants' runs go"),
}


def main():
    parser = argparse.ArgumentParser(description="AMT's training runs side by side")
    default = [name for name in SECTIONS if name != "speedrun"]  # the speedrun trains for an hour
    args = benchlib.parse_args(parser, "bench_runs.py", SECTIONS, FLAGS, default=default)
    check_range("--speedrun_iters", args.speedrun_iters, low=0, note="0 = RACE_BASE's 500")
    variants = args.speedrun_variants.split(",") if args.speedrun_variants else []
    unknown = [n for n in variants if n not in SPEEDRUN]
    if unknown:
        raise UserError(
            f"--speedrun_variants: unknown {', '.join(unknown)}; choose from {', '.join(SPEEDRUN)}"
        )
    benchlib.run("bench_runs.py", SECTIONS, args)


if __name__ == "__main__":
    run_script(main)
