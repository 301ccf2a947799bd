"""
Evaluate an AMT checkpoint and its samples: writes OUT_DIR/eval/report.md and PNG plots, prints a summary.

    python evaluate.py --out_dir out/amt_cpu                   # 8 samples per token at guidance 1, 2 and 3
    python evaluate.py --out_dir out/amt --ckpt best --num_samples 32 --max_new_tokens 1024

1. Likelihood: val loss, perplexity and next-token accuracy on fixed val windows, overall, per token type
   and per semantic token, beside a unigram baseline (the token frequencies of train.bin).
2. Conditioning adherence: a random forest learns the semantic token of real train pieces from musical
   features. Its accuracy on real val pieces is the ceiling; on samples generated for each token (at each
   guidance scale) it is the adherence; always naming the largest cluster is chance.
3. Closeness to real music: per token, musical statistics of the samples against real val pieces.
4. Validity: samples that decode with no token skipped, and with notes in every bar.
"""

import argparse
import html
import json
import math
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from fractions import Fraction

import numpy as np
import torch
from tqdm import tqdm

import describe
import sample
import tokenizer
from describe import DURATION_EDGES, METRICS, piece_stats
from model import autocast, estimate_loss, pick_device
from prepare import build_windows, covering_windows, load_dataset
from tokenizer import UserError


# -----------------------------------------------------------------------------
# 1. likelihood

def likelihood(model, data, *, max_windows=256, batch_size=16, ctx=nullcontext(), device="cpu"):
    """model.estimate_loss on fixed windows that cover val.bin, each led by its piece's full attribute prefix,
    beside a unigram baseline (the token frequencies of train.bin, add-one smoothed) -> its tables "overall",
    "type" (meta.json block of the target) and "first" (by the window's semantic token id), plus the number of
    windows. Each table also has loss_uncond (the whole prefix unspecified) and loss_no_<slot> (that slot alone
    unspecified: the semantic token, key, meter, tempo, instruments)."""
    d, V, T = data["val"], model.config.vocab_size, model.config.block_size
    counts = np.bincount(np.asarray(data["train"]["tokens"]), minlength=V) + 1.0  # (V,) add-one smoothed
    windows = covering_windows(data, "val", T, max_windows)
    chunks = [windows[b0:b0 + batch_size] for b0 in range(0, len(windows), batch_size)]
    batches = (build_windows(data, "val", chunk, d["prefix"][[f for f, _ in chunk]], T) for chunk in chunks)
    batches = ([torch.from_numpy(a).to(device) for a in batch] for batch in batches)
    variants = {"uncond": tokenizer.blank_prefix(tokenizer.PREFIX_SLOTS)} | \
        {f"no_{slot}": tokenizer.blank_prefix([slot]) for slot in tokenizer.PREFIX_SLOTS}
    tables = estimate_loss(model, tqdm(batches, total=len(chunks), desc="val likelihood", unit="batch", disable=None),
                           ctx, token_type=torch.from_numpy(data["token_type"]), variants=variants,
                           baseline_nll=torch.from_numpy(-np.log(counts / counts.sum())))  # (V,)
    return dict(windows=len(windows), **tables)


# -----------------------------------------------------------------------------
# 2.-4. musical statistics of real and generated pieces (describe.piece_stats)

def real_scores(data, split, max_pieces, max_tokens, seed=0, semantic_only=True):
    """(file numbers, Scores) of up to max_pieces pieces of a split (those with a semantic id, or all), each cut
    to its first max_tokens tokens (the length of a sample) so that real and generated pieces compare."""
    d = data[split]
    files = np.flatnonzero(d["semantic"] >= 0) if semantic_only else np.arange(len(d["start"]))
    if len(files) > max_pieces:
        files = np.sort(np.random.default_rng(seed).choice(files, max_pieces, replace=False))
    return files, [tokenizer.tokens_to_score(d["tokens"][d["start"][f]:min(d["end"][f], d["start"][f] + max_tokens)])[0]
                   for f in tqdm(files, desc=f"reading {split} pieces", unit="piece", disable=None)]


def real_pieces(data, split, max_pieces, max_tokens, seed=0):
    """(semantic ids, piece_stats of each) of up to max_pieces pieces of a split that have a semantic id."""
    files, scores = real_scores(data, split, max_pieces, max_tokens, seed)
    return data[split]["semantic"][files], [piece_stats(score) for score in scores]


def feature_matrix(stats):
    return np.nan_to_num(np.stack([s["features"] for s in stats]), nan=-1.0)  # (N, F); -1: does not apply


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
    """Distance of generated from real pieces, per metric: |difference of the means| in units of `scale` (the std
    of the metric over all real val pieces); for durations the overlapping area of the mean histograms (1 = same)."""
    d = {k: abs(mean_std([s[k] for s in gen])[0] - mean_std([s[k] for s in real])[0]) / scale[k] for k in METRICS}
    d["durations"] = float(np.minimum(*(np.mean([s["durations"] for s in x], axis=0) for x in (real, gen))).sum())
    return d


# -----------------------------------------------------------------------------
# plots: matplotlib's Figure directly (no pyplot, so no global backend state; it renders with Agg)

def new_figure(width, height, dpi=100):
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import
    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def save_figure(fig, path):
    tokenizer.write_atomic(path, lambda f: fig.savefig(f, format="png"))


def plot_likelihood(r, path):
    t = r["likelihood"]["type"]
    ix = np.flatnonzero(t["tokens"])
    fig = new_figure(10, 4)
    ax = fig.subplots()
    ax.bar(np.arange(len(ix)) - 0.2, t["loss"][ix], 0.4, label="model")
    ax.bar(np.arange(len(ix)) + 0.2, t["baseline_loss"][ix], 0.4, label="unigram")
    ax.set_xticks(range(len(ix)), [r["type_names"][i] for i in ix], rotation=30, ha="right")
    ax.set(ylabel="val cross-entropy (nats)", title="val loss per token type")
    ax.legend()
    save_figure(fig, path)


