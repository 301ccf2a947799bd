"""Evaluate an AMT checkpoint and its samples: writes OUT_DIR/eval/report.md, summary.json,
index.html and PNG plots, and prints a summary.

python evaluate.py --out_dir out/amt_cpu                   # 32 samples per token at guidance 1, 2
and 3 python evaluate.py --out_dir out/amt --ckpt best --num_samples 32 --max_new_tokens 1024

1. Likelihood: val loss, perplexity and next-token accuracy on fixed val windows, overall, per token
  type
and per semantic token, beside a unigram baseline (the token frequencies of train.bin).
2. Conditioning adherence: a random forest learns the semantic token of real train pieces from
  musical
features. Its accuracy on real val pieces is the ceiling; on samples generated for each token (at
  each
guidance scale) it is the adherence; always naming the largest cluster is chance.
3. Closeness to real music: per token, musical statistics of the samples against real val pieces.
4. Validity: samples that decode with no token skipped, and with notes in every bar.
5. Control: the key, mode, meter, tempo and instruments that prompts ask for, measured in the notes.

Each stage returns what it measured as a value (the dataclasses below); the report, the summary and
the plots read those values."""

import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
import torch
from tqdm import tqdm

import dataset
import describe
import generation
import prompt
import render
import tokenizer
from describe import DURATION_EDGES, METRICS, piece_stats
from files import UserError, check_output_folder, check_range, check_text, run_script, write_atomic
from generation import OUT_DIR, Sampling, check_device, generate_tokens, load_model, prompt_row
from model import autocast, estimate_loss, pick_device, summed_loss_per
from render import markdown_table as table


@dataclass
class Setup:
    """What is evaluated and how: the report's header."""

    ckpt: str
    iter: int
    data_dir: str
    device: str
    dtype: str
    command: str
    labels: list  # cluster label of each semantic id
    type_names: list  # meta.json's vocabulary blocks, in id order
    guidance: list  # guidance scales of sections 2 and 3
    num_samples: int  # per semantic token and guidance scale
    max_new_tokens: int


def label_of(setup, c):
    return setup.labels[c] if c < len(setup.labels) else ""


# -----------------------------------------------------------------------------
# 1. likelihood


def likelihood(model, data, *, max_windows=256, batch_size=16, ctx=nullcontext(), device="cpu"):
    """model.estimate_loss on fixed windows that cover val.bin, each led by its piece's full
    attribute prefix, beside a unigram baseline (the token frequencies of train.bin, add-one
    smoothed) -> its tables "overall", "type" (meta.json block of the target) and "first" (by the
    window's semantic token id), plus the number of windows. Each table also has loss_uncond (the
    whole prefix unspecified) and loss_no_<slot> (that slot alone unspecified: the semantic token,
    key, meter, tempo, instruments)."""
    d, V, T = data["val"], model.config.vocab_size, model.config.block_size
    counts = (
        np.bincount(np.asarray(data["train"]["tokens"]), minlength=V) + 1.0
    )  # (V,) add-one smoothed
    windows = dataset.covering_windows(data, "val", T, max_windows)
    chunks = [windows[b0 : b0 + batch_size] for b0 in range(0, len(windows), batch_size)]
    batches = (
        dataset.build_windows(data, "val", chunk, d["prefix"][[f for f, _ in chunk]], block_size=T)
        for chunk in chunks
    )
    batches = ([torch.from_numpy(a).to(device) for a in batch] for batch in batches)
    variants = {"uncond": tokenizer.blank_prefix(tokenizer.PREFIX_SLOTS)} | {
        f"no_{slot}": tokenizer.blank_prefix([slot]) for slot in tokenizer.PREFIX_SLOTS
    }
    tables = estimate_loss(
        model,
        tqdm(batches, total=len(chunks), desc="val likelihood", unit="batch", disable=None),
        ctx=ctx,
        token_type=torch.from_numpy(data["token_type"]),
        variants=variants,
        baseline_nll=torch.from_numpy(-np.log(counts / counts.sum())),
    )  # (V,)
    return dict(windows=len(windows), **tables)


# -----------------------------------------------------------------------------
# 2.-4. musical statistics of real and generated pieces (describe.piece_stats)


def real_scores(data, split, *, max_pieces, max_tokens, seed=0, semantic_only=True):
    """(file numbers, Scores) of up to max_pieces pieces of a split (those with a semantic id, or
    all), each cut to its first max_tokens tokens (the length of a sample) so that real and
    generated pieces compare."""
    d = data[split]
    files = np.flatnonzero(d["semantic"] >= 0) if semantic_only else np.arange(len(d["start"]))
    if len(files) > max_pieces:
        files = np.sort(np.random.default_rng(seed).choice(files, max_pieces, replace=False))
    return files, [
        tokenizer.tokens_to_score(
            d["tokens"][d["start"][f] : min(d["end"][f], d["start"][f] + max_tokens)]
        )[0]
        for f in tqdm(files, desc=f"reading {split} pieces", unit="piece", disable=None)
    ]


def real_pieces(data, split, *, max_pieces, max_tokens, seed=0):
    """(semantic ids, piece_stats of each) of up to max_pieces pieces of a split that have a
    semantic id."""
    files, scores = real_scores(
        data, split, max_pieces=max_pieces, max_tokens=max_tokens, seed=seed
    )
    return data[split]["semantic"][files], [piece_stats(score) for score in scores]


def feature_matrix(stats):
    return np.nan_to_num(
        np.stack([s["features"] for s in stats]), nan=-1.0
    )  # (N, F); -1: does not apply


def fit_classifier(stats, semantic_ids, seed=0):
    from sklearn.ensemble import RandomForestClassifier  # imported here: sklearn is slow to import

    forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
    return forest.fit(feature_matrix(stats), semantic_ids)


def finite(values):
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]  # without the nan of a metric that does not apply


def mean_std(values):
    v = finite(values)
    return (v.mean(), v.std()) if len(v) else (np.nan, np.nan)


def closeness(real, gen, scale):
    """Distance of generated from real pieces, per metric: |difference of the means| in units of
    `scale` (the std of the metric over all real val pieces); for durations the overlapping area of
    the mean histograms (1 = same)."""
    d = {
        k: abs(mean_std([s[k] for s in gen])[0] - mean_std([s[k] for s in real])[0]) / scale[k]
        for k in METRICS
    }
    d["durations"] = float(
        np.minimum(*(np.mean([s["durations"] for s in x], axis=0) for x in (real, gen))).sum()
    )
    return d


@dataclass
class Ceiling:
    """How well musical features tell the semantic tokens apart in real music (section 2's
    yardstick)."""

    classifier: object  # a fitted random forest: features -> semantic id
    ceiling: float  # its accuracy on real val pieces
    chance: float  # always naming the largest val cluster
    tokens: list  # the semantic ids the model was trained with
    real_train: tuple  # (semantic ids, piece_stats) of real train pieces
    real_val: tuple  # the same for real val pieces
    n_features: int


def fit_ceiling(data, *, data_dir, max_pieces, max_tokens, seed):
    """The classifier that names the semantic token of real train pieces, with its ceiling and
    chance."""
    train_ids, train_stats = real_pieces(
        data, "train", max_pieces=max_pieces, max_tokens=max_tokens, seed=seed
    )
    val_ids, val_stats = real_pieces(
        data, "val", max_pieces=max_pieces, max_tokens=max_tokens, seed=seed
    )
    if not len(train_ids) or not len(val_ids):
        raise UserError(
            f"{data_dir}/semantic.json gives no train or val piece a semantic id; re-run cluster.py"
        )
    classifier = fit_classifier(train_stats, train_ids, seed)
    return Ceiling(
        classifier=classifier,
        ceiling=float((classifier.predict(feature_matrix(val_stats)) == val_ids).mean()),
        chance=float(np.bincount(val_ids).max() / len(val_ids)),
        tokens=sorted(set(train_ids.tolist())),
        real_train=(train_ids, train_stats),
        real_val=(val_ids, val_stats),
        n_features=len(val_stats[0]["features"]),
    )


@dataclass
class Adherence:
    """Samples per semantic token and guidance scale, and how often the classifier names the token
    asked for."""

    share: dict  # guidance -> mean over tokens of the share named right
    by_token: dict  # (guidance, token) -> share named right
    chance: float  # on the samples: 1 / tokens (every token gets as many)
    stats: dict  # (guidance, token) -> [piece_stats]
    skipped: list  # tokens skipped in decoding, per sample
    examples: dict  # (guidance, token) -> the first EXAMPLES_PER_TOKEN token rows, for the page


