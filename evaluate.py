"""Evaluate an AMT checkpoint and its samples: writes OUT_DIR/eval/report.md, summary.json,
index.html and PNG plots, and prints a summary.

    python evaluate.py --out_dir out/amt_cpu          # 32 samples per token at guidance 1, 2 and 3
    python evaluate.py --out_dir out/amt --ckpt best --num_samples 32 --max_new_tokens 1024

1. Likelihood: val loss, perplexity and next-token accuracy on fixed val windows, overall, per
   token type and per semantic token, beside a unigram baseline (the token frequencies of
   train.bin).
2. Conditioning adherence: a random forest learns the semantic token of real train pieces from
   musical features. Its accuracy on real val pieces is the ceiling; on samples generated for each
   token (at each guidance scale) it is the adherence; always naming the largest cluster is chance.
3. Closeness to real music: per token, musical statistics of the samples against real val pieces.
4. Validity: samples that decode with no token skipped, and with notes in every bar.
5. Control: the key, mode, meter, tempo and instruments that prompts ask for, measured in the
   notes.

Each stage returns what it measured as a value (the dataclasses below). metrics.py holds what the
notes measure, control.py the control prompts and how their samples are made, and report.py
writes the report, the summary, the plots and the page from those values.
"""

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from tqdm import tqdm

import attributes
import checkpoints
import control
import dataset
import generation
import metrics
import plots
import prompt
import report
import texture
import tokenizer
from files import (
    UserError,
    check_output_folder,
    check_range,
    check_text,
    rebuild_command,
    run_script,
    write_atomic,
)
from generation import Sampling, add_device_flags, check_device, prompt_row
from metrics import METRICS, piece_stats
from model import autocast, pick_device, summed_loss_per

POSITIVE, GUIDANCE = dict(low=1), dict(low=0, note="1 = off, 0 = unconditional")
TOKEN_PATHS = ("user", "model", "token")  # section 2's: see Settings.token_path
EACH_SCALE = dict(note="each scale: 1 = off, 0 = unconditional")


def flag(default, help=None, *, check=None, **argparse_kw):
    """A Settings field: its default, the range its flag must be in (check: files.check_range's
    arguments), and how the flag reads (argparse's help, type, choices; lab: in the group of lab
    settings)."""
    return field(default=default, metadata=dict(help=help, check=check, **argparse_kw))