def plot_adherence(r, path):
    fig = new_figure(6, 4)
    ax = fig.subplots()
    g = r["guidance"]
    ax.plot(g, [r["adherence"][x] for x in g], "o-", label="generated samples")
    ax.axhline(r["ceiling"], color="g", ls="--", label="real val pieces (ceiling)")
    ax.axhline(r["chance"], color="r", ls=":", label="chance on val (largest cluster)")
    ax.axhline(r["chance_samples"], color="m", ls=":", label="chance on samples (1 / tokens)")
    ax.set(xlabel="guidance scale", ylabel="classifier accuracy", ylim=(0, 1.02), xticks=g,
           title="does the music match the semantic token asked for?")
    ax.legend()
    save_figure(fig, path)


def plot_closeness(r, path, max_tokens=12):
    """A grid of histograms, real val vs generated: a column per metric, a row for all tokens then one per token."""
    tokens = r["tokens"][:max_tokens]
    rows = [("all tokens", [s for c in tokens for s in r["real_by_token"][c]],
             [s for c in tokens for s in r["gen_by_token"][c]])]
    rows += [(f"SEMANTIC_TOKEN_{c}", r["real_by_token"][c], r["gen_by_token"][c]) for c in tokens]
    fig = new_figure(3 * (len(METRICS) + 1), 2.2 * len(rows), dpi=80)
    sets = (("real val", "tab:blue"), ("generated", "tab:orange"))
    for (title, real, gen), axes in zip(rows, fig.subplots(len(rows), len(METRICS) + 1, squeeze=False)):
        for ax, key in zip(axes, METRICS):
            values = [finite([s[key] for s in x]) for x in (real, gen)]
            both = np.concatenate(values + [np.zeros(1)] * (not any(map(len, values))))
            bins = np.linspace(both.min(), max(both.max(), both.min() + 1e-6), 16)
            for v, (label, color) in zip(values, sets):  # y: the share of pieces, so sets of any size compare
                if len(v):
                    ax.hist(v, bins, weights=np.full(len(v), 1 / len(v)), alpha=0.5, color=color, label=label)
            ax.set_title(f"{title}: {METRICS[key]}" if key == "pc_entropy" else METRICS[key], fontsize=8)
            ax.ticklabel_format(axis="x", useOffset=False)  # 1.0, not 0.0 with "+1" in the corner
        for i, (x, (label, color)) in enumerate(zip((real, gen), sets)):
            if x:
                axes[-1].bar(np.arange(10) + 0.4 * i - 0.2, np.mean([s["durations"] for s in x], axis=0), 0.4,
                             color=color, label=label)
        quarters = [str(Fraction(int(e), tokenizer.STEPS_PER_QUARTER)) for e in DURATION_EDGES[:-1]]
        axes[-1].set_xticks(range(10), quarters, fontsize=7)
        axes[-1].set_title("durations (quarters, bin start)", fontsize=8)
        axes[-1].legend(fontsize=6)
    save_figure(fig, path)


# -----------------------------------------------------------------------------
# the evaluation

def load(out_dir, *, ckpt, data_dir, device, dtype, command):
    """The checkpoint, its dataset and the report's header fields -> (model, data, ctx, r)."""
    device, device_type, dtype = pick_device(device, dtype)
    model, ck = sample.load_model(ckpt or out_dir, device)
    data_dir = data_dir or ck.get("config", {}).get("data_dir", "data/music21")
    for name in ("semantic.json", "clusters.json"):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise UserError(f"no {os.path.join(data_dir, name)}; make it with: python cluster.py --data_dir {data_dir}")
    data = load_dataset(data_dir)
    r = dict(ckpt=ck["path"], iter=ck.get("iter_num"), data_dir=data_dir, device=f"{device} ({dtype})", dtype=dtype,
             command=command, labels=sample.token_labels(ck, data_dir), type_names=list(data["meta"]["blocks"]))
    return model, data, autocast(device_type, dtype), r


def fit_ceiling(r, data, *, max_pieces, max_tokens, seed):
    """The classifier that names the semantic token of real train pieces; its accuracy on real val pieces is
    the ceiling, always naming the largest cluster is chance. -> (classifier, train and val pieces)."""
    train_ids, train_stats = real_pieces(data, "train", max_pieces, max_tokens, seed)
    val_ids, val_stats = real_pieces(data, "val", max_pieces, max_tokens, seed)
    if not len(train_ids) or not len(val_ids):
        raise UserError(f"{r['data_dir']}/semantic.json gives no train or val piece a semantic id; re-run cluster.py")
    classifier = fit_classifier(train_stats, train_ids, seed)
    r["ceiling"] = float((classifier.predict(feature_matrix(val_stats)) == val_ids).mean())
    r["chance"] = float(np.bincount(val_ids).max() / len(val_ids))  # always naming the largest val cluster
    r["n_train"], r["n_val"], r["n_features"] = len(train_ids), len(val_ids), len(val_stats[0]["features"])
    r["tokens"] = sorted(set(train_ids.tolist()))  # the semantic tokens the model was trained with
    return classifier, (train_ids, train_stats), (val_ids, val_stats)