def generate_all(model, ceiling, *, guidance, seed, n_samples, sampling):
    """-> Adherence: n_samples samples of every trained token at each guidance scale (sampling: a
    generation.Sampling, its guidance and seed set here), the same seed at every scale: paired
    samples."""
    stats, by_token, skipped, examples = {}, {}, [], {}
    with tqdm(
        total=len(guidance) * len(ceiling.tokens), desc="generating", unit="token", disable=None
    ) as bar:
        for g in guidance:
            for c in ceiling.tokens:
                rows = [prompt_row(tokenizer.semantic_token(c))] * n_samples
                pieces = generate_tokens(model, rows, replace(sampling, guidance=g, seed=seed + c))
                decoded = [
                    tokenizer.tokens_to_score(row) for row in pieces
                ]  # [(Score, tokens skipped)]
                stats[g, c] = [piece_stats(score) for score, _ in decoded]
                skipped += [n for _, n in decoded]
                examples[g, c] = pieces[:EXAMPLES_PER_TOKEN]
                by_token[g, c] = float(
                    (ceiling.classifier.predict(feature_matrix(stats[g, c])) == c).mean()
                )
                bar.update()
    share = {g: float(np.mean([by_token[g, c] for c in ceiling.tokens])) for g in guidance}
    return Adherence(
        share=share,
        by_token=by_token,
        chance=1 / len(ceiling.tokens),
        stats=stats,
        skipped=skipped,
        examples=examples,
    )


@dataclass
class Closeness:
    """Validity of the samples, and their musical statistics against real pieces of their token."""

    valid_decode: float  # share of all samples that decode with no token skipped
    valid_bars: float  # share of all samples with notes in every bar
    real_bars: float  # the same for real val pieces
    real_by_token: dict  # token -> [piece_stats] of real val pieces
    gen_by_token: dict  # token -> [piece_stats] of samples at the first guidance scale
    # token -> (closeness of samples, closeness of real train pieces) to the real val pieces
    distance: dict
    pooled: dict  # metric -> [(mean, std) of real val, samples, real train]


def compare(ceiling, adherence, guidance):
    """Validity and closeness of the samples at the first guidance scale to real pieces of the same
    token."""
    (train_ids, train_stats), (val_ids, val_stats) = ceiling.real_train, ceiling.real_val
    by_token = lambda ids, stats: {
        c: [s for s, i in zip(stats, ids) if i == c] for c in ceiling.tokens
    }  # noqa: E731
    real_by_token, train_by_token = by_token(val_ids, val_stats), by_token(train_ids, train_stats)
    gen_by_token = {c: adherence.stats[guidance[0], c] for c in ceiling.tokens}
    scale = {
        k: mean_std([s[k] for s in val_stats])[1] or 1.0 for k in METRICS
    }  # 1 for a metric constant in val
    distance = {
        c: (
            closeness(real_by_token[c], gen_by_token[c], scale),
            closeness(real_by_token[c], train_by_token[c], scale),
        )
        for c in ceiling.tokens
        if real_by_token[c]
    }
    first_gen = [s for c in ceiling.tokens for s in gen_by_token[c]]
    return Closeness(
        valid_decode=float(np.mean(np.array(adherence.skipped) == 0)),
        valid_bars=float(np.mean([s["all_bars"] for v in adherence.stats.values() for s in v])),
        real_bars=float(np.mean([s["all_bars"] for s in val_stats])),
        real_by_token=real_by_token,
        gen_by_token=gen_by_token,
        distance=distance,
        pooled={
            k: [mean_std([s[k] for s in x]) for x in (val_stats, first_gen, train_stats)]
            for k in METRICS
        },
    )


# -----------------------------------------------------------------------------
# 5. control: do the key, meter, tempo and instruments a prompt asks for show up in the notes?

CONTROL_PROMPTS = [  # a fixed set: every attribute alone, in pairs, and all four together
    "a tune in G major",
    "a melody in D minor",
    "a piece in E flat major",
    "a song in A minor",
    "something in F sharp minor",
    "a hymn in B flat major",
    "a sad song",
    "a happy tune",
    "a waltz",
    "a lively jig",
    "a march",
    "a slip jig",
    "a reel in 4/4",
    "a dance in 3/8",
    "an adagio",
    "a presto",
    "a slow air",
    "a fast tune",
    "a piece at 60 bpm",
    "a piece at 180 bpm",
    "a piano piece",
    "a chorale for choir",
    "a violin solo",
    "music for strings",
    "a flute melody",
    "a brass fanfare",
    "a piece for organ",
    "a duet for violin and cello",
    "a slow waltz in A minor",
    "a fast jig in D major",
    "a march in C major for brass",
    "an adagio for strings",
    "a sad chorale for choir",
    "a happy polka on the accordion",
    "a gentle lullaby in F major",
    "a minuet in G major for harpsichord",
    "a slow hymn in E minor for organ",
    "a lively reel in A major on the fiddle",
    "an allegro in 2/4 in B flat major for flute",
    "a slow chorale in C minor for voices",
    "a fast waltz in E major for piano",
    "a largo in 3/2 in F minor",
]
# the README's examples, with their flags (tests/test_evaluate.py checks they are there)
README_PROMPTS = [
    ("a slow waltz in A minor for strings", {}),
    ("a lively irish jig", {}),
    ("a jig", dict(tempo="100", key="D major", instruments="fiddle,drums")),
    ("a slow chorale in a minor key", {}),
]
DEMO_PROMPTS_FILE = "config/demo_prompts.txt"  # make demo samples these, one per line
USER_SECONDS = (
    20.0  # the user's path: sample.py --prompt P --seconds 20, every other flag at its default
)


def prompt_sets(names):
    """ "fixed,demo,readme,path.txt" -> {set name: [(prompt, flags)]}: the fixed control set, the
    demo's and the README's prompts, and any text file of prompts (one per line): prompts from
    outside the repo keep it honest."""

    def read(path):
        if not os.path.isfile(path):
            raise UserError(
                f"--prompts {path}: no such file; give fixed, demo, readme or text files of "
                "prompts, "
                f"one per line, separated by commas"
            )
        with open(path, encoding="utf-8") as f:
            return [(line.strip(), {}) for line in f if line.strip() and not line.startswith("#")]

    builtin = {
        "fixed": lambda: [(text, {}) for text in CONTROL_PROMPTS],
        "demo": lambda: read(DEMO_PROMPTS_FILE),
        "readme": lambda: README_PROMPTS,
    }
    return {
        os.path.basename(name): builtin[name]() if name in builtin else read(name)
        for name in names.split(",")
        if name
    }