@dataclass
class Settings:
    """What evaluate.py measures and how: each field is the flag of its name, with its default."""

    out_dir: str = flag(checkpoints.OUT_DIR, "the training run; the report goes to OUT_DIR/eval")
    ckpt: str | None = flag(None, checkpoints.CKPT_HELP)
    data_dir: str | None = flag(None, "dataset folder; default the checkpoint's")
    num_samples: int = flag(32, "samples per semantic token and guidance scale", check=POSITIVE)
    guidance: tuple = flag(
        (1.0, 2.0, 3.0), "guidance scales, comma-separated", check=GUIDANCE | EACH_SCALE
    )
    max_new_tokens: int = flag(512, "per sample; real pieces are cut to as many", check=POSITIVE)
    max_windows: int | None = flag(
        None, "val windows scored for the likelihood; default all of them", type=int, check=POSITIVE
    )
    max_pieces: int = flag(3000, "real pieces per split for the classifier", check=POSITIVE)
    temperature: float = flag(1.0, check=dict(low=0, note="0 = greedy"))
    top_p: float = flag(0.95, check=dict(low=0, high=1, low_open=True, note="1 = off"))
    seed: int = flag(0, check=dict(low=0, high=prompt.SEED_MAX))
    device: str = flag("auto", cli=False)  # generation.add_device_flags: as every script has them
    dtype: str = flag("auto", cli=False)
    audio: bool = flag(False, "render the samples on the report's page to WAV")
    control_samples: int = flag(
        4,
        "samples per control prompt and path (0 = no control report)",
        check=dict(low=0, note="0 = no control report"),
    )
    control_guidance: float = flag(
        2.0,
        "guidance of the model-alone control samples (the user's path takes sample.py's)",
        check=GUIDANCE,
    )
    prompts: str = flag(
        "fixed,demo,readme",
        "control prompt sets, comma-separated: fixed, demo, readme, or text files of prompts (one "
        "a line)",
    )
    only: str | None = flag(
        None, "control: only sections 1 and 5 (no adherence samples)", choices=["control"]
    )
    paths: str = flag(
        ",".join(control.PATHS), f"control paths, comma-separated: {', '.join(control.PATHS)}"
    )
    token_path: str = flag(
        "user",
        "how section 2 samples each token: user (sample.py --token k with its defaults: what it "
        "leaves unnamed follows one of the token's pieces), model (that prefix, nothing forced) "
        "or token (the semantic token alone, nothing forced)",
        choices=list(TOKEN_PATHS),
    )
    # the lab settings of the user's path: left out, it is sample.py's default path
    semantic_from: str | None = flag(None, lab=True, choices=["prompt", "style", "none"])
    min_cosine: float | None = flag(None, lab=True, type=float, check=dict(low=-1, high=1))
    user_guidance: float | None = flag(None, lab=True, type=float, check=GUIDANCE)
    key_strength: float | None = flag(None, lab=True, type=float, check=dict(low=0, note="0 = off"))
    chord_strength: float | None = flag(None, lab=True, type=float, check=dict(low=0))
    no_turns: bool = flag(False, lab=True)
    any_instrument: bool = flag(False, lab=True)
    no_header: bool = flag(False, lab=True)

    def path_list(self):
        return [path for path in self.paths.split(",") if path]

    def sampling(self, dtype, **kwargs):
        """The Sampling of the samples that are not on the user's path."""
        return Sampling(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            dtype=dtype,
            **kwargs,
        )


@dataclass
class Setup:
    """What is evaluated, as loaded: the report's header."""

    ckpt: str
    iter: int
    data_dir: str
    device: str
    dtype: str
    command: str
    labels: list  # cluster label of each semantic id
    type_names: list  # meta.json's vocabulary blocks, in id order


# -----------------------------------------------------------------------------
# 1. likelihood


def likelihood(model, data, *, max_windows=None, ctx=nullcontext()):
    """checkpoints.split_loss on val.bin (every window unless max_windows), beside a unigram
    baseline (the token frequencies of train.bin, add-one smoothed) -> its tables "overall", "type"
    (meta.json block of the target) and "first" (by the window's semantic token id), the number of
    windows, and the val nats per note of the model and of the baseline. Each table also has
    loss_uncond (the whole prefix unspecified) and loss_no_<slot> (that slot alone unspecified:
    the semantic token, key, meter, tempo, instruments)."""
    V = model.config.vocab_size
    counts = np.bincount(np.asarray(data["train"]["tokens"]), minlength=V) + 1.0  # (V,) add-one
    variants = {"uncond": attributes.blank_prefix(attributes.PREFIX_SLOTS)} | {
        f"no_{slot}": attributes.blank_prefix([slot]) for slot in attributes.PREFIX_SLOTS
    }
    scored = checkpoints.split_loss(
        model,
        data,
        "val",
        ctx=ctx,
        max_windows=max_windows,
        variants=variants,
        baseline_nll=torch.from_numpy(-np.log(counts / counts.sum())),  # (V,)
    )
    baseline = dict(tokens=scored["type"]["tokens"], loss=scored["type"]["baseline_loss"])
    return scored | dict(baseline_nats_per_note=summed_loss_per(baseline, tokenizer.TYPE["NOTE"]))


# -----------------------------------------------------------------------------
# 2.-4. musical statistics of real and generated pieces (metrics.piece_stats)


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