def generate_all(model, r, classifier, *, guidance, seed, sampling):
    """num_samples samples per token and guidance scale -> {(g, token): [piece_stats]}, tokens skipped per sample,
    and EXAMPLES_PER_TOKEN token rows per (g, token) for the report's page; adherence (the share the classifier
    names as the token asked for) goes into r."""
    gen, r["adherence"], r["adherence_by_token"], skipped, examples = {}, {}, {}, [], {}
    with tqdm(total=len(guidance) * len(r["tokens"]), desc="generating", unit="token", disable=None) as bar:
        for g in guidance:
            for c in r["tokens"]:  # the same seed at every guidance scale: paired samples
                rows = sample.generate_tokens(model, c, guidance=g, seed=seed + c, **sampling)
                decoded = [tokenizer.tokens_to_score(row) for row in rows]  # [(Score, tokens skipped)]
                gen[g, c] = [piece_stats(score) for score, _ in decoded]
                skipped += [n for _, n in decoded]
                examples[g, c] = rows[:EXAMPLES_PER_TOKEN]  # a few per token go on the report's page
                r["adherence_by_token"][g, c] = float((classifier.predict(feature_matrix(gen[g, c])) == c).mean())
                bar.update()
            r["adherence"][g] = float(np.mean([r["adherence_by_token"][g, c] for c in r["tokens"]]))
    r["chance_samples"] = 1 / len(r["tokens"])  # every token gets as many samples
    return gen, skipped, examples


def compare(r, gen, skipped, real_train, real_val):
    """Validity and closeness of the samples at the first guidance scale to real pieces of the same token."""
    (train_ids, train_stats), (val_ids, val_stats) = real_train, real_val
    r["valid_decode"] = float(np.mean(np.array(skipped) == 0))
    r["valid_bars"] = float(np.mean([s["all_bars"] for v in gen.values() for s in v]))
    r["real_bars"] = float(np.mean([s["all_bars"] for s in val_stats]))
    by_token = lambda ids, stats: {c: [s for s, i in zip(stats, ids) if i == c] for c in r["tokens"]}  # noqa: E731
    r["real_by_token"], r["train_by_token"] = by_token(val_ids, val_stats), by_token(train_ids, train_stats)
    r["gen_by_token"] = {c: gen[r["guidance"][0], c] for c in r["tokens"]}
    scale = {k: mean_std([s[k] for s in val_stats])[1] or 1.0 for k in METRICS}  # 1 for a metric constant in val
    r["closeness"] = {c: (closeness(r["real_by_token"][c], r["gen_by_token"][c], scale),
                          closeness(r["real_by_token"][c], r["train_by_token"][c], scale))
                      for c in r["tokens"] if r["real_by_token"][c]}
    first_gen = [s for c in r["tokens"] for s in r["gen_by_token"][c]]
    r["pooled"] = {k: [mean_std([s[k] for s in x]) for x in (val_stats, first_gen, train_stats)] for k in METRICS}


# -----------------------------------------------------------------------------
# 5. control: do the key, meter, tempo and instruments a prompt asks for show up in the notes?

CONTROL_PROMPTS = [  # a fixed set: every attribute alone, in pairs, and all four together
    "a tune in G major", "a melody in D minor", "a piece in E flat major", "a song in A minor",
    "something in F sharp minor", "a hymn in B flat major", "a sad song", "a happy tune",
    "a waltz", "a lively jig", "a march", "a slip jig", "a reel in 4/4", "a dance in 3/8",
    "an adagio", "a presto", "a slow air", "a fast tune", "a piece at 60 bpm", "a piece at 180 bpm",
    "a piano piece", "a chorale for choir", "a violin solo", "music for strings", "a flute melody",
    "a brass fanfare", "a piece for organ", "a duet for violin and cello",
    "a slow waltz in A minor", "a fast jig in D major", "a march in C major for brass", "an adagio for strings",
    "a sad chorale for choir", "a happy polka on the accordion", "a gentle lullaby in F major",
    "a minuet in G major for harpsichord", "a slow hymn in E minor for organ",
    "a lively reel in A major on the fiddle", "an allegro in 2/4 in B flat major for flute",
    "a slow chorale in C minor for voices", "a fast waltz in E major for piano", "a largo in 3/2 in F minor",
]


def wilson(hits, n, z=1.96):
    """95% Wilson interval of a share hits/n -> (low, high); (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    p, d = hits / n, 1 + z * z / n
    mid, half = (p + z * z / (2 * n)) / d, z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, mid - half), min(1.0, mid + half)


def fit_rhythm_classifiers(data, *, max_pieces, max_tokens, seed):
    """Meter and tempo word from the notes alone (describe.rhythm_features), trained on real val pieces (the model
    never saw them). Most bundled pieces set no tempo and play at MIDI's 120 bpm, so the tempo-word classifier
    also learns from each piece played once more at a random tempo (x0.5..x1.75: the same notes, other seconds).
    Ceiling: 5-fold cross-validated accuracy (a piece and its copy in the same fold); chance: the commonest
    label. -> {name: dict(model, ceiling, chance, n, labels)}."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import GroupKFold, cross_val_predict
    _, scores = real_scores(data, "val", max_pieces, max_tokens, seed, semantic_only=False)
    factors = 2 ** np.random.default_rng(seed).uniform(-1, 0.8, len(scores))
    retimed = [replace(score, tempos=[(step, bpm * f) for step, bpm in score.tempos]) for score, f in zip(scores, factors)]
    sets = {"meter": scores, "tempo word": scores + retimed}
    labels = {"meter": ["%d/%d" % describe.main_meter(score) for score in scores],
              "tempo word": [describe.tempo_word(describe.mean_bpm(score)) for score in scores + retimed]}
    out = {}
    for name, y in labels.items():
        x = np.stack([describe.rhythm_features(score) for score in sets[name]])            # (N, F)
        y, groups = np.array(y), np.arange(len(y)) % len(scores)
        forest = RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)
        guess = cross_val_predict(forest, x, y, cv=GroupKFold(5), groups=groups)
        values, counts = np.unique(y, return_counts=True)
        out[name] = dict(model=forest.fit(x, y), ceiling=float((guess == y).mean()), chance=float(counts.max() / len(y)),
                         n=len(y), labels=dict(zip(values.tolist(), counts.tolist())),
                         recall={v: float((guess[y == v] == v).mean()) for v in values.tolist()})  # per label
    return out