def wilson(hits, n):
    """95% Wilson interval of a share hits/n (scipy's binomtest) -> (low, high); (nan, nan) for n =
    0."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import (
        binomtest,
    )  # scipy comes with scikit-learn; imported here: it is slow to import

    ci = binomtest(int(hits), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


PATHS = ("user", "model", "none-user", "none-model")
CONTROL_MEASURES = [
    "key",
    "key (music21)",
    "mode",
    "mode (music21)",
    "meter",
    "tempo word",
    "instruments exact",
    "instrument recall",
    "instrument precision",
    "polyphony outlier",
    "polyphony outlier (all real)",
]
# issue 18's targets on the user's path, for the demo model and the long CPU preset; ratio: x
# unconditioned
TARGETS = {
    "key": (0.6, 0.8),
    "key (music21)": (0.6, 0.8),
    "mode": (0.85, 0.9),
    "instruments exact": (0.95, 0.95),
}
CEILINGS = {
    "polyphony outlier": (0.10, 0.05),
    "polyphony outlier (all real)": (0.10, 0.05),
}  # at most


@dataclass
class Control:
    """Section 5: what the control samples realised of what their prompts asked, on each path."""

    rows: (
        list  # per sample: set, prompt (index), path, hits {measure: hit or share}, stats (METRICS)
    )
    summary: dict  # (set, path, measure) -> n, mean, ci
    sets: dict  # set name -> [(prompt, flags)]
    settings: dict  # per path: how its samples were made, in words
    n_per_prompt: int
    classifiers: dict  # meter and tempo word: ceiling, prompt_ceiling, chance, n, labels, recall
    seen: list  # GM programs some training file has
    # voices per instrument, 95th percentile: of the real val pieces in parts; of them all
    polyphony_p95: tuple
    lab: dict  # the lab settings of the user's path (none: sample.py's defaults)
    closeness: (
        dict  # set -> path -> metric -> (d of the samples, d of real train pieces: the floor)
    )


def control_jobs(ckpt, sets, *, data_dir, seed, user):
    """One job per (set, prompt): what it asks, the user's Request (token, prefix, seed:
    prompt.request exactly as sample.py --prompt makes it, unless the lab settings `user` say
    otherwise) and the model-alone prefix (semantic token unspecified)."""
    jobs = []
    for name, prompts in sets.items():
        for i, (text, flags) in enumerate(prompts):
            asked = prompt.asked_attributes(text, flags)
            req = prompt.request(
                ckpt,
                asked,
                text=text,
                seed=seed + i,
                data_dir=data_dir,
                semantic_from=user.get("semantic_from"),
                min_cosine=user.get("min_cosine"),
            )
            key = None if req.prefix["key"] is None else describe.KEY_NAMES[req.prefix["key"]]
            jobs.append(dict(set=name, prompt=i, asked=asked, request=req, key=key))
    return jobs


BATCH_ROWS = (
    32  # control samples generated at once: a CPU's matmuls want a batch (guidance doubles it)
)
POOL = 64  # unconditioned samples per length, shared by the prompts as their baseline


def batched(model, rows, sampling, programs=None):
    """generate_tokens over prompt rows of any lengths (grouped by length, BATCH_ROWS at a time;
    each chunk seeded from sampling.seed and its place) -> the samples in the order of rows."""
    out, by_length = [None] * len(rows), {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    for length, index in sorted(by_length.items()):
        for at in range(0, len(index), BATCH_ROWS):
            chunk = index[at : at + BATCH_ROWS]
            got = generate_tokens(
                model,
                [rows[i] for i in chunk],
                replace(sampling, seed=sampling.seed + 1000 * length + at),
                programs=None if programs is None else [programs[i] for i in chunk],
            )
            for i, tokens in zip(chunk, got):
                out[i] = tokens
    return out


def path_samples(model, jobs, path, *, n, sampling, user):
    """n samples of every job on one path -> [[token rows] per job]. user: exactly sample.py
    --prompt's defaults with --seconds 20 (the nearest semantic token, the opening meter and tempo,
    notes only on the asked instruments), unless the lab settings `user` change one; model: the
    attribute prefix alone (no semantic token, nothing forced, any instrument), as many tokens as
    section 2; none-user, none-model: unconditioned at each path's length, a pool of POOL samples
    that every job takes n of in turn."""
    at_length = replace(
        generation.SAMPLE_DEFAULTS,
        seconds=USER_SECONDS,
        seed=sampling.seed,
        dtype=sampling.dtype,
        max_new_tokens=generation.SECONDS_MAX_NEW_TOKENS,
    )
    if path.startswith("none"):
        pool = batched(
            model,
            [prompt_row(None, {}, header=False)] * POOL,
            replace(at_length if path == "none-user" else sampling, guidance=1.0),
        )
        return [[pool[(j * n + k) % POOL] for k in range(n)] for j in range(len(jobs))]
    if path == "user":
        rows = [
            row for job in jobs for row in job["request"].rows(n, header=user.get("header", True))
        ]
        programs = [
            p for job in jobs for p in job["request"].programs(n, user.get("any_instrument", False))
        ]
        lab = {k: user[k] for k in ("guidance", "key_strength", "turns") if user.get(k) is not None}
        flat = batched(model, rows, replace(at_length, **lab), programs)
    else:
        flat = batched(
            model,
            [
                prompt_row(None, job["request"].prefix, header=False)
                for job in jobs
                for _ in range(n)
            ],
            sampling,
        )
    return [flat[j * n : (j + 1) * n] for j in range(len(jobs))]


def control(
    model,
    data,
    ckpt,
    *,
    sets,
    classifiers,
    n_per_prompt,
    sampling,
    seed,
    data_dir,
    real,
    paths=PATHS,
    user=None,
):
    """n_per_prompt samples of every prompt of every set on each path (path_samples) -> Control.
    real: the piece stats of real val and train pieces (the closeness yardstick) and the real val
    pieces' 95th percentile of voices per instrument. user: lab settings of the user's path
    (semantic_from, min_cosine, guidance, any_instrument, header); none is sample.py's default path.
    """
    user = user or {}
    real_val, real_train, polyphony_p95 = real
    seen, rows = data["programs_seen"], []
    jobs = control_jobs(ckpt, sets, data_dir=data_dir, seed=seed, user=user)
    for path in tqdm(paths, desc="control paths", unit="path", disable=None):
        t0 = time.time()
        for job, samples in zip(
            jobs,
            path_samples(
                model, jobs, path, n=n_per_prompt, sampling=replace(sampling, seed=seed), user=user
            ),
        ):
            for tokens in samples:
                score = tokenizer.tokens_to_score(tokens)[0]
                hits = realised(
                    score, job["asked"], key=job["key"], classifiers=classifiers, seen=seen
                )
                voices = describe.voices_per_instrument(score.notes)
                hits["polyphony outlier"], hits["polyphony outlier (all real)"] = (
                    voices > p for p in polyphony_p95
                )
                stats = piece_stats(score)
                rows.append(
                    dict(
                        set=job["set"],
                        prompt=job["prompt"],
                        path=path,
                        hits=hits,
                        stats={k: stats[k] for k in METRICS},
                    )
                )
        print(f"control, {path}: {len(jobs)} prompts x {n_per_prompt} in {time.time() - t0:.0f} s")
    ceilings = prompt_ceilings(classifiers, [job["asked"] for job in jobs])
    return Control(
        rows=rows,
        summary=summarise(rows),
        sets=sets,
        settings=path_settings(sampling, user, paths),
        n_per_prompt=n_per_prompt,
        seen=sorted(seen),
        polyphony_p95=polyphony_p95,
        lab=user,
        closeness=closeness_by_path(rows, sets, real_val, real_train),
        classifiers={
            k: dict(
                ceiling=v["ceiling"],
                prompt_ceiling=ceilings[k],
                **{f: v[f] for f in ("chance", "n", "labels", "recall")},
            )
            for k, v in classifiers.items()
        },
    )


def path_settings(sampling, user, paths):
    d = generation.SAMPLE_DEFAULTS
    lab = ", ".join(f"{k}={v}" for k, v in user.items())
    words = {
        "user": f"`sample.py --prompt P --seconds {USER_SECONDS:g}` with its defaults: the nearest "
        "semantic token, "
        f"guidance {d.guidance:g}, top-p {d.top_p:g}, key strength {d.key_strength:g}, the opening "
        "meter "
        f"and tempo, notes only on the asked instruments, each of several in turn"
        + (f"; **lab settings instead of the defaults: {lab}**" if lab else ""),
        "model": "the attribute prefix alone (semantic token unspecified), guidance "
        f"{sampling.guidance:g}, "
        f"{sampling.max_new_tokens} new tokens, nothing forced",
        "none-user": f"unconditioned, {USER_SECONDS:g} s ({POOL} samples shared by the prompts)",
        "none-model": f"unconditioned, {sampling.max_new_tokens} tokens ({POOL} samples shared by "
        "the prompts)",
    }
    return {path: words[path] for path in paths}


def summarise(rows):
    """Per (set, path, measure): n, mean, 95% interval (Wilson for hits, normal for the instrument
    shares)."""
    summary, groups = {}, {}
    for row in rows:
        for name, value in row["hits"].items():
            groups.setdefault((row["set"], row["path"], name), []).append(value)
    for key, values in groups.items():
        n, mean = len(values), float(np.mean(values))
        if key[2] in ("instrument recall", "instrument precision"):
            half = 1.96 * float(np.std(values)) / math.sqrt(n) if n > 1 else float("nan")
            ci = (max(0.0, mean - half), min(1.0, mean + half))
        else:
            ci = wilson(sum(values), n)
        summary[key] = dict(n=n, mean=mean, ci=ci)
    return summary


def prompt_ceilings(classifiers, asks):
    """What the classifier can read back of the labels the prompts ask for: its recall on real
    pieces of each, averaged over the prompts that ask. A meter no val piece has (or one it never
    names) counts as 0."""
    asked_labels = {
        "meter": [a["meter"] for a in asks if a["meter"]],
        "tempo word": [describe.tempo_word(a["tempo_bpm"]) for a in asks if a["tempo_bpm"]],
    }
    return {
        name: float(np.mean([classifiers[name]["recall"].get(label, 0.0) for label in labels]))
        if labels
        else 0.0
        for name, labels in asked_labels.items()
    }


def closeness_by_path(rows, sets, real_val, real_train):
    """Per set and path: |mean of the samples - mean of real val pieces| per metric, in real val
    standard deviations, beside the same for real train pieces (the floor two sets of real music lie
    apart)."""
    scale = {k: mean_std([s[k] for s in real_val])[1] or 1.0 for k in METRICS}
    distance = lambda stats, k: (
        abs(mean_std([s[k] for s in stats])[0] - mean_std([s[k] for s in real_val])[0]) / scale[k]
    )  # noqa: E731
    out = {}
    for name in sets:
        for path in PATHS:
            stats = [row["stats"] for row in rows if row["set"] == name and row["path"] == path]
            if stats:
                out.setdefault(name, {})[path] = {
                    k: (distance(stats, k), distance(real_train, k)) for k in METRICS
                }
    return out


def measure_control(model, data, ckpt, setup, *, settings):
    """Section 5 with its yardsticks: the meter and tempo-word classifiers, real val and train
    pieces (cut to 1,024 tokens) for closeness and the polyphony threshold -> Control."""
    S, seed = settings, settings["seed"]
    classifiers = fit_rhythm_classifiers(
        data, max_pieces=S["max_pieces"], max_tokens=setup.max_new_tokens + 1, seed=seed
    )
    real = {
        split: real_scores(
            data, split, max_pieces=S["max_pieces"], max_tokens=1024, seed=seed, semantic_only=False
        )[1]
        for split in ("val", "train")
    }
    # The strict yardstick is all real pieces, whose 95th percentile is 1 (the corpus is 95% single
    # lines), so any part-song reads as an outlier there; the main one is the real pieces in parts
    # (chorales, madrigals, quartets).
    voices = np.array([describe.voices_per_instrument(score.notes) for score in real["val"]])
    p95 = (
        float(np.percentile(voices[voices > 1] if (voices > 1).any() else voices, 95)),
        float(np.percentile(voices, 95)),
    )
    stats = {split: [piece_stats(score) for score in scores] for split, scores in real.items()}
    sampling = Sampling(
        max_new_tokens=setup.max_new_tokens,
        temperature=S["temperature"],
        top_p=S["top_p"],
        guidance=S["control_guidance"],
        dtype=setup.dtype,
    )
    return control(
        model,
        data,
        ckpt,
        sets=prompt_sets(S["prompts"]),
        classifiers=classifiers,
        n_per_prompt=S["control_samples"],
        sampling=sampling,
        seed=seed,
        data_dir=setup.data_dir,
        real=(stats["val"], stats["train"], p95),
        paths=S["paths"],
        user=S["user"],
    )


def fit_rhythm_classifiers(data, *, max_pieces, max_tokens, seed):
    """Meter and tempo word from the notes alone (describe.rhythm_features), trained on real val
    pieces (the model never saw them). Most bundled pieces set no tempo and play at MIDI's 120 bpm,
    so the tempo-word classifier also learns from each piece played once more at a random tempo
    (x0.5..x1.75: the same notes, other seconds). Ceiling: 5-fold cross-validated accuracy (a piece
    and its copy in the same fold); chance: the commonest label. -> {name: dict(model, ceiling,
    chance, n, labels)}."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GroupKFold, cross_val_predict

    _, scores = real_scores(
        data, "val", max_pieces=max_pieces, max_tokens=max_tokens, seed=seed, semantic_only=False
    )
    factors = 2 ** np.random.default_rng(seed).uniform(-1, 0.8, len(scores))
    retimed = [
        replace(score, tempos=[(step, bpm * f) for step, bpm in score.tempos])
        for score, f in zip(scores, factors)
    ]
    sets = {"meter": scores, "tempo word": scores + retimed}
    labels = {
        "meter": ["%d/%d" % describe.main_meter(score) for score in scores],
        "tempo word": [describe.tempo_word(describe.mean_bpm(score)) for score in scores + retimed],
    }
    out = {}
    for name, y in labels.items():
        x = np.stack([describe.rhythm_features(score) for score in sets[name]])  # (N, F)
        y, groups = np.array(y), np.arange(len(y)) % len(scores)
        forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
        if len(scores) < 2:
            raise UserError(
                "the control report's classifiers need at least 2 val pieces, the data has "
                f"{len(scores)}; "
                f"add MIDI files or run with --control_samples 0"
            )
        guess = cross_val_predict(forest, x, y, cv=GroupKFold(min(5, len(scores))), groups=groups)
        values, counts = np.unique(y, return_counts=True)
        forest.fit(x, y).set_params(
            n_jobs=1
        )  # it then reads one sample at a time: threads would only wait
        out[name] = dict(
            model=forest,
            ceiling=float((guess == y).mean()),
            chance=float(counts.max() / len(y)),
            n=len(y),
            labels=dict(zip(values.tolist(), counts.tolist())),
            recall={v: float((guess[y == v] == v).mean()) for v in values.tolist()},
        )  # per label
    return out