def fit_ceiling(data, *, data_dir, max_pieces, max_tokens, seed):
    """The classifier that names the semantic token of real train pieces, with its ceiling and
    chance."""
    pieces = {}
    for split in ("train", "val"):  # (semantic ids, piece_stats) of the pieces that have an id
        files, scores = real_scores(
            data, split, max_pieces=max_pieces, max_tokens=max_tokens, seed=seed
        )
        pieces[split] = data[split]["semantic"][files], [piece_stats(score) for score in scores]
    if not len(pieces["train"][0]) or not len(pieces["val"][0]):
        raise UserError(
            f"{data_dir}/semantic.json gives no train or val piece a semantic id; re-run: "
            f"{rebuild_command(data_dir, 'cluster.py')}"
        )
    return metrics.semantic_ceiling(pieces["train"], pieces["val"], seed)


@dataclass
class Adherence:
    """Samples per semantic token and guidance scale, and how often the classifier names the token
    asked for."""

    share: dict  # guidance -> mean over tokens of the share named right
    by_token: dict  # (guidance, token) -> share named right
    chance: float  # on the samples: 1 / tokens (every token gets as many)
    stats: dict  # (guidance, token) -> [piece_stats]
    skipped: list  # tokens skipped in decoding, per sample
    examples: dict  # (guidance, token) -> the first report.EXAMPLES_PER_TOKEN token rows


def token_rows(ckpt, c, *, n, seed, path, data_dir):
    """n prompt rows for semantic token c, and the instruments each may play (None: any), on a
    section 2 path (TOKEN_PATHS): sample.py --token's Request per sample, seeded apart, so each
    follows its own piece of the token; or the token alone."""
    if path == "token":
        return [prompt_row(tokenizer.semantic_token(c))] * n, None
    asked, token = prompt.asked_attributes(None), tokenizer.semantic_name(c)
    requests = [
        prompt.request(ckpt, asked, token=token, seed=seed + 1000 * c + i, data_dir=data_dir)
        for i in range(n)
    ]
    if path == "model":
        return [
            prompt_row(tokenizer.semantic_token(c), r.prefix, header=False) for r in requests
        ], None
    return [r.rows(1)[0] for r in requests], [r.programs(1)[0] for r in requests]


def generate_all(model, ceiling, *, guidance, seed, n_samples, sampling, rows_of):
    """-> Adherence: n_samples samples of every trained token at each guidance scale (sampling: a
    generation.Sampling, its guidance and seed set here), the same seed at every scale: paired
    samples. rows_of: token -> (prompt rows, programs), token_rows on one path."""
    stats, by_token, skipped, examples = {}, {}, [], {}
    with tqdm(
        total=len(guidance) * len(ceiling.tokens), desc="generating", unit="token", disable=None
    ) as bar:
        for g in guidance:
            for c in ceiling.tokens:
                rows, programs = rows_of(c)
                at = replace(sampling, guidance=g, seed=seed + c)
                pieces = control.batched(model, rows, at, programs)
                decoded = [tokenizer.tokens_to_score(row) for row in pieces]  # (Score, skipped)
                stats[g, c] = [piece_stats(score) for score, _ in decoded]
                skipped += [n for _, n in decoded]
                examples[g, c] = pieces[: report.EXAMPLES_PER_TOKEN]
                named = ceiling.classifier.predict(metrics.feature_matrix(stats[g, c]))
                by_token[g, c] = float((named == c).mean())
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


def measure_samples(model, data, setup, *, settings, seconds, ckpt):
    """Sections 2-4: the ceiling, the samples per token at each guidance scale and their closeness
    -> (Ceiling, Adherence, Closeness)."""
    s = settings
    with stage(seconds, "classifier"):
        cut = dict(max_pieces=s.max_pieces, max_tokens=s.max_new_tokens + 1, seed=s.seed)
        ceiling = fit_ceiling(data, data_dir=setup.data_dir, **cut)
    print(
        f"classifier: {len(ceiling.real_train[0])} train and {len(ceiling.real_val[0])} val "
        f"pieces in {seconds['classifier']:.1f} s"
    )
    # the user's path samples with sample.py's defaults; the others with nothing forced
    user = replace(generation.SAMPLE_DEFAULTS, max_new_tokens=s.max_new_tokens, dtype=setup.dtype)
    sampling = user if s.token_path == "user" else s.sampling(setup.dtype)
    cached = {}

    def rows_of(c):  # the same rows at every guidance scale: paired samples
        if c not in cached:
            cached[c] = token_rows(
                ckpt, c, n=s.num_samples, seed=s.seed, path=s.token_path, data_dir=setup.data_dir
            )
        return cached[c]

    with stage(seconds, "generation"):
        adherence = generate_all(
            model,
            ceiling,
            guidance=s.guidance,
            seed=s.seed,
            n_samples=s.num_samples,
            sampling=sampling,
            rows_of=rows_of,
        )
    print(
        f"generation: {len(adherence.stats) * s.num_samples} samples in "
        f"{seconds['generation']:.1f} s"
    )
    closeness = metrics.compare(ceiling, adherence.stats, adherence.skipped, s.guidance)
    return ceiling, adherence, closeness