def realised(score, asked, key, classifiers, seen):
    """One sample against what its prompt asked -> {measure: hit (bool) or share (float)}, for the attributes
    asked for. key: the KEY_NAMES entry sampled with (a mode alone gets a tonic from the seed)."""
    m, out = describe.measure(score), {}
    if asked["key"]:
        out["key"] = m["key"] == key
    if asked["mode"]:
        out["mode"] = m["mode"] == asked["mode"]
    features = describe.rhythm_features(score)[None]                                          # (1, F)
    if asked["meter"]:
        out["meter"] = classifiers["meter"]["model"].predict(features)[0] == asked["meter"]
    if asked["tempo_bpm"]:
        out["tempo word"] = classifiers["tempo word"]["model"].predict(features)[0] == describe.tempo_word(asked["tempo_bpm"])
        level = tokenizer.tempo_level(asked["tempo_bpm"])
        out["tempo token"] = bool(score.tempos) and tokenizer.tempo_level(score.tempos[0][1]) == level
    target = {p for p in asked["instruments"] if p in seen}
    if target:
        sounding = set(m["instruments"])
        out["instrument recall"] = len(target & sounding) / len(target)
        out["instrument precision"] = len(sounding & set(asked["instruments"])) / len(sounding) if sounding else 0.0
    return out


CONTROL_MEASURES = ["key", "mode", "meter", "tempo word", "instrument recall", "instrument precision"]
CONTROL_TARGETS = {"key": 0.8, "mode": 0.8, "instrument recall": 0.9, "instrument precision": 0.9}  # meter: of ceiling


def control(model, r, data, classifiers, *, n_per_prompt, guidance, seed, sampling):
    """n_per_prompt samples per CONTROL_PROMPTS entry with its attributes (semantic token unspecified, so the
    attributes alone steer), and as many fully unconditional ones -> r["control"]."""
    seen, rows, jobs = data["programs_seen"], [], []
    for i, text in enumerate(CONTROL_PROMPTS):
        asked = describe.parse_prompt(text)
        attributes, _ = sample.prefix_attributes(asked, seed + i, seen)
        key = None if attributes["key"] is None else describe.KEY_NAMES[attributes["key"]]
        jobs += [(i, asked, attributes, key)] * n_per_prompt
    # Only the prefix asks: the piece's opening meter and tempo are left to the model (header=False), so what the
    # notes and the tempo token show is the model's doing. All prompts' samples go in one batch, the baseline in another.
    for conditioned in tqdm((True, False), desc="control samples", unit="batch", disable=None):
        samples = sample.generate_tokens(model, "SEMANTIC_UNCOND", attributes=[j[2] if conditioned else {} for j in jobs],
                                         n_samples=len(jobs), guidance=guidance if conditioned else 1.0, seed=seed,
                                         header=False, **sampling)
        for (i, asked, _, key), tokens in zip(jobs, samples):
            score = tokenizer.tokens_to_score(tokens)[0]
            rows.append(dict(prompt=i, conditioned=conditioned, hits=realised(score, asked, key, classifiers, seen)))
    summary = {}
    for name in CONTROL_MEASURES + ["tempo token"]:
        for conditioned in (True, False):
            values = [row["hits"][name] for row in rows if row["conditioned"] == conditioned and name in row["hits"]]
            n, mean = len(values), float(np.mean(values)) if values else float("nan")
            if name.startswith("instrument"):  # a share per sample: normal interval of the mean
                half = 1.96 * float(np.std(values)) / math.sqrt(n) if n > 1 else float("nan")
                ci = (max(0.0, mean - half), min(1.0, mean + half))
            else:
                ci = wilson(sum(values), n)
            summary[name, conditioned] = dict(n=n, mean=mean, ci=ci,
                                              prompts=len({row["prompt"] for row in rows if name in row["hits"]}))
    # What the classifier can read back of the labels the prompts ask for: its recall on real pieces of each,
    # averaged over the samples that ask. A meter no val piece has (or one it never names) counts as 0.
    asked_labels = {"meter": [j[1]["meter"] for j in jobs if j[1]["meter"]],
                    "tempo word": [describe.tempo_word(j[1]["tempo_bpm"]) for j in jobs if j[1]["tempo_bpm"]]}
    for name, labels in asked_labels.items():
        recall = classifiers[name]["recall"]
        classifiers[name]["prompt_ceiling"] = float(np.mean([recall.get(label, 0.0) for label in labels]))
    r["control"] = dict(rows=rows, summary=summary, guidance=guidance, n_per_prompt=n_per_prompt,
                        classifiers={k: {f: v[f] for f in ("ceiling", "prompt_ceiling", "chance", "n", "labels", "recall")}
                                     for k, v in classifiers.items()},
                        seen=sorted(seen))