def realised(score, asked, *, key, classifiers, seen):
    """One sample against what its prompt asked -> {measure: hit (bool) or share (float)}, for the
    attributes asked for. key: the KEY_NAMES entry sampled with (a mode alone gets a tonic from the
    seed)."""
    m, out = describe.measure(score), {}
    second = describe.music21_key(score.notes) if asked["key"] or asked["mode"] else None
    if asked["key"]:
        out["key"], out["key (music21)"] = m["key"] == key, second == key
    if asked["mode"]:
        out["mode"] = m["mode"] == asked["mode"]
        out["mode (music21)"] = second is not None and second.split()[-1] == asked["mode"]
    features = describe.rhythm_features(score)[None]  # (1, F)
    if asked["meter"]:
        out["meter"] = classifiers["meter"]["model"].predict(features)[0] == asked["meter"]
    if asked["tempo_bpm"]:
        out["tempo word"] = classifiers["tempo word"]["model"].predict(features)[
            0
        ] == describe.tempo_word(asked["tempo_bpm"])
        level = tokenizer.tempo_level(asked["tempo_bpm"])
        out["tempo token"] = (
            bool(score.tempos) and tokenizer.tempo_level(score.tempos[0][1]) == level
        )
    sounding, target = set(m["instruments"]), {p for p in asked["instruments"] if p in seen}
    if asked["instruments"]:  # every asked instrument sounds, and nothing else does
        out["instruments exact"] = sounding == set(asked["instruments"])
    if target:
        out["instrument recall"] = len(target & sounding) / len(target)
        out["instrument precision"] = (
            len(sounding & set(asked["instruments"])) / len(sounding) if sounding else 0.0
        )
    return out


# -----------------------------------------------------------------------------
# the evaluation


@dataclass
class Results:
    """All that evaluate.py measured, stage by stage; report(), summary() and the plots read it."""

    setup: Setup
    likelihood: dict  # likelihood()'s tables
    ceiling: Ceiling | None  # sections 2-4: None with --only control
    adherence: Adherence | None
    closeness: Closeness | None
    control: Control | None
    seconds: dict  # stage -> seconds, and "total"
    report: str = ""  # where report.md and index.html were written
    page: str = ""


def load(out_dir, *, ckpt, data_dir, device, dtype, settings):
    """The checkpoint and its dataset -> (model, checkpoint dict, data, autocast context, Setup).
    settings: Setup's command, guidance, num_samples and max_new_tokens."""
    device, device_type, dtype = pick_device(device, dtype)
    model, ck = load_model(ckpt or out_dir, device)
    data_dir = data_dir or ck.get("config", {}).get("data_dir", dataset.DEFAULT_DATA_DIR)
    for name in ("semantic.json", "clusters.json"):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise UserError(
                f"no {os.path.join(data_dir, name)}; make it with: python cluster.py --data_dir "
                f"{data_dir}"
            )
    data = dataset.load_dataset(data_dir)
    setup = Setup(
        ckpt=ck["path"],
        iter=ck.get("iter_num"),
        data_dir=data_dir,
        device=f"{device} ({dtype})",
        dtype=dtype,
        labels=prompt.token_labels(ck, data_dir),
        type_names=list(data["meta"]["blocks"]),
        **settings,
    )
    return model, ck, data, autocast(device_type, dtype), setup


def timed(seconds, name, fn, *args, **kwargs):
    """fn(*args, **kwargs), its wall time recorded in seconds[name]."""
    t0 = time.time()
    out = fn(*args, **kwargs)
    seconds[name] = time.time() - t0
    return out


def measure(model, data, setup, *, ctx, settings, ckpt):
    """Sections 1-5 (2-4 unless settings["only_control"]) -> (Results less the written paths,
    example token rows for the page). settings: max_windows, max_pieces, temperature, top_p, seed,
    control_samples, control_guidance, prompts, only_control."""
    seconds, seed, S = {}, settings["seed"], settings
    lk = timed(
        seconds,
        "likelihood",
        likelihood,
        model,
        data,
        max_windows=S["max_windows"],
        ctx=ctx,
        device=next(model.parameters()).device,
    )
    print(f"likelihood: {lk['windows']} val windows in {seconds['likelihood']:.1f} s")
    ceiling = adherence = closeness = ctrl = None
    if not S["only_control"]:
        ceiling = timed(
            seconds,
            "classifier",
            fit_ceiling,
            data,
            data_dir=setup.data_dir,
            max_pieces=S["max_pieces"],
            max_tokens=setup.max_new_tokens + 1,
            seed=seed,
        )
        print(
            f"classifier: {len(ceiling.real_train[0])} train and {len(ceiling.real_val[0])} val "
            "pieces in "
            f"{seconds['classifier']:.1f} s"
        )
        sampling = Sampling(
            max_new_tokens=setup.max_new_tokens,
            temperature=S["temperature"],
            top_p=S["top_p"],
            dtype=setup.dtype,
        )
        adherence = timed(
            seconds,
            "generation",
            generate_all,
            model,
            ceiling,
            guidance=setup.guidance,
            seed=seed,
            n_samples=setup.num_samples,
            sampling=sampling,
        )
        print(
            f"generation: {len(adherence.stats) * setup.num_samples} samples in "
            f"{seconds['generation']:.1f} s"
        )
        closeness = compare(ceiling, adherence, setup.guidance)
    if S["control_samples"]:
        ctrl = timed(seconds, "control", measure_control, model, data, ckpt, setup, settings=S)
        print(f"control: {len(ctrl.rows)} samples in {seconds['control']:.1f} s")
    results = Results(
        setup=setup,
        likelihood=lk,
        ceiling=ceiling,
        adherence=adherence,
        closeness=closeness,
        control=ctrl,
        seconds=seconds,
    )
    return results, adherence.examples if adherence else {}