# -----------------------------------------------------------------------------
# 5. control: do the key, meter, tempo and instruments a prompt asks for show up in the notes?


@dataclass
class Control:
    """Section 5: what the control samples realised of what their prompts asked, on each path."""

    # per sample: set, prompt, path, hits {measure: hit or share}, ensemble, METRICS stats
    rows: list
    summary: dict  # (set, path, measure) -> n, mean, ci
    sets: dict  # set name -> [(prompt, flags)]
    path_words: dict  # per path: how its samples were made, in words
    n_per_prompt: int
    classifiers: dict  # meter and tempo word: ceiling, prompt_ceiling, chance, n, labels, recall
    seen: list  # GM programs some training file has
    # voices per instrument, 95th percentile: of the real val pieces in parts; of them all
    polyphony_p95: tuple
    # the ensemble yardstick (texture.yardstick) of the real val pieces in parts; None: none there
    ensemble: dict | None
    lab: dict  # the lab settings of the user's path (none: sample.py's defaults)
    closeness: dict  # set -> path -> metric -> (d of the samples, d of real train: the floor)


def control_rows(model, jobs, *, sampling, settings, yardsticks):
    """Every job's samples on each path, scored -> [row per sample]. yardsticks: the rhythm
    classifiers, the GM programs trained on, the polyphony thresholds, the ensemble ranges."""
    classifiers, seen, polyphony_p95, ensemble = yardsticks
    rows, n, lab = [], settings.control_samples, control.lab_settings(settings)
    for path in tqdm(settings.path_list(), desc="control paths", unit="path", disable=None):
        t0 = time.time()
        samples = control.path_samples(model, jobs, path, n=n, sampling=sampling, lab=lab)
        for job, tokens_of_job in zip(jobs, samples):
            for tokens in tokens_of_job:
                score = tokenizer.tokens_to_score(tokens)[0]
                hits = metrics.realised(
                    score,
                    job["asked"],
                    key=job["key"],
                    classifiers=classifiers,
                    seen=seen,
                    polyphony_p95=polyphony_p95,
                    ensemble=ensemble,
                )
                stats = piece_stats(score)
                row = dict(set=job["set"], prompt=job["prompt"], path=path, hits=hits)
                row["ensemble"] = texture.ensemble_values(score, job["asked"]["instruments"])
                rows.append(row | dict(stats={k: stats[k] for k in METRICS}))
        print(f"control, {path}: {len(jobs)} prompts x {n} in {time.time() - t0:.0f} s")
    return rows