def run(out_dir, *, ckpt=None, data_dir=None, num_samples=32, guidance=(1.0, 2.0, 3.0), max_new_tokens=512,
        max_windows=256, max_pieces=3000, temperature=1.0, top_p=0.95, seed=0, device="auto", dtype="auto",
        command="python evaluate.py", audio=False, control_samples=4, control_guidance=2.0):
    """Evaluate out_dir's newest checkpoint (or `ckpt`); write out_dir/eval/report.md and plots -> the results."""
    t_start, seconds = time.time(), {}
    model, data, ctx, r = load(out_dir, ckpt=ckpt, data_dir=data_dir, device=device, dtype=dtype, command=command)
    r |= dict(guidance=list(guidance), num_samples=num_samples, max_new_tokens=max_new_tokens)
    print(f"evaluating {r['ckpt']} (iter {r['iter']}) on {r['data_dir']}, {r['device']}")
    t0 = time.time()
    r["likelihood"] = likelihood(model, data, max_windows=max_windows, ctx=ctx, device=next(model.parameters()).device)
    seconds["likelihood"] = time.time() - t0
    print(f"likelihood: {r['likelihood']['windows']} val windows in {seconds['likelihood']:.1f} s")
    t0 = time.time()
    classifier, real_train, real_val = fit_ceiling(r, data, max_pieces=max_pieces, max_tokens=max_new_tokens + 1,
                                                   seed=seed)
    seconds["classifier"] = time.time() - t0
    print(f"classifier: {r['n_train']} train and {r['n_val']} val pieces in {seconds['classifier']:.1f} s")
    t0 = time.time()
    sampling = dict(n_samples=num_samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                    dtype=r["dtype"])
    gen, skipped, examples = generate_all(model, r, classifier, guidance=guidance, seed=seed, sampling=sampling)
    seconds["generation"] = time.time() - t0
    print(f"generation: {len(gen) * num_samples} samples in {seconds['generation']:.1f} s")
    compare(r, gen, skipped, real_train, real_val)
    if control_samples:
        t0 = time.time()
        classifiers = fit_rhythm_classifiers(data, max_pieces=max_pieces, max_tokens=max_new_tokens + 1, seed=seed)
        control(model, r, data, classifiers, n_per_prompt=control_samples, guidance=control_guidance, seed=seed,
                sampling={k: v for k, v in sampling.items() if k != "n_samples"})
        seconds["control"] = time.time() - t0
        print(f"control: {len(r['control']['rows'])} samples for {len(CONTROL_PROMPTS)} prompts in "
              f"{seconds['control']:.1f} s")
    eval_dir = os.path.join(out_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    for name, plot in (("likelihood", plot_likelihood), ("adherence", plot_adherence), ("closeness", plot_closeness)):
        plot(r, os.path.join(eval_dir, name + ".png"))
    r["seconds"] = seconds | {"total": time.time() - t_start}
    r["report"] = os.path.join(eval_dir, "report.md")
    tokenizer.write_atomic(r["report"], report(r))
    tokenizer.write_atomic(os.path.join(eval_dir, "summary.json"), json.dumps(summary(r), indent=1))
    r["page"] = write_report_page(r, examples, eval_dir, audio)
    return r


# -----------------------------------------------------------------------------
# the report and the printed summary

def pct(x):
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def num(x, digits=3):
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]) + "\n"


def label_of(r, c):
    return r["labels"][c] if c < len(r["labels"]) else ""


def headline(r):
    o = r["likelihood"]["overall"]
    loss, uni, g = float(o["loss"][0]), float(o["baseline_loss"][0]), r["guidance"]
    return "\n".join([
        f"{'':<30}{'model':>10}{'unigram':>10}",
        f"{'val loss (nats)':<30}{loss:>10.4f}{uni:>10.4f}",
        f"{'val perplexity':<30}{math.exp(loss):>10.2f}{math.exp(uni):>10.2f}",
        f"{'val next-token accuracy':<30}{pct(o['acc'][0]):>10}{pct(o['baseline_acc'][0]):>10}",
        "",
        f"{'adherence (classifier acc.)':<30}" + "".join(f"{f'guidance {x:g}':>13}" for x in g),
        f"{'  generated samples':<30}" + "".join(f"{pct(r['adherence'][x]):>13}" for x in g),
        f"{'  chance on samples':<30}" + f"{pct(r['chance_samples']):>13}" * len(g),
        f"{'  real val pieces (ceiling)':<30}{pct(r['ceiling']):>13}   chance on val {pct(r['chance'])}",
        "",
        f"validity: {pct(r['valid_decode'])} of samples decode with no token skipped, {pct(r['valid_bars'])} have "
        f"notes in every bar (real val pieces: {pct(r['real_bars'])})"] + headline_control(r))


def headline_control(r):
    if "control" not in r:
        return []
    c = r["control"]
    lines = ["", f"{'control (in the notes)':<30}{'conditioned':>13}{'uncond.':>13}   target"]
    for name, words, value, met in control_targets(r):
        lines.append(f"{'  ' + name:<30}{pct(value):>13}{pct(c['summary'][name, False]['mean']):>13}   "
                     f"{'met' if met else 'MISSED'}: {words}")
    return lines


def report_likelihood(r):
    lk, o = r["likelihood"], r["likelihood"]["overall"]
    types_, sem = lk["type"], lk["first"]
    sem_name = lambda i: label_of(r, i - tokenizer.semantic_token(0)) if i != tokenizer.UNCOND \
        else "(pieces without one)"  # noqa: E731
    return [
        "## 1. Likelihood\n",
        f"{lk['windows']} fixed windows of val.bin, {int(o['tokens'][0]):,} tokens scored; each window is led by its "
        "piece's attribute prefix (semantic token, key, meter, tempo, instruments, all measured from the piece) and "
        "starts on an event boundary, as in training. Unigram: the token frequencies of train.bin, add-one "
        "smoothed. *loss uncond*: the same windows with the whole prefix unspecified; conditioning gains "
        f"{o['loss_uncond'][0] - o['loss'][0]:+.4f} nats per token.\n",
        table(["", "loss (nats)", "perplexity", "accuracy", "loss uncond"],
              [["model", num(o["loss"][0], 4), f"{math.exp(o['loss'][0]):.2f}", pct(o["acc"][0]),
                num(o["loss_uncond"][0], 4)],
               ["unigram", num(o["baseline_loss"][0], 4), f"{math.exp(o['baseline_loss'][0]):.2f}",
                pct(o["baseline_acc"][0]), ""]]),
        "Loss with and without each attribute: the same windows with that one slot unspecified, the others given. "
        "Gain = loss without - loss with (nats per token; > 0: the model uses it).\n",
        table(["attribute", "loss with", "loss without", "gain"],
              [[slot, num(o["loss"][0], 4), num(o[f"loss_no_{slot}"][0], 4),
                f"{o[f'loss_no_{slot}'][0] - o['loss'][0]:+.4f}"] for slot in tokenizer.PREFIX_SLOTS] +
              [["all of them", num(o["loss"][0], 4), num(o["loss_uncond"][0], 4),
                f"{o['loss_uncond'][0] - o['loss'][0]:+.4f}"]]),
        "Per token type (of the target token):\n",
        table(["type", "tokens", "loss", "perplexity", "accuracy", "unigram loss"],
              [[name, f"{types_['tokens'][i]:,}", num(types_["loss"][i]), f"{math.exp(types_['loss'][i]):.2f}",
                pct(types_["acc"][i]), num(types_["baseline_loss"][i])]
               for i, name in enumerate(r["type_names"]) if types_["tokens"][i]]),
        "Per semantic token (of the window):\n",
        table(["token", "label", "tokens", "loss", "perplexity", "accuracy", "loss uncond", "unigram loss"],
              [[tokenizer.token_name(i), sem_name(i), f"{sem['tokens'][i]:,}", num(sem["loss"][i]),
                f"{math.exp(sem['loss'][i]):.2f}", pct(sem["acc"][i]), num(sem["loss_uncond"][i]),
                num(sem["baseline_loss"][i])] for i in np.flatnonzero(sem["tokens"])]),
        "![loss per token type](likelihood.png)\n"]


