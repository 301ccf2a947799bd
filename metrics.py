"""What notes measure, for evaluate.py's report: the statistics that compare generated with real
music, features of the rhythm alone, a second key estimate, the distance between two sets of
pieces, the random forests that read a piece's semantic token, meter and tempo word back from its
notes, and what a control sample realised of what its prompt asked for."""

import math
from dataclasses import dataclass, replace

import numpy as np

import attributes
import chords
import describe
import texture
import tokenizer
from describe import DRUMS, end_step, main_meter, mean_bpm, segments, sounding_per_step
from files import UserError
from tokenizer import seconds_at

# -----------------------------------------------------------------------------
# numeric statistics of a piece, real or generated

MAJOR, MINOR = np.array([0, 2, 4, 5, 7, 9, 11]), np.array([0, 2, 3, 5, 7, 8, 10])  # natural minor
DURATION_EDGES = [1, 2, 3, 4, 6, 9, 12, 18, 24, 48, np.inf]  # grid steps (12 = a quarter): 10 bins
METRICS = {
    "pc_entropy": "pitch-class entropy (bits)",
    "scale": "scale consistency",
    "polyphony": "polyphony",
    "density": "note density (notes/beat)",
    "empty_beats": "empty-beat rate",
}


def bar_starts(score, end):
    """Grid steps where bars start, from the time signatures (4/4 by default)."""
    starts, at = [], 0
    for steps, num, den in segments(score.time_signatures, (4, 4), end):
        starts += range(at, at + steps, max(1, num * tokenizer.STEPS_PER_QUARTER * 4 // den))
        at += steps
    return starts


def piece_stats(score):
    """A Score -> dict of the METRICS (as muspy defines them; nan where one does not apply, e.g.
    pitch classes of drums), the duration histogram, whether a note sounds in every bar, and a
    feature vector for classifiers."""
    spq, notes, end = tokenizer.STEPS_PER_QUARTER, score.notes, end_step(score)
    pitch = np.array([n.pitch for n in notes if n.program != DRUMS], dtype=np.int64)  # (P,)
    program = np.array([n.program for n in notes], dtype=np.int64)  # (N,)
    pc = np.bincount(pitch % 12, minlength=12) / max(len(pitch), 1)  # (12,) shares
    sounding = sounding_per_step(notes, end)  # (end,) notes on
    share = pc[pc > 0]
    in_scale = [pc[(sc + tonic) % 12].sum() for sc in (MAJOR, MINOR) for tonic in range(12)]
    s = dict(
        pc_entropy=-(share * np.log2(share)).sum() if len(pitch) else np.nan,  # 0: one class
        scale=max(in_scale) if len(pitch) else np.nan,  # the largest share in one scale
        polyphony=texture.mean_sounding(sounding),  # while any note sounds
        density=len(notes) / (end / spq),
        empty_beats=1 - len({n.onset // spq for n in notes}) / math.ceil(end / spq),
        durations=np.histogram([n.duration for n in notes], DURATION_EDGES)[0]
        / max(len(notes), 1),  # (10,)
        all_bars=bool(notes)
        and bool(np.maximum.reduceat(sounding > 0, bar_starts(score, end)).all()),
    )
    seconds = float(seconds_at(end, score.tempos))
    # (17,) notes per GM family, 16 = drums
    families = np.bincount(np.where(program == DRUMS, 16, program // 8), minlength=17)
    register = [*np.percentile(pitch, [5, 50, 95]), pitch.std()] if len(pitch) else [np.nan] * 4
    meter = main_meter(score)
    s["features"] = np.concatenate(
        [
            pc,
            [s[k] for k in METRICS],
            register,
            [
                math.log2(mean_bpm(score)),
                len(notes) / seconds,
                len(set(program.tolist())),
                np.mean([n.velocity for n in notes] or [0]),
            ],
            families / max(len(notes), 1),
            s["durations"],
            [meter == ts for ts in tokenizer.TIME_SIGNATURES],
        ]
    ).astype(float)
    return s


def feature_matrix(stats):
    """piece_stats of N pieces -> (N, F) their feature vectors, -1 where a feature does not
    apply."""
    return np.nan_to_num(np.stack([s["features"] for s in stats]), nan=-1.0)  # (N, F)


# Bar lengths (grid steps) whose onset patterns tell meters apart: 2/4, 3/8, 3/4 or 6/8, 4/4, 9/8,
# 12/8 or 3/2
BAR_STEPS = [24, 18, 36, 48, 54, 72]
# seconds between onsets
IOI_EDGES_S = [0, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, np.inf]


def rhythm_features(score):
    """Features of the notes alone (no time signature or tempo token is read, only onsets, durations
    and the seconds they fall on) for the meter and tempo-word classifiers: for each bar length of
    BAR_STEPS, where the onsets fall in it (weighted by duration, so long notes mark strong beats);
    the intervals between onsets in grid steps and in seconds; notes per second and per beat."""
    spq, notes = tokenizer.STEPS_PER_QUARTER, score.notes
    if not notes:
        return np.zeros(sum(b // 3 for b in BAR_STEPS) + 12 + len(IOI_EDGES_S) - 1 + 3)
    onset = np.array([n.onset for n in notes])  # (N,)
    weight = np.array([min(n.duration, 4 * spq) for n in notes], dtype=float)  # (N,)
    phases = [
        np.bincount(onset % bar // 3, weights=weight, minlength=bar // 3) / weight.sum()
        for bar in BAR_STEPS
    ]
    starts = np.unique(onset)
    ioi = np.diff(starts)  # (U-1,) steps
    ioi_steps = np.bincount(np.minimum(ioi, 12 * 4) // 4, minlength=13)[:12]  # (12,)
    ioi_steps = ioi_steps / max(len(ioi), 1)
    seconds = np.diff(seconds_at(starts, score.tempos))  # (U-1,)
    ioi_seconds = np.histogram(seconds, IOI_EDGES_S)[0] / max(len(seconds), 1)
    total = float(seconds_at(end_step(score), score.tempos))
    return np.concatenate(
        [
            *phases,
            ioi_steps,
            ioi_seconds,
            [
                len(notes) / max(total, 1e-3),
                len(notes) / max(end_step(score) / spq, 1),
                np.median(seconds) if len(seconds) else 0.0,
            ],
        ]
    )


def music21_key(notes):
    """A second key estimate: music21's analyze('key') on the pitched notes -> a KEY_NAMES entry, or
    None for drums only or a mode other than major and minor. music21 is installed for the bundled
    corpus; it is imported here only, as it takes a second to import."""
    from music21 import note as m21note
    from music21 import stream

    part = stream.Stream()
    for n in notes:
        if n.program != DRUMS:
            part.insert(
                n.onset / tokenizer.STEPS_PER_QUARTER,
                m21note.Note(n.pitch, quarterLength=n.duration / tokenizer.STEPS_PER_QUARTER),
            )
    if not len(part):
        return None
    found = part.analyze("key")
    return (
        describe.key_name(found.tonic.name, found.mode)
        if found.mode in ("major", "minor")
        else None
    )


# -----------------------------------------------------------------------------
# how far two sets of pieces lie apart


def finite(values):
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]  # without the nan of a metric that does not apply


def mean_std(values):
    v = finite(values)
    return (v.mean(), v.std()) if len(v) else (np.nan, np.nan)


def scale_of(real):
    """metric -> its standard deviation over the real pieces, the unit of distance (1 for a metric
    that is constant there)."""
    return {k: mean_std([s[k] for s in real])[1] or 1.0 for k in METRICS}


def distance(real, other, scale):
    """metric -> |mean over other - mean over real| in units of scale (as Cohen's d: 0.2 is small,
    0.8 large)."""
    return {
        k: abs(mean_std([s[k] for s in other])[0] - mean_std([s[k] for s in real])[0]) / scale[k]
        for k in METRICS
    }


def closeness(real, gen, scale):
    """Distance of generated from real pieces, per metric, and for durations the overlapping area
    of the mean histograms (1 = same)."""
    d = distance(real, gen, scale)
    d["durations"] = float(
        np.minimum(*(np.mean([s["durations"] for s in x], axis=0) for x in (real, gen))).sum()
    )
    return d


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


def compare(ceiling, stats, skipped, guidance):
    """Validity of the samples (stats: (guidance, token) -> [piece_stats]; skipped: the tokens
    each skipped in decoding) and closeness of those at the first guidance scale to real pieces of
    the same token -> Closeness."""
    (train_ids, train_stats), (val_ids, val_stats) = ceiling.real_train, ceiling.real_val
    by_token = lambda ids, pieces: {
        c: [s for s, i in zip(pieces, ids) if i == c] for c in ceiling.tokens
    }
    real_by_token, train_by_token = by_token(val_ids, val_stats), by_token(train_ids, train_stats)
    gen_by_token = {c: stats[guidance[0], c] for c in ceiling.tokens}
    scale = scale_of(val_stats)
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
        valid_decode=float(np.mean(np.array(skipped) == 0)),
        valid_bars=float(np.mean([s["all_bars"] for v in stats.values() for s in v])),
        real_bars=float(np.mean([s["all_bars"] for s in val_stats])),
        real_by_token=real_by_token,
        gen_by_token=gen_by_token,
        distance=distance,
        pooled={
            k: [mean_std([s[k] for s in x]) for x in (val_stats, first_gen, train_stats)]
            for k in METRICS
        },
    )


def closeness_by_path(rows, sets, *, paths, real_val, real_train):
    """Per set and path of the control rows: distance of the samples from real val pieces per
    metric, beside the same for real train pieces (the floor two sets of real music lie apart)."""
    scale = scale_of(real_val)
    floor = distance(real_val, real_train, scale)
    out = {}
    for name in sets:
        for path in paths:
            stats = [row["stats"] for row in rows if row["set"] == name and row["path"] == path]
            if stats:
                d = distance(real_val, stats, scale)
                out.setdefault(name, {})[path] = {k: (d[k], floor[k]) for k in METRICS}
    return out


# -----------------------------------------------------------------------------
# random forests that read a piece back from its notes


def forest(seed):
    """The classifier of every reading: a random forest of 200 trees."""
    from sklearn.ensemble import RandomForestClassifier  # imported here: sklearn is slow to import

    return RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=-1)


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


def semantic_ceiling(real_train, real_val, seed=0):
    """A forest that names the semantic token of real train pieces from their features, with its
    accuracy on real val pieces (the ceiling) and chance. real_*: (semantic ids, piece_stats)."""
    (train_ids, train_stats), (val_ids, val_stats) = real_train, real_val
    classifier = forest(seed).fit(feature_matrix(train_stats), train_ids)
    return Ceiling(
        classifier=classifier,
        ceiling=float((classifier.predict(feature_matrix(val_stats)) == val_ids).mean()),
        chance=float(np.bincount(val_ids).max() / len(val_ids)),
        tokens=sorted(set(train_ids.tolist())),
        real_train=real_train,
        real_val=real_val,
        n_features=len(val_stats[0]["features"]),
    )


def rhythm_classifiers(scores, seed):
    """Meter and tempo word from the notes alone (rhythm_features), trained on real val pieces (the
    model never saw them). Most bundled pieces set no tempo and play at MIDI's 120 bpm, so the
    tempo-word classifier also learns from each piece played once more at a random tempo
    (x0.5..x1.75: the same notes, other seconds). Ceiling: 5-fold cross-validated accuracy (a piece
    and its copy in the same fold); chance: the commonest label. -> {name: dict(model, ceiling,
    chance, n, labels, recall)}."""
    from sklearn.model_selection import GroupKFold, cross_val_predict

    if len(scores) < 2:
        raise UserError(
            "the control report's classifiers need at least 2 val pieces, the data has "
            f"{len(scores)}; add MIDI files or run with --control_samples 0"
        )
    factors = 2 ** np.random.default_rng(seed).uniform(-1, 0.8, len(scores))
    retimed = [
        replace(score, tempos=[(step, bpm * f) for step, bpm in score.tempos])
        for score, f in zip(scores, factors)
    ]
    sets = {"meter": scores, "tempo word": scores + retimed}
    labels = {
        "meter": ["%d/%d" % main_meter(score) for score in scores],
        "tempo word": [describe.tempo_word(mean_bpm(score)) for score in scores + retimed],
    }
    out = {}
    for name, y in labels.items():
        x = np.stack([rhythm_features(score) for score in sets[name]])  # (N, F)
        y, groups, model = np.array(y), np.arange(len(y)) % len(scores), forest(seed)
        guess = cross_val_predict(model, x, y, cv=GroupKFold(min(5, len(scores))), groups=groups)
        values, counts = np.unique(y, return_counts=True)
        model.fit(x, y).set_params(n_jobs=1)  # it then reads one sample at a time: threads wait
        out[name] = dict(
            model=model,
            ceiling=float((guess == y).mean()),
            chance=float(counts.max() / len(y)),
            n=len(y),
            labels=dict(zip(values.tolist(), counts.tolist())),
            recall={v: float((guess[y == v] == v).mean()) for v in values.tolist()},  # per label
        )
    return out


def classifier_summary(classifiers, asks):
    """rhythm_classifiers less the fitted forests, with each one's prompt_ceiling: what it can read
    back of the labels the prompts ask for (its recall on real pieces of each, averaged over the
    prompts that ask; a meter no val piece has, or one it never names, counts as 0)."""
    asked_labels = {
        "meter": [a["meter"] for a in asks if a["meter"]],
        "tempo word": [describe.tempo_word(a["tempo_bpm"]) for a in asks if a["tempo_bpm"]],
    }
    ceilings = {
        name: float(np.mean([classifiers[name]["recall"].get(label, 0.0) for label in labels]))
        if labels
        else 0.0
        for name, labels in asked_labels.items()
    }
    return {
        k: dict(
            ceiling=v["ceiling"],
            prompt_ceiling=ceilings[k],
            **{f: v[f] for f in ("chance", "n", "labels", "recall")},
        )
        for k, v in classifiers.items()
    }


# -----------------------------------------------------------------------------
# control: what a sample realised of what its prompt asked for

# Every measure of the control report, in its order; realised() scores those a prompt asks for.
# "tempo token" is plumbing: the sample's own first tempo is the one asked.
CONTROL_MEASURES = [
    *attributes.CONTROL_ROWS,
    "polyphony outlier",
    "polyphony outlier (all real)",
    *texture.ROWS,
    *attributes.TOKEN_ROWS,
]
# the headline measures: one column each in the tables per prompt and per run
PER_PROMPT_MEASURES = [*attributes.PER_PROMPT_ROWS, "polyphony outlier", texture.ROWS[0]]
assert set(PER_PROMPT_MEASURES) <= set(CONTROL_MEASURES), "a headline measure nothing scores"


def realised(score, asked, *, key, classifiers, seen, polyphony_p95=None, ensemble=None):
    """One sample against what its prompt asked -> {measure: hit (bool) or share (float)}, for the
    attributes asked for. key: the KEY_NAMES entry sampled with (a mode alone gets a tonic from the
    seed). With polyphony_p95 (polyphony_thresholds), also whether its voices per instrument lie
    above each threshold, whatever was asked; with ensemble (texture.yardstick), where two or more
    instruments are asked, whether its parts play together as real pieces in parts do."""
    m, out = describe.measure(score), {}
    second = music21_key(score.notes) if asked["key"] or asked["mode"] else None
    if asked["key"]:
        out["key"], out["key (music21)"] = m["key"] == key, second == key
    if asked["mode"]:
        out["mode"] = m["mode"] == asked["mode"]
        out["mode (music21)"] = second is not None and second.split()[-1] == asked["mode"]
    features = rhythm_features(score)[None]  # (1, F)
    if asked["meter"]:
        out["meter"] = classifiers["meter"]["model"].predict(features)[0] == asked["meter"]
    if asked["tempo_bpm"]:
        word = classifiers["tempo word"]["model"].predict(features)[0]
        out["tempo word"] = word == describe.tempo_word(asked["tempo_bpm"])
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
    if asked.get("chords"):
        out["chords"] = chord_match(m["chords"], asked["chords"])
    if polyphony_p95 is not None:
        voices = describe.voices_per_instrument(score.notes)
        out["polyphony outlier"], out["polyphony outlier (all real)"] = (
            voices > p for p in polyphony_p95
        )
    return out | texture.realised(score, asked["instruments"], ensemble)


def chord_match(measured, asked):
    """The share of a piece's bars whose chord (describe.measure's, per bar) has the root and triad
    class of the one planned for it: the asked progression, cycled bar by bar. A bar without a
    chord misses."""
    planned = [chords.triad(c) for c in asked]
    hits = [
        c is not None and chords.triad(chords.parse_symbol(c)) == planned[i % len(planned)]
        for i, c in enumerate(measured)
    ]
    return float(np.mean(hits)) if hits else 0.0


def polyphony_thresholds(scores):
    """The 95th percentile of voices per instrument over real pieces: of those in parts (chorales,
    madrigals, quartets), the main yardstick; and of them all, the strict one, which is 1 where the
    corpus is mostly single lines, so that any part-song reads as an outlier there."""
    voices = np.array([describe.voices_per_instrument(score.notes) for score in scores])
    return (
        float(np.percentile(voices[voices > 1] if (voices > 1).any() else voices, 95)),
        float(np.percentile(voices, 95)),
    )


def wilson(hits, n):
    """95% Wilson interval of a share hits/n (scipy's binomtest) -> (low, high); (nan, nan) for
    n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest  # comes with scikit-learn; imported here: slow to import

    ci = binomtest(int(hits), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return float(ci.low), float(ci.high)


def summarise(rows):
    """Per (set, path, measure) of the control rows: n, mean, 95% interval (Wilson for hits, normal
    for the instrument shares)."""
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