def measure_control(model, data, ckpt, setup, *, settings):
    """Section 5 with its yardsticks: the meter and tempo-word classifiers, real val and train
    pieces (cut to 1,024 tokens) for closeness, the polyphony threshold and (the val pieces in
    parts, cut to the user's path length in seconds) the ensemble ranges -> Control."""
    s = settings
    cut = dict(max_pieces=s.max_pieces, seed=s.seed, semantic_only=False)
    classifiers = metrics.rhythm_classifiers(
        real_scores(data, "val", max_tokens=s.max_new_tokens + 1, **cut)[1], s.seed
    )
    real = {
        split: real_scores(data, split, max_tokens=1024, **cut)[1] for split in ("val", "train")
    }
    p95 = metrics.polyphony_thresholds(real["val"])
    ensemble = texture.yardstick(real["val"], control.USER_SECONDS)
    stats = {split: [piece_stats(score) for score in scores] for split, scores in real.items()}
    sampling = s.sampling(setup.dtype, guidance=s.control_guidance, seed=s.seed)
    sets, seen, lab = control.prompt_sets(s.prompts), data["programs_seen"], control.lab_settings(s)
    jobs = control.jobs(ckpt, sets, data_dir=setup.data_dir, seed=s.seed, lab=lab)
    rows = control_rows(
        model, jobs, sampling=sampling, settings=s, yardsticks=(classifiers, seen, p95, ensemble)
    )
    return Control(
        rows=rows,
        summary=metrics.summarise(rows),
        sets=sets,
        path_words=control.path_words(sampling, lab, s.path_list()),
        n_per_prompt=s.control_samples,
        seen=sorted(seen),
        polyphony_p95=p95,
        ensemble=ensemble,
        lab=lab,
        closeness=metrics.closeness_by_path(
            rows, sets, paths=control.PATHS, real_val=stats["val"], real_train=stats["train"]
        ),
        classifiers=metrics.classifier_summary(classifiers, [job["asked"] for job in jobs]),
    )


# -----------------------------------------------------------------------------
# the evaluation


@dataclass
class Results:
    """All that evaluate.py measured, stage by stage; report.py reads it."""

    settings: Settings
    setup: Setup
    likelihood: dict  # likelihood()'s tables
    ceiling: metrics.Ceiling | None  # sections 2-4: None with --only control
    adherence: Adherence | None
    closeness: metrics.Closeness | None
    control: Control | None
    seconds: dict  # stage -> seconds, and "total"
    report: str = ""  # where report.md and index.html were written
    page: str = ""


def load(settings, command):
    """The checkpoint and its dataset -> (model, checkpoint dict, data, autocast context, Setup)."""
    s = settings
    device, device_type, dtype = pick_device(s.device, s.dtype)
    model, ck = checkpoints.load_model(checkpoints.chosen(s.out_dir, s.ckpt), device)
    data_dir = checkpoints.data_dir(ck, s.data_dir)
    for name in ("semantic.json", "clusters.json"):
        if not os.path.exists(os.path.join(data_dir, name)):
            raise UserError(
                f"no {os.path.join(data_dir, name)}; make it with: "
                f"{rebuild_command(data_dir, 'cluster.py')}"
            )
    data = dataset.load_dataset(data_dir)
    setup = Setup(
        ckpt=ck["path"],
        iter=ck.get("iter_num"),
        data_dir=data_dir,
        device=f"{device} ({dtype})",
        dtype=dtype,
        command=command,
        labels=prompt.token_labels(ck, data_dir),
        type_names=list(data["meta"]["blocks"]),
    )
    return model, ck, data, autocast(device_type, dtype), setup


@contextmanager
def stage(seconds, name):
    """Records the wall time of the block in seconds[name]."""
    t0 = time.time()
    yield
    seconds[name] = time.time() - t0


def measure(model, data, setup, *, ctx, settings, ckpt):
    """Sections 1-5 (2-4 unless --only control) -> (Results less the written paths, example token
    rows for the page)."""
    s, seconds = settings, {}
    with stage(seconds, "likelihood"):
        lk = likelihood(model, data, max_windows=s.max_windows, ctx=ctx)
    print(f"likelihood: {lk['windows']} val windows in {seconds['likelihood']:.1f} s")
    ceiling = adherence = closeness = ctrl = None
    if s.only != "control":
        ceiling, adherence, closeness = measure_samples(
            model, data, setup, settings=s, seconds=seconds, ckpt=ckpt
        )
    if s.control_samples:
        with stage(seconds, "control"):
            ctrl = measure_control(model, data, ckpt, setup, settings=s)
        print(f"control: {len(ctrl.rows)} samples in {seconds['control']:.1f} s")
    results = Results(
        settings=s,
        setup=setup,
        likelihood=lk,
        ceiling=ceiling,
        adherence=adherence,
        closeness=closeness,
        control=ctrl,
        seconds=seconds,
    )
    return results, adherence.examples if adherence else {}