def report_adherence(r):
    g, n_tok = r["guidance"], r["max_new_tokens"]
    n = r["num_samples"] * len(r["tokens"])
    return [
        "## 2. Conditioning adherence\n",
        f"A random forest (200 trees) learns the semantic token from {r['n_features']} musical features (pitch-class "
        "histogram, the metrics of section 3, register, tempo, notes per second, instrument families and drums, "
        f"durations, velocity, meter) of {r['n_train']} real train pieces, each cut to its first {n_tok + 1} tokens "
        f"like a sample. Ceiling: its accuracy on the {r['n_val']} real val pieces that have a semantic id. "
        f"Adherence: its accuracy on {r['num_samples']} samples per token (top-p 0.95, at most {n_tok} new tokens) "
        f"at each guidance scale. Chance: always naming the largest cluster ({pct(r['chance'])} on val; "
        f"{pct(r['chance_samples'])} on the samples, as every token gets as many).\n",
        table(["", "ceiling (real val)", "chance (val)"] + [f"samples, guidance {x:g}" for x in g],
              [["all tokens", interval(dict(mean=r["ceiling"], ci=wilson(round(r["ceiling"] * r["n_val"]), r["n_val"]))),
                pct(r["chance"])] +
               [interval(dict(mean=r["adherence"][x], ci=wilson(round(r["adherence"][x] * n), n))) for x in g]]),
        f"Brackets: 95% Wilson intervals ({n} samples per guidance scale, {r['num_samples']} per token). Target: "
        f"adherence >= 80% of the ceiling ({pct(0.8 * r['ceiling'])}) at guidance <= 2, with the ceiling >= 2x "
        f"chance ({pct(2 * r['chance'])}): " + ("met" if max(r["adherence"].get(x, 0) for x in g if x <= 2) >=
                                                0.8 * r["ceiling"] and r["ceiling"] >= 2 * r["chance"] else
                                                "**missed**") + ".\n",
        "Per token: the share of its samples that the classifier names as that token.\n",
        table(["token", "label", "val pieces"] + [f"guidance {x:g}" for x in g],
              [[f"SEMANTIC_TOKEN_{c}", label_of(r, c), len(r["real_by_token"][c])] +
               [pct(r["adherence_by_token"][x, c]) for x in g] for c in r["tokens"]]),
        "![adherence](adherence.png)\n"]


def report_closeness(r):
    keys, closeness_ = list(METRICS) + ["durations"], r["closeness"]
    mean_of = lambda k, i: num(mean_std([pair[i][k] for pair in closeness_.values()])[0], 2)  # noqa: E731
    return [
        "## 3. Closeness to real music\n",
        f"Samples at guidance {r['guidance'][0]:g} against the real val pieces of the same token, both cut to "
        f"{r['max_new_tokens'] + 1} tokens. Metrics as in muspy: pitch-class entropy (bits, pitched notes), scale "
        "consistency (the largest share of notes in one major or natural minor scale), polyphony (mean number of "
        "notes sounding, over the steps where any does), note density (notes per beat), empty-beat rate (share of "
        "beats where no note starts).\n\n"
        "**Distance** d: |mean over the samples - mean over the real pieces|, in units of the metric's standard "
        "deviation over all real val pieces (0 = the same mean; as with Cohen's d, 0.2 is small, 0.5 medium, 0.8 "
        "large). Means are fair with a few samples per token, where histograms are noise. For durations: the "
        "overlapping area of the two mean duration histograms (1 = the same). In brackets, the same for the real "
        "*train* pieces of the token: how far two sets of real pieces lie apart, the floor to compare with.\n",
        table(["metric", "real val mean ± std", "generated mean ± std", "real train mean ± std"],
              [[METRICS[k]] + [f"{num(m)} ± {num(s)}" for m, s in r["pooled"][k]] for k in METRICS]),
        table(["token", "label", "val pieces"] + [f"d {METRICS[k]}" for k in METRICS] + ["durations overlap"],
              [[f"SEMANTIC_TOKEN_{c}", label_of(r, c), len(r["real_by_token"][c])] +
               [f"{num(gd[k], 2)} ({num(td[k], 2)})" for k in keys] for c, (gd, td) in closeness_.items()] +
              [["mean", "", ""] + [f"{mean_of(k, 0)} ({mean_of(k, 1)})" for k in keys]]),
        "![real vs generated](closeness.png)\n"]


def interval(summary):
    return f"{pct(summary['mean'])} [{pct(summary['ci'][0])}, {pct(summary['ci'][1])}]"