def run(
    out_dir,
    *,
    ckpt=None,
    data_dir=None,
    num_samples=32,
    guidance=(1.0, 2.0, 3.0),
    max_new_tokens=512,
    max_windows=256,
    max_pieces=3000,
    temperature=1.0,
    top_p=0.95,
    seed=0,
    device="auto",
    dtype="auto",
    command="python evaluate.py",
    audio=False,
    control_samples=4,
    control_guidance=2.0,
    prompts="fixed,demo,readme",
    only_control=False,
    paths=",".join(PATHS),
    user=None,
):
    """Evaluate out_dir's newest checkpoint (or `ckpt`); write out_dir/eval/report.md, summary.json,
    index.html and plots -> Results."""
    t_start = time.time()
    model, ck, data, ctx, setup = load(
        out_dir,
        ckpt=ckpt,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        settings=dict(
            command=command,
            guidance=list(guidance),
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
        ),
    )
    print(f"evaluating {setup.ckpt} (iter {setup.iter}) on {setup.data_dir}, {setup.device}")
    results, examples = measure(
        model,
        data,
        setup,
        ctx=ctx,
        ckpt=ck,
        settings=dict(
            max_windows=max_windows,
            max_pieces=max_pieces,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            control_samples=control_samples,
            control_guidance=control_guidance,
            prompts=prompts,
            only_control=only_control,
            paths=[p for p in paths.split(",") if p],
            user=user or {},
        ),
    )
    eval_dir = os.path.join(out_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    plot_likelihood(results, os.path.join(eval_dir, "likelihood.png"))
    if results.adherence is not None:
        plot_adherence(results, os.path.join(eval_dir, "adherence.png"))
        plot_closeness(results, os.path.join(eval_dir, "closeness.png"))
    results.seconds["total"] = time.time() - t_start
    results.report = os.path.join(eval_dir, "report.md")
    write_atomic(results.report, report(results))
    write_atomic(os.path.join(eval_dir, "summary.json"), json.dumps(summary(results), indent=1))
    results.page = write_report_page(results, examples, eval_dir, audio)
    return results


# -----------------------------------------------------------------------------
# plots (render.new_figure: matplotlib without pyplot)


def plot_likelihood(res, path):
    t = res.likelihood["type"]
    ix = np.flatnonzero(t["tokens"])
    fig = render.new_figure(10, 4)
    ax = fig.subplots()
    ax.bar(np.arange(len(ix)) - 0.2, t["loss"][ix], 0.4, label="model")
    ax.bar(np.arange(len(ix)) + 0.2, t["baseline_loss"][ix], 0.4, label="unigram")
    ax.set_xticks(range(len(ix)), [res.setup.type_names[i] for i in ix], rotation=30, ha="right")
    ax.set(ylabel="val cross-entropy (nats)", title="val loss per token type")
    ax.legend()
    render.save_figure(fig, path)


def plot_adherence(res, path):
    fig = render.new_figure(6, 4)
    ax = fig.subplots()
    g = res.setup.guidance
    ax.plot(g, [res.adherence.share[x] for x in g], "o-", label="generated samples")
    ax.axhline(res.ceiling.ceiling, color="g", ls="--", label="real val pieces (ceiling)")
    ax.axhline(res.ceiling.chance, color="r", ls=":", label="chance on val (largest cluster)")
    ax.axhline(res.adherence.chance, color="m", ls=":", label="chance on samples (1 / tokens)")
    ax.set(
        xlabel="guidance scale",
        ylabel="classifier accuracy",
        ylim=(0, 1.02),
        xticks=g,
        title="does the music match the semantic token asked for?",
    )
    ax.legend()
    render.save_figure(fig, path)


def plot_closeness(res, path, max_tokens=12):
    """A grid of histograms, real val vs generated: a column per metric, a row for all tokens then
    one per token."""
    tokens, real_by, gen_by = (
        res.ceiling.tokens[:max_tokens],
        res.closeness.real_by_token,
        res.closeness.gen_by_token,
    )
    rows = [
        (
            "all tokens",
            [s for c in tokens for s in real_by[c]],
            [s for c in tokens for s in gen_by[c]],
        )
    ]
    rows += [(tokenizer.semantic_name(c), real_by[c], gen_by[c]) for c in tokens]
    fig = render.new_figure(3 * (len(METRICS) + 1), 2.2 * len(rows), dpi=80)
    sets = (("real val", "tab:blue"), ("generated", "tab:orange"))
    for (title, real, gen), axes in zip(
        rows, fig.subplots(len(rows), len(METRICS) + 1, squeeze=False)
    ):
        for ax, key in zip(axes, METRICS):
            values = [finite([s[key] for s in x]) for x in (real, gen)]
            both = np.concatenate(values + [np.zeros(1)] * (not any(map(len, values))))
            bins = np.linspace(both.min(), max(both.max(), both.min() + 1e-6), 16)
            for v, (label, color) in zip(
                values, sets
            ):  # y: the share of pieces, so sets of any size compare
                if len(v):
                    ax.hist(
                        v,
                        bins,
                        weights=np.full(len(v), 1 / len(v)),
                        alpha=0.5,
                        color=color,
                        label=label,
                    )
            ax.set_title(
                f"{title}: {METRICS[key]}" if key == "pc_entropy" else METRICS[key], fontsize=8
            )
            ax.ticklabel_format(axis="x", useOffset=False)  # 1.0, not 0.0 with "+1" in the corner
        for i, (x, (label, color)) in enumerate(zip((real, gen), sets)):
            if x:
                axes[-1].bar(
                    np.arange(10) + 0.4 * i - 0.2,
                    np.mean([s["durations"] for s in x], axis=0),
                    0.4,
                    color=color,
                    label=label,
                )
        quarters = [str(Fraction(int(e), tokenizer.STEPS_PER_QUARTER)) for e in DURATION_EDGES[:-1]]
        axes[-1].set_xticks(range(10), quarters, fontsize=7)
        axes[-1].set_title("durations (quarters, bin start)", fontsize=8)
        axes[-1].legend(fontsize=6)
    render.save_figure(fig, path)


# -----------------------------------------------------------------------------
# the report and the printed summary


def pct(x):
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def num(x, digits=3):
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def headline(res):
    o, a, ce, cl = res.likelihood["overall"], res.adherence, res.ceiling, res.closeness
    loss, uni, g = float(o["loss"][0]), float(o["baseline_loss"][0]), res.setup.guidance
    return "\n".join(
        [
            f"{'':<30}{'model':>10}{'unigram':>10}",
            f"{'val loss (nats)':<30}{loss:>10.4f}{uni:>10.4f}",
            f"{'val nats per note':<30}{nats_per_note(res.likelihood, 'loss'):>10.3f}"
            f"{nats_per_note(res.likelihood, 'baseline_loss'):>10.3f}",
            f"{'val perplexity':<30}{math.exp(loss):>10.2f}{math.exp(uni):>10.2f}",
            f"{'val next-token accuracy':<30}{pct(o['acc'][0]):>10}{pct(o['baseline_acc'][0]):>10}",
        ]
        + (
            []
            if a is None
            else [
                "",
                f"{'adherence (classifier acc.)':<30}"
                + "".join(f"{f'guidance {x:g}':>13}" for x in g),
                f"{'  generated samples':<30}" + "".join(f"{pct(a.share[x]):>13}" for x in g),
                f"{'  chance on samples':<30}" + f"{pct(a.chance):>13}" * len(g),
                f"{'  real val pieces (ceiling)':<30}{pct(ce.ceiling):>13}   chance on val "
                f"{pct(ce.chance)}",
                "",
                f"validity: {pct(cl.valid_decode)} of samples decode with no token skipped, "
                f"{pct(cl.valid_bars)} have "
                f"notes in every bar (real val pieces: {pct(cl.real_bars)})",
            ]
        )
        + headline_control(res.control)
    )


def headline_control(c):
    if c is None:
        return []
    lines = []
    for name in c.sets:
        lines += [
            "",
            f"{'control, ' + name + ' prompts':<30}{'user path':>11}{'uncond.':>9}{'model':>9}   "
            "demo / long",
        ]
        for m, demo, long, value, ok_demo, ok_long in control_targets(c, name):
            base, model = (
                c.summary.get((name, path, m), {}).get("mean", float("nan"))
                for path in ("none-user", "model")
            )
            lines.append(
                f"{'  ' + m:<30}{pct(value):>11}{pct(base):>9}{pct(model):>9}   "
                f"{'met' if ok_demo else 'MISSED'} / {'met' if ok_long else 'MISSED'} ({demo}; "
                f"{long})"
            )
    return lines


def report_likelihood(setup, lk):
    o = lk["overall"]
    types_, sem = lk["type"], lk["first"]
    sem_name = lambda i: (
        label_of(setup, i - tokenizer.semantic_token(0))
        if i != tokenizer.UNCOND
        else "(pieces without one)"
    )  # noqa: E731
    return [
        "## 1. Likelihood\n",
        f"{lk['windows']} fixed windows of val.bin, {int(o['tokens'][0]):,} tokens scored; each "
        "window is led by its "
        "piece's attribute prefix (semantic token, key, meter, tempo, instruments, all measured "
        "from the piece) and "
        "starts on an event boundary, as in training. Unigram: the token frequencies of train.bin, "
        "add-one "
        "smoothed. *loss uncond*: the same windows with the whole prefix unspecified; conditioning "
        "gains "
        f"{o['loss_uncond'][0] - o['loss'][0]:+.4f} nats per token.\n",
        table(
            ["", "loss (nats)", "perplexity", "accuracy", "loss uncond"],
            [
                [
                    "model",
                    num(o["loss"][0], 4),
                    f"{math.exp(o['loss'][0]):.2f}",
                    pct(o["acc"][0]),
                    num(o["loss_uncond"][0], 4),
                ],
                [
                    "unigram",
                    num(o["baseline_loss"][0], 4),
                    f"{math.exp(o['baseline_loss'][0]):.2f}",
                    pct(o["baseline_acc"][0]),
                    "",
                ],
            ],
        ),
        "Loss with and without each attribute: the same windows with that one slot unspecified, "
        "the others given. "
        "Gain = loss without - loss with (nats per token; > 0: the model uses it).\n",
        table(
            ["attribute", "loss with", "loss without", "gain"],
            [
                [
                    slot,
                    num(o["loss"][0], 4),
                    num(o[f"loss_no_{slot}"][0], 4),
                    f"{o[f'loss_no_{slot}'][0] - o['loss'][0]:+.4f}",
                ]
                for slot in tokenizer.PREFIX_SLOTS
            ]
            + [
                [
                    "all of them",
                    num(o["loss"][0], 4),
                    num(o["loss_uncond"][0], 4),
                    f"{o['loss_uncond'][0] - o['loss'][0]:+.4f}",
                ]
            ],
        ),
        "Per token type (of the target token):\n",
        table(
            ["type", "tokens", "loss", "perplexity", "accuracy", "unigram loss"],
            [
                [
                    name,
                    f"{types_['tokens'][i]:,}",
                    num(types_["loss"][i]),
                    f"{math.exp(types_['loss'][i]):.2f}",
                    pct(types_["acc"][i]),
                    num(types_["baseline_loss"][i]),
                ]
                for i, name in enumerate(setup.type_names)
                if types_["tokens"][i]
            ],
        ),
        "Per semantic token (of the window):\n",
        table(
            [
                "token",
                "label",
                "tokens",
                "loss",
                "perplexity",
                "accuracy",
                "loss uncond",
                "unigram loss",
            ],
            [
                [
                    tokenizer.token_name(i),
                    sem_name(i),
                    f"{sem['tokens'][i]:,}",
                    num(sem["loss"][i]),
                    f"{math.exp(sem['loss'][i]):.2f}",
                    pct(sem["acc"][i]),
                    num(sem["loss_uncond"][i]),
                    num(sem["baseline_loss"][i]),
                ]
                for i in np.flatnonzero(sem["tokens"])
            ],
        ),
        "![loss per token type](likelihood.png)\n",
    ]


def report_adherence(setup, ceiling, adherence, real_by_token):
    g, n_tok, ce, a = setup.guidance, setup.max_new_tokens, ceiling, adherence
    n = setup.num_samples * len(ce.tokens)
    n_train, n_val = len(ce.real_train[0]), len(ce.real_val[0])
    return [
        "## 2. Conditioning adherence\n",
        f"A random forest (200 trees) learns the semantic token from {ce.n_features} musical "
        "features (pitch-class "
        "histogram, the metrics of section 3, register, tempo, notes per second, instrument "
        "families and drums, "
        f"durations, velocity, meter) of {n_train} real train pieces, each cut to its first "
        f"{n_tok + 1} tokens "
        f"like a sample. Ceiling: its accuracy on the {n_val} real val pieces that have a semantic "
        "id. "
        f"Adherence: its accuracy on {setup.num_samples} samples per token (top-p 0.95, at most "
        f"{n_tok} new tokens) "
        f"at each guidance scale. Chance: always naming the largest cluster ({pct(ce.chance)} on "
        "val; "
        f"{pct(a.chance)} on the samples, as every token gets as many).\n",
        table(
            ["", "ceiling (real val)", "chance (val)"] + [f"samples, guidance {x:g}" for x in g],
            [
                [
                    "all tokens",
                    interval(dict(mean=ce.ceiling, ci=wilson(round(ce.ceiling * n_val), n_val))),
                    pct(ce.chance),
                ]
                + [interval(dict(mean=a.share[x], ci=wilson(round(a.share[x] * n), n))) for x in g]
            ],
        ),
        f"Brackets: 95% Wilson intervals ({n} samples per guidance scale, {setup.num_samples} per "
        "token). Target: "
        f"adherence >= 80% of the ceiling ({pct(0.8 * ce.ceiling)}) at guidance <= 2, with the "
        "ceiling >= 2x "
        f"chance ({pct(2 * ce.chance)}): "
        + (
            "met"
            if max(a.share.get(x, 0) for x in g if x <= 2) >= 0.8 * ce.ceiling
            and ce.ceiling >= 2 * ce.chance
            else "**missed**"
        )
        + ".\n",
        "Per token: the share of its samples that the classifier names as that token.\n",
        table(
            ["token", "label", "val pieces"] + [f"guidance {x:g}" for x in g],
            [
                [tokenizer.semantic_name(c), label_of(setup, c), len(real_by_token[c])]
                + [pct(a.by_token[x, c]) for x in g]
                for c in ce.tokens
            ],
        ),
        "![adherence](adherence.png)\n",
    ]


def report_closeness(setup, cl):
    keys, closeness_ = list(METRICS) + ["durations"], cl.distance
    mean_of = lambda k, i: num(mean_std([pair[i][k] for pair in closeness_.values()])[0], 2)
    return [
        "## 3. Closeness to real music\n",
        f"Samples at guidance {setup.guidance[0]:g} against the real val pieces of the same token, "
        "both cut to "
        f"{setup.max_new_tokens + 1} tokens. Metrics as in muspy: pitch-class entropy (bits, "
        "pitched notes), scale "
        "consistency (the largest share of notes in one major or natural minor scale), polyphony "
        "(mean number of "
        "notes sounding, over the steps where any does), note density (notes per beat), empty-beat "
        "rate (share of "
        "beats where no note starts).\n\n"
        "**Distance** d: |mean over the samples - mean over the real pieces|, in units of the "
        "metric's standard "
        "deviation over all real val pieces (0 = the same mean; as with Cohen's d, 0.2 is small, "
        "0.5 medium, 0.8 "
        "large). Means are fair with a few samples per token, where histograms are noise. For "
        "durations: the "
        "overlapping area of the two mean duration histograms (1 = the same). In brackets, the "
        "same for the real "
        "*train* pieces of the token: how far two sets of real pieces lie apart, the floor to "
        "compare with.\n",
        table(
            ["metric", "real val mean ± std", "generated mean ± std", "real train mean ± std"],
            [[METRICS[k]] + [f"{num(m)} ± {num(s)}" for m, s in cl.pooled[k]] for k in METRICS],
        ),
        table(
            ["token", "label", "val pieces"]
            + [f"d {METRICS[k]}" for k in METRICS]
            + ["durations overlap"],
            [
                [tokenizer.semantic_name(c), label_of(setup, c), len(cl.real_by_token[c])]
                + [f"{num(gd[k], 2)} ({num(td[k], 2)})" for k in keys]
                for c, (gd, td) in closeness_.items()
            ]
            + [["mean", "", ""] + [f"{mean_of(k, 0)} ({mean_of(k, 1)})" for k in keys]],
        ),
        "![real vs generated](closeness.png)\n",
    ]


def interval(summary):
    return f"{pct(summary['mean'])} [{pct(summary['ci'][0])}, {pct(summary['ci'][1])}]"


def control_targets(c, name):
    """Issue 18's targets on the user's path of one prompt set -> [(measure, target for the demo
    model, for the long preset, realised share, met for the demo, met for the long)]."""
    get = lambda path, m: c.summary.get((name, path, m), dict(n=0, mean=float("nan")))  # noqa: E731
    out = []
    for m in CONTROL_MEASURES + ["tempo token"]:
        user, base = get("user", m), get("none-user", m)
        if not user["n"]:
            continue
        twice = user["mean"] >= 2 * base["mean"] and user["mean"] > 0
        if m in TARGETS or m in CEILINGS:
            demo, long = TARGETS.get(m) or CEILINGS[m]
            at_most = m in CEILINGS
            words = (
                ("<= " if at_most else ">= ") + f"{pct(demo)}",
                ("<= " if at_most else ">= ") + f"{pct(long)}",
            )
            met = [user["mean"] <= g if at_most else user["mean"] >= g for g in (demo, long)]
        elif m == "meter":  # the long target: 80% of the classifier's recall on the meters asked
            goal = 0.8 * c.classifiers["meter"]["prompt_ceiling"]
            words, met = (
                ("2x unconditioned", f">= {pct(goal)} (80% of the ceiling)"),
                [twice, user["mean"] >= goal],
            )
        elif m == "tempo word":
            words, met = ("2x unconditioned", "2x unconditioned"), [twice, twice]
        else:
            continue
        out.append((m, *words, user["mean"], *met))
    return out


def control_table(c, name):
    """The measures of one prompt set on each path, with intervals and the ratio to the
    unconditioned samples."""
    rows = []
    for m in CONTROL_MEASURES + ["tempo token"]:
        cells = [c.summary.get((name, path, m)) for path in PATHS]
        if not cells[0] and not cells[1]:
            continue
        ratio = lambda a, b: f"{a['mean'] / b['mean']:.1f}x" if a and b and b["mean"] else ""
        rows.append(
            [
                m,
                (cells[0] or cells[1])["n"],
                interval(cells[0]) if cells[0] else "",
                interval(cells[2]) if cells[2] else "",
                ratio(cells[0], cells[2]),
                interval(cells[1]) if cells[1] else "",
                interval(cells[3]) if cells[3] else "",
                ratio(cells[1], cells[3]),
            ]
        )
    return table(
        [
            "measure",
            "samples",
            "user's path",
            "unconditioned",
            "ratio",
            "model alone",
            "unconditioned",
            "ratio",
        ],
        rows,
    )


def per_prompt_table(c, name):
    measures = [
        "key",
        "key (music21)",
        "mode",
        "meter",
        "tempo word",
        "instruments exact",
        "polyphony outlier",
    ]
    out = []
    for i, (text, flags) in enumerate(c.sets[name]):
        hits = [
            row["hits"]
            for row in c.rows
            if row["set"] == name and row["prompt"] == i and row["path"] == "user"
        ]
        words = text + "".join(f" --{k} {v}" for k, v in flags.items())
        out.append(
            [words]
            + [
                pct(np.mean([h[m] for h in hits])) if hits and m in hits[0] else ""
                for m in measures
            ]
        )
    return table(["prompt (user's path)"] + measures, out)


def report_control(c):
    lines = [
        "## 5. Control: the attributes asked for, measured in the notes\n",
        "Every prompt of each set is read by describe.parse_prompt as `sample.py --prompt` reads "
        "it, and sampled "
        f"{c.n_per_prompt} times on each path:\n",
        *[f"- **{path}**: {words}" for path, words in c.settings.items()],
        "\nThe unconditioned samples are scored against the same prompt: the baseline of each "
        "path. Measured from the "
        "decoded notes: key and mode by describe's Krumhansl-Schmuckler estimator and by music21's "
        "analyze('key'); "
        "instruments by the programs that sound (*exact*: every asked instrument sounds and no "
        "other; recall and "
        "precision over instruments some training file has); meter and tempo word by random "
        "forests on rhythm "
        "features of the notes alone, trained on real val pieces; *polyphony outlier*: the mean "
        "number of notes an "
        "instrument sounds at once is above the 95th percentile of the real val pieces in parts "
        f"({c.polyphony_p95[0]:.2f}; "
        f"*(all real)*: of every real val piece, {c.polyphony_p95[1]:.2f}, which 95% single melody "
        "lines hold at 1). "
        "Brackets: 95% intervals (Wilson for shares, normal for the instrument means). *tempo "
        "token* is plumbing: "
        "the sample's own first tempo equals the one asked (on the user's path sample.py writes "
        "it).\n",
    ]
    for name, prompts in c.sets.items():
        targets = [
            [
                m,
                demo,
                long,
                pct(value),
                "met" if ok_demo else "**missed**",
                "met" if ok_long else "**missed**",
            ]
            for m, demo, long, value, ok_demo, ok_long in control_targets(c, name)
        ]
        close = c.closeness.get(name, {})
        lines += [
            f"### Prompt set: {name} ({len(prompts)} prompts)\n",
            control_table(c, name),
            "Issue 18's targets, on the user's path:\n",
            table(
                ["measure", "demo model", "long CPU preset", "realised", "demo", "long"], targets
            ),
        ]
        if close:
            lines += [
                "Closeness to real music (d: |mean of the samples - mean of real val pieces| in "
                "real val "
                "standard deviations; floor: the same for real train pieces):\n",
                table(
                    ["metric"] + [f"d {path}" for path in close] + ["floor"],
                    [
                        [METRICS[k]]
                        + [num(close[path][k][0], 2) for path in close]
                        + [num(next(iter(close.values()))[k][1], 2)]
                        for k in METRICS
                    ],
                ),
            ]
        lines += [per_prompt_table(c, name)]
    classifier_rows = [
        [
            name,
            v["n"],
            pct(v["ceiling"]),
            pct(v["prompt_ceiling"]),
            pct(v["chance"]),
            ", ".join(
                f"{label} {n} ({pct(v['recall'][label])})"
                for label, n in sorted(v["labels"].items(), key=lambda x: -x[1])[:9]
            ),
        ]
        for name, v in c.classifiers.items()
    ]
    return lines + [
        "The meter and tempo-word classifiers (5-fold cross-validated on real val pieces, cut to "
        "the samples' "
        "length; chance = always the commonest label). *Ceiling on the asked*: its recall on real "
        "pieces of the "
        "labels the prompts ask for, averaged over the prompts that ask. Labels with their val "
        "pieces and, in "
        "brackets, the classifier's recall on them:\n",
        table(
            [
                "classifier",
                "pieces",
                "ceiling",
                "ceiling on the asked",
                "chance",
                "labels (commonest first)",
            ],
            classifier_rows,
        ),
        "Instruments some training file has: "
        f"{', '.join(map(describe.instrument_name, c.seen))}.\n",
    ]


def nats_per_note(lk, column="loss"):
    """Val nats per note: the summed loss of the scored val tokens over their notes
    (model.summed_loss_per)."""
    return summed_loss_per(
        dict(tokens=lk["type"]["tokens"], loss=lk["type"][column]), tokenizer.TYPE["NOTE"]
    )


def summary(res):
    """The headline numbers as plain JSON (eval/summary.json), for comparing runs."""
    o, s = res.likelihood["overall"], res.setup
    out = dict(
        ckpt=s.ckpt,
        iter=s.iter,
        val_loss=float(o["loss"][0]),
        val_nats_per_note=nats_per_note(res.likelihood),
        gain={"all": float(o["loss_uncond"][0] - o["loss"][0])}
        | {slot: float(o[f"loss_no_{slot}"][0] - o["loss"][0]) for slot in tokenizer.PREFIX_SLOTS},
        num_samples=s.num_samples,
    )
    if res.adherence is not None:
        out |= dict(
            adherence={f"{g:g}": res.adherence.share[g] for g in s.guidance},
            ceiling=res.ceiling.ceiling,
            chance=res.ceiling.chance,
        )
    if res.control is not None:
        c = res.control
        out["control"] = {"/".join(key): dict(v, ci=list(v["ci"])) for key, v in c.summary.items()}
        out["targets"] = {
            name: {
                m: dict(demo=ok_demo, long=ok_long, value=value)
                for m, _, _, value, ok_demo, ok_long in control_targets(c, name)
            }
            for name in c.sets
        }
        out |= dict(
            closeness=c.closeness,
            classifiers=c.classifiers,
            polyphony_p95=c.polyphony_p95,
            lab=c.lab,
        )
    return out


def report(res):
    s = res.setup
    return "\n".join(
        [
            f"# Evaluation of {s.ckpt} (iter {s.iter})\n",
            f"Made by `{s.command}` on {s.device} in {res.seconds['total']:.0f} s ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items() if k != "total")
            + f"). Data: `{s.data_dir}`.\n",
            "```\n" + headline(res) + "\n```\n",
            *report_likelihood(s, res.likelihood),
            *(report_samples(res) if res.adherence is not None else []),
            *(report_control(res.control) if res.control is not None else []),
        ]
    )


def report_samples(res):
    """Sections 2-4: adherence, closeness and validity of the samples per semantic token."""
    s, cl = res.setup, res.closeness
    return [
        *report_adherence(s, res.ceiling, res.adherence, cl.real_by_token),
        *report_closeness(s, cl),
        "## 4. Validity\n",
        f"Over all {len(s.guidance) * len(res.ceiling.tokens) * s.num_samples} samples. Sampling "
        "is constrained by "
        "tokenizer.py's grammar, so no skipped token is expected. A bar (its length from the time "
        "signature, 4/4 by "
        "default) counts as filled when a note sounds in it.\n",
        table(
            ["", "samples", "real val pieces"],
            [
                ["decode with no token skipped", pct(cl.valid_decode), ""],
                ["notes in every bar", pct(cl.valid_bars), pct(cl.real_bars)],
            ],
        ),
    ]


# -----------------------------------------------------------------------------
# the report's page: its tables as HTML, and a few samples per token to see and hear

EXAMPLES_PER_TOKEN = 2


def write_report_page(res, examples, eval_dir, audio=False):
    """eval_dir/index.html: the report's tables and plots (markdown -> HTML by the markdown
    package), then EXAMPLES_PER_TOKEN samples per token at the largest guidance scale (MIDI, piano
    roll, and a WAV with audio) in eval_dir/samples."""
    import markdown

    s = res.setup
    sample_dir, g = os.path.join(eval_dir, "samples"), max(s.guidance)
    os.makedirs(sample_dir, exist_ok=True)
    written = []
    for c in res.ceiling.tokens if res.ceiling else []:
        for i, tokens in enumerate(examples[g, c]):
            name = tokenizer.semantic_name(c)
            path = os.path.join(sample_dir, f"{name}_g{g:g}_{i}.mid")
            title = f"{name}: {label_of(s, c)} (guidance {g:g}, sample {i})"
            score, _ = render.write_sample(tokens, path, title)
            understood = {"token": name, "label": label_of(s, c), "guidance": g}
            written.append((path, score, title, understood))
    body = markdown.markdown(report(res).split("\n", 1)[1], extensions=["tables", "fenced_code"])
    intro = f'<div class="report">{body}</div><h2>Samples</h2>'
    return render.audio_and_gallery(
        written, eval_dir, audio, title=f"Evaluation of {s.ckpt} (iter {s.iter})", intro=intro
    )[0]


def lab_settings(args):
    """The lab settings given on the command line, as control's `user` takes them (only those
    given)."""
    user = dict(
        semantic_from=args.semantic_from,
        min_cosine=args.min_cosine,
        guidance=args.user_guidance,
        key_strength=args.key_strength,
        turns=False if args.no_turns else None,
        any_instrument=args.any_instrument or None,
        header=False if args.no_header else None,
    )
    return {k: v for k, v in user.items() if v is not None}


def check_args(args, guidance):
    """Every flag in its range, and the report's folder writable, before anything loads: one line
    that names the flag, its value and what is allowed."""
    for name in ("num_samples", "max_new_tokens", "max_windows", "max_pieces"):
        check_range(f"--{name}", getattr(args, name), low=1)
    for g in guidance:
        check_range("--guidance", g, low=0, note="each scale: 1 = off, 0 = unconditional")
    check_range(
        "--control_guidance", args.control_guidance, low=0, note="1 = off, 0 = unconditional"
    )
    check_range("--control_samples", args.control_samples, low=0, note="0 = no control report")
    check_range("--temperature", args.temperature, low=0, note="0 = greedy")
    check_range("--top_p", args.top_p, low=0, high=1, low_open=True, note="1 = off")
    check_range("--seed", args.seed, low=0, high=2**32 - 1)
    if args.min_cosine is not None:
        check_range("--min_cosine", args.min_cosine, low=-1, high=1)
    if args.key_strength is not None:
        check_range("--key_strength", args.key_strength, low=0, note="0 = off")
    if args.user_guidance is not None:
        check_range("--user_guidance", args.user_guidance, low=0, note="1 = off, 0 = unconditional")
    for name in ("out_dir", "ckpt", "data_dir", "prompts", "paths"):
        check_text(f"--{name}", getattr(args, name))
    check_device(args.device, "--device")
    check_output_folder(os.path.join(args.out_dir, "eval"))


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Evaluate an AMT checkpoint: likelihood, adherence, closeness, validity."
    )
    p.add_argument(
        "--out_dir", default=OUT_DIR, help="the training run; the report goes to OUT_DIR/eval"
    )
    p.add_argument(
        "--ckpt", help="a checkpoint file, or 'best' for OUT_DIR/ckpt_best.pt; default the newest"
    )
    p.add_argument("--data_dir", help="dataset folder; default the checkpoint's")
    p.add_argument(
        "--num_samples", type=int, default=32, help="samples per semantic token and guidance scale"
    )
    p.add_argument("--guidance", default="1,2,3", help="guidance scales, comma-separated")
    p.add_argument(
        "--max_new_tokens", type=int, default=512, help="per sample; real pieces are cut to as many"
    )
    p.add_argument(
        "--max_windows", type=int, default=256, help="val windows scored for the likelihood"
    )
    p.add_argument(
        "--max_pieces", type=int, default=3000, help="real pieces per split for the classifier"
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto = cuda, then mps, then cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument(
        "--audio", action="store_true", help="render the samples on the report's page to WAV"
    )
    p.add_argument(
        "--control_samples",
        type=int,
        default=4,
        help="samples per control prompt and path (0 = no control report)",
    )
    p.add_argument(
        "--control_guidance",
        type=float,
        default=2.0,
        help="guidance of the model-alone control samples (the user's path takes sample.py's)",
    )
    p.add_argument(
        "--prompts",
        default="fixed,demo,readme",
        help="control prompt sets, comma-separated: fixed, demo, readme, or text files of prompts "
        "(one a line)",
    )
    p.add_argument(
        "--only", choices=["control"], help="control: only sections 1 and 5 (no adherence samples)"
    )
    p.add_argument(
        "--paths",
        default=",".join(PATHS),
        help=f"control paths, comma-separated: {', '.join(PATHS)}",
    )
    lab = p.add_argument_group(
        "lab settings of the user's path (ablations; left out, it is sample.py's default path)"
    )
    lab.add_argument("--semantic_from", choices=["prompt", "style", "none"])
    lab.add_argument("--min_cosine", type=float)
    lab.add_argument("--user_guidance", type=float)
    lab.add_argument("--key_strength", type=float)
    lab.add_argument("--no_turns", action="store_true")
    lab.add_argument("--any_instrument", action="store_true")
    lab.add_argument("--no_header", action="store_true")
    args = p.parse_args(argv)
    try:
        guidance = [float(x) for x in args.guidance.split(",")]
    except ValueError:
        raise UserError(
            f"--guidance {args.guidance!r}: give numbers separated by commas, e.g. 1,2,3"
        ) from None
    check_args(args, guidance)
    prompt_sets(args.prompts)  # a prompt file that is not there fails here, before the model loads
    ckpt = os.path.join(args.out_dir, "ckpt_best.pt") if args.ckpt == "best" else args.ckpt
    command = " ".join(["python evaluate.py"] + (sys.argv[1:] if argv is None else list(argv)))
    res = run(
        args.out_dir,
        ckpt=ckpt,
        data_dir=args.data_dir,
        num_samples=args.num_samples,
        guidance=guidance,
        max_new_tokens=args.max_new_tokens,
        max_windows=args.max_windows,
        max_pieces=args.max_pieces,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        device=args.device,
        dtype=args.dtype,
        command=command,
        audio=args.audio,
        control_samples=args.control_samples,
        control_guidance=args.control_guidance,
        prompts=args.prompts,
        only_control=args.only == "control",
        paths=args.paths,
        user=lab_settings(args),
    )
    print(
        "\n"
        + headline(res)
        + f"\n\nwrote {res.report}, {res.page} and plots in {res.seconds['total']:.0f} s"
    )
    return res


if __name__ == "__main__":
    run_script(main)