def run(settings, command="python evaluate.py"):
    """Evaluate out_dir's newest checkpoint (or settings.ckpt); write out_dir/eval/report.md,
    summary.json, index.html and plots -> Results."""
    t_start = time.time()
    model, ck, data, ctx, setup = load(settings, command)
    print(f"evaluating {setup.ckpt} (iter {setup.iter}) on {setup.data_dir}, {setup.device}")
    results, examples = measure(model, data, setup, ctx=ctx, settings=settings, ckpt=ck)
    eval_dir = os.path.join(settings.out_dir, "eval")
    os.makedirs(eval_dir, exist_ok=True)
    plots.write_plots(results, eval_dir)
    results.seconds["total"] = time.time() - t_start
    results.report = os.path.join(eval_dir, "report.md")
    write_atomic(results.report, report.report(results))
    summary = json.dumps(report.summary(results), indent=1)
    write_atomic(os.path.join(eval_dir, "summary.json"), summary)
    results.page = report.write_page(results, examples, eval_dir, settings.audio)
    return results


# -----------------------------------------------------------------------------
# the command line: a flag per Settings field


def check_settings(s):
    """Every flag in its range, and the report's folder writable, before anything loads: one line
    that names the flag, its value and what is allowed."""
    for f in fields(s):
        value, check = getattr(s, f.name), f.metadata["check"]
        if check and value is not None:
            for v in value if isinstance(value, tuple) else [value]:
                check_range(f"--{f.name}", v, **check)
    for name in ("out_dir", "ckpt", "data_dir", "prompts", "paths"):
        check_text(f"--{name}", getattr(s, name))
    unknown = [path for path in s.path_list() if path not in control.PATHS]
    if unknown or not s.path_list():
        what = f"no path {unknown[0]!r}" if unknown else "it names no path"
        raise UserError(
            f"--paths {s.paths!r}: {what}; give one or more of {', '.join(control.PATHS)}, "
            "comma-separated"
        )
    check_device(s.device, "--device")
    check_output_folder(os.path.join(s.out_dir, "eval"))
    # a prompt file that is not there, or not UTF-8 text, fails here, before the model loads
    control.prompt_sets(s.prompts)


def parse_settings(argv=None):
    """The command line -> Settings: each field's flag, its default the field's."""
    p = argparse.ArgumentParser(
        description="Evaluate an AMT checkpoint: likelihood, adherence, closeness, validity."
    )
    lab = p.add_argument_group(
        "lab settings of the user's path (ablations; left out, it is sample.py's default path)"
    )
    add_device_flags(p)
    for f in fields(Settings):
        kw = {k: v for k, v in f.metadata.items() if k != "check"}
        if not kw.pop("cli", True):
            continue
        group = lab if kw.pop("lab", False) else p
        if isinstance(f.default, bool):
            group.add_argument(f"--{f.name}", action="store_true", **kw)
        elif isinstance(f.default, tuple):  # numbers, comma-separated
            group.add_argument(f"--{f.name}", default=",".join(f"{x:g}" for x in f.default), **kw)
        else:
            kw.setdefault("type", str if f.default is None else type(f.default))
            group.add_argument(f"--{f.name}", default=f.default, **kw)
    args = p.parse_args(argv)
    try:
        guidance = tuple(float(x) for x in args.guidance.split(","))
    except ValueError:
        raise UserError(
            f"--guidance {args.guidance!r}: give numbers separated by commas, e.g. 1,2,3"
        ) from None
    settings = Settings(**vars(args) | dict(guidance=guidance))
    check_settings(settings)
    return settings


def main(argv=None):
    settings = parse_settings(argv)
    command = " ".join(["python evaluate.py"] + (sys.argv[1:] if argv is None else list(argv)))
    res = run(settings, command)
    print(
        "\n"
        + report.headline(res)
        + f"\n\nwrote {res.report}, {res.page} and plots in {res.seconds['total']:.0f} s"
    )
    return res


if __name__ == "__main__":
    run_script(main)