def control_targets(r):
    """-> [(measure, target as words, realised share, met?)] for the issue's targets that the control report covers."""
    c, out = r["control"], []
    for name in CONTROL_MEASURES:
        cond, base = c["summary"][name, True], c["summary"][name, False]
        if not cond["n"]:
            continue
        if name == "meter":  # the ceiling for what the prompts ask: the classifier's recall on those meters
            goal = 0.8 * c["classifiers"]["meter"]["prompt_ceiling"]
            words = f">= 80% of the classifier's ceiling on the meters asked ({pct(goal)}) and 2x unconditioned"
        elif name == "tempo word":
            goal, words = None, "2x unconditioned"
        else:
            goal = CONTROL_TARGETS[name]
            words = f">= {pct(goal)} and 2x unconditioned"
        met = (goal is None or cond["mean"] >= goal) and cond["mean"] >= 2 * base["mean"] and cond["mean"] > 0
        out.append((name, words, cond["mean"], met))
    return out


def report_control(r):
    c = r["control"]
    rows = []
    for name in CONTROL_MEASURES:
        cond, base = c["summary"][name, True], c["summary"][name, False]
        if cond["n"]:
            ratio = cond["mean"] / base["mean"] if base["mean"] else float("inf")
            rows.append([name, cond["prompts"], cond["n"], interval(cond), interval(base), f"{ratio:.1f}x"])
    targets = [[name, words, pct(value), "met" if met else "**missed**"] for name, words, value, met in control_targets(r)]
    tempo = c["summary"]["tempo token", True], c["summary"]["tempo token", False]
    classifier_rows = [[name, v["n"], pct(v["ceiling"]), pct(v["prompt_ceiling"]), pct(v["chance"]),
                        ", ".join(f"{label} {n} ({pct(v['recall'][label])})"
                                  for label, n in sorted(v["labels"].items(), key=lambda x: -x[1])[:9])]
                       for name, v in c["classifiers"].items()]
    per_prompt = []
    for i, text in enumerate(CONTROL_PROMPTS):
        hits = [row["hits"] for row in c["rows"] if row["prompt"] == i and row["conditioned"]]
        per_prompt.append([text] + [pct(np.mean([h[name] for h in hits])) if hits and name in hits[0] else ""
                                    for name in CONTROL_MEASURES])
    return [
        "## 5. Control: the attributes asked for, measured in the notes\n",
        f"{len(CONTROL_PROMPTS)} fixed prompts (evaluate.CONTROL_PROMPTS), read by describe.parse_prompt as "
        "`sample.py --prompt` reads them; each sets some of key, mode, meter, tempo and instruments in the attribute "
        "prefix, with the semantic token unspecified so the attributes alone steer, and nothing else forced (unlike "
        "`sample.py`, no opening meter or tempo token is written for the model). "
        f"{c['n_per_prompt']} samples per "
        f"prompt at guidance {c['guidance']:g}, and as many fully unconditional samples, each scored "
        "against the same prompt: the baseline. Measured from the decoded notes: key and mode by describe's "
        "Krumhansl-Schmuckler estimator; instruments by the programs that sound (recall: the share of the asked "
        "instruments that play, over instruments some training file has; precision: the share of the playing "
        "instruments that were asked for); meter and tempo word by random forests on rhythm features of the notes "
        "alone (no time-signature or tempo token is read), trained on real val pieces (for the tempo word, each "
        "also played once at a random tempo: most bundled pieces have none and play at 120 bpm). Brackets: 95% intervals "
        "(Wilson for shares, normal for the instrument means).\n",
        table(["measure", "prompts", "samples", "conditioned", "unconditioned", "ratio"], rows),
        "Targets (issue 11):\n",
        table(["measure", "target", "realised", ""], targets),
        f"Plumbing, not control: the tempo the samples' own first TEMPO token sets equals the tempo asked for in "
        f"{interval(tempo[0])} of conditioned samples ({interval(tempo[1])} unconditioned). That only shows the "
        "model copies the prefix's tempo into the stream; the tempo-word row above is what the notes do.\n",
        "The meter and tempo-word classifiers (5-fold cross-validated on real val pieces, cut to the samples' "
        "length; chance = always the commonest label). *Ceiling on the asked*: its recall on real pieces of the "
        "labels the prompts ask for, averaged over the samples that ask (the meter target is 80% of this). "
        "Labels with their val pieces and, in brackets, the classifier's recall on them:\n",
        table(["classifier", "pieces", "ceiling", "ceiling on the asked", "chance", "labels (commonest first)"],
              classifier_rows),
        "Per prompt (conditioned samples):\n",
        table(["prompt"] + CONTROL_MEASURES, per_prompt),
        f"Instruments some training file has: {', '.join(map(describe.instrument_name, c['seen']))}.\n"]


def summary(r):
    """The headline numbers as plain JSON (eval/summary.json), for comparing runs."""
    o = r["likelihood"]["overall"]
    out = dict(ckpt=r["ckpt"], iter=r["iter"], val_loss=float(o["loss"][0]),
               gain={"all": float(o["loss_uncond"][0] - o["loss"][0])} |
                    {slot: float(o[f"loss_no_{slot}"][0] - o["loss"][0]) for slot in tokenizer.PREFIX_SLOTS},
               adherence={f"{g:g}": r["adherence"][g] for g in r["guidance"]}, ceiling=r["ceiling"], chance=r["chance"],
               num_samples=r["num_samples"])
    if "control" in r:
        c = r["control"]
        out["control"] = {f"{name} {'conditioned' if cond else 'unconditioned'}": dict(v, ci=list(v["ci"]))
                          for (name, cond), v in c["summary"].items()}
        out["classifiers"] = c["classifiers"]
    return out


def report(r):
    return "\n".join([
        f"# Evaluation of {r['ckpt']} (iter {r['iter']})\n",
        f"Made by `{r['command']}` on {r['device']} in {r['seconds']['total']:.0f} s ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items() if k != "total")
        + f"). Data: `{r['data_dir']}`.\n",
        "```\n" + headline(r) + "\n```\n",
        *report_likelihood(r), *report_adherence(r), *report_closeness(r), *(report_control(r) if "control" in r else []),
        "## 4. Validity\n",
        f"Over all {len(r['guidance']) * len(r['tokens']) * r['num_samples']} samples. Sampling is constrained by "
        "tokenizer.py's grammar, so no skipped token is expected. A bar (its length from the time signature, 4/4 by "
        "default) counts as filled when a note sounds in it.\n",
        table(["", "samples", "real val pieces"],
              [["decode with no token skipped", pct(r["valid_decode"]), ""],
               ["notes in every bar", pct(r["valid_bars"]), pct(r["real_bars"])]])])


# -----------------------------------------------------------------------------
# the report's page: its tables as HTML, and a few samples per token to see and hear

EXAMPLES_PER_TOKEN = 2


def inline_html(text):
    """The markdown the report uses inside a line: `code`, **bold**, *italic*."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"\*([^*]+)\*", r"<i>\1</i>", text)


def markdown_html(md):
    """report()'s markdown -> HTML: headings, paragraphs, tables, code blocks and pictures; no more is needed."""
    out, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            end = lines.index("```", i + 1)
            out.append("<pre>" + html.escape("\n".join(lines[i + 1:end])) + "</pre>")
            i = end
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not set(lines[i]) <= set("|-: "):  # the |---| line under the header
                    rows.append([inline_html(c.strip()) for c in lines[i].strip("|").split(" | ")])
                i += 1
            i -= 1
            out.append("<table>" + "".join("<tr>" + "".join(f"<{t}>{c}</{t}>" for c in row) + "</tr>"
                                           for t, row in zip(["th"] + ["td"] * len(rows), rows)) + "</table>")
        elif m := re.fullmatch(r"!\[(.*)\]\((.*)\)", line):
            out.append(f'<img src="{html.escape(m[2])}" alt="{html.escape(m[1])}">')
        elif m := re.match(r"(#+) (.*)", line):
            out.append(f"<h{len(m[1]) + 1}>{inline_html(m[2])}</h{len(m[1]) + 1}>")  # h1 is the page's title
        elif line.strip():
            out.append(f"<p>{inline_html(line)}</p>")
        i += 1
    return "\n".join(out)


def write_report_page(r, examples, eval_dir, audio=False):
    """eval_dir/index.html: the report's tables and plots, then EXAMPLES_PER_TOKEN samples per token at the
    largest guidance scale (MIDI, piano roll, and a WAV with audio) in eval_dir/samples."""
    sample_dir, g = os.path.join(eval_dir, "samples"), max(r["guidance"])
    os.makedirs(sample_dir, exist_ok=True)
    written = []
    for c in r["tokens"]:
        for i, tokens in enumerate(examples[g, c]):
            path = os.path.join(sample_dir, f"SEMANTIC_TOKEN_{c}_g{g:g}_{i}.mid")
            title = f"SEMANTIC_TOKEN_{c}: {label_of(r, c)} (guidance {g:g}, sample {i})"
            score, _ = sample.write_sample(tokens, path, title)
            understood = {"token": f"SEMANTIC_TOKEN_{c}", "label": label_of(r, c), "guidance": g}
            written.append((path, score, title, understood))
    intro = '<div class="report">' + markdown_html(report(r).split("\n", 1)[1]) + "</div><h2>Samples</h2>"
    return sample.audio_and_gallery(written, eval_dir, audio, title=f"Evaluation of {r['ckpt']} (iter {r['iter']})",
                                    intro=intro)


def main(argv=None):
    p = argparse.ArgumentParser(description="Evaluate an AMT checkpoint: likelihood, adherence, closeness, validity.")
    p.add_argument("--out_dir", default=sample.OUT_DIR, help="the training run; the report goes to OUT_DIR/eval")
    p.add_argument("--ckpt", help="a checkpoint file, or 'best' for OUT_DIR/ckpt_best.pt; default the newest")
    p.add_argument("--data_dir", help="dataset folder; default the checkpoint's")
    p.add_argument("--num_samples", type=int, default=32, help="samples per semantic token and guidance scale")
    p.add_argument("--guidance", default="1,2,3", help="guidance scales, comma-separated")
    p.add_argument("--max_new_tokens", type=int, default=512, help="per sample; real pieces are cut to as many")
    p.add_argument("--max_windows", type=int, default=256, help="val windows scored for the likelihood")
    p.add_argument("--max_pieces", type=int, default=3000, help="real pieces per split for the classifier")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto = cuda, then mps, then cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--audio", action="store_true", help="render the samples on the report's page to WAV")
    p.add_argument("--control_samples", type=int, default=4,
                   help=f"samples per control prompt ({len(CONTROL_PROMPTS)} prompts; 0 = no control report)")
    p.add_argument("--control_guidance", type=float, default=2.0, help="guidance scale of the control samples")
    args = p.parse_args(argv)
    try:
        guidance = [float(x) for x in args.guidance.split(",")]
    except ValueError:
        raise UserError(f"--guidance {args.guidance!r}: give numbers separated by commas, e.g. 1,2,3") from None
    if min(args.num_samples, args.max_new_tokens, args.max_windows, args.max_pieces) < 1:
        raise UserError("--num_samples, --max_new_tokens, --max_windows and --max_pieces must be at least 1")
    ckpt = os.path.join(args.out_dir, "ckpt_best.pt") if args.ckpt == "best" else args.ckpt
    command = " ".join(["python evaluate.py"] + (sys.argv[1:] if argv is None else list(argv)))
    r = run(args.out_dir, ckpt=ckpt, data_dir=args.data_dir, num_samples=args.num_samples, guidance=guidance,
            max_new_tokens=args.max_new_tokens, max_windows=args.max_windows, max_pieces=args.max_pieces,
            temperature=args.temperature, top_p=args.top_p, seed=args.seed, device=args.device, dtype=args.dtype,
            command=command, audio=args.audio, control_samples=args.control_samples,
            control_guidance=args.control_guidance)
    print("\n" + headline(r) + f"\n\nwrote {r['report']}, {r['page']} and plots in {r['seconds']['total']:.0f} s")
    return r


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        sys.exit("interrupted")
