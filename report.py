"""The evaluation's report, from what evaluate.py measured (its Results): the plots, report.md, the
headline numbers as JSON (summary.json), the summary printed at the end, and the page beside them
(index.html) with a few samples per token to see and hear."""

import math
import os

import numpy as np

import attributes
import describe
import metrics
import render
import texture
import tokenizer
from metrics import METRICS
from render import markdown_table as table

EXAMPLES_PER_TOKEN = 2  # samples per token on the page, at the largest guidance scale
TOKEN_PATH = dict(  # evaluate.TOKEN_PATHS, in words
    user="`sample.py --token k`'s defaults: what is unnamed follows one of the token's pieces",
    model="its prefix as sample.py --token k makes it, nothing forced, top-p 0.95",
    token="the semantic token alone, nothing forced, top-p 0.95",
)
# The control targets on the user's path, (for the demo model, for the long CPU preset): TARGETS
# at least, CEILINGS at most
TARGETS = {
    "key": (0.6, 0.8),
    "key (music21)": (0.6, 0.8),
    "mode": (0.85, 0.9),
    "instruments exact": (0.95, 0.95),
    "ensemble in range": (0.8, 0.8),
}
CEILINGS = {"polyphony outlier": (0.10, 0.05), "polyphony outlier (all real)": (0.10, 0.05)}


def pct(x):
    return "n/a" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def num(x, digits=3):
    return "n/a" if not np.isfinite(x) else f"{x:.{digits}f}"


def interval(summary):
    return f"{pct(summary['mean'])} [{pct(summary['ci'][0])}, {pct(summary['ci'][1])}]"


def share_interval(share, n):
    """A share of n, with its 95% Wilson interval."""
    return interval(dict(mean=share, ci=metrics.wilson(round(share * n), n)))


def label_of(setup, c):
    return setup.labels[c] if c < len(setup.labels) else ""


def token_cells(res, c):
    """A semantic token's first cells in the tables per token: its name, label and val pieces."""
    return [tokenizer.semantic_name(c), label_of(res.setup, c), len(res.closeness.real_by_token[c])]


# -----------------------------------------------------------------------------
# the printed summary


def headline(res):
    o, a, ce, cl = res.likelihood["overall"], res.adherence, res.ceiling, res.closeness
    loss, uni, g = float(o["loss"][0]), float(o["baseline_loss"][0]), res.settings.guidance
    lines = [
        f"{'':<30}{'model':>10}{'unigram':>10}",
        f"{'val loss (nats)':<30}{loss:>10.4f}{uni:>10.4f}",
        f"{'val nats per note':<30}{res.likelihood['nats_per_note']:>10.3f}"
        f"{res.likelihood['baseline_nats_per_note']:>10.3f}",
        f"{'val perplexity':<30}{math.exp(loss):>10.2f}{math.exp(uni):>10.2f}",
        f"{'val next-token accuracy':<30}{pct(o['acc'][0]):>10}{pct(o['baseline_acc'][0]):>10}",
    ]
    if a is not None:
        lines += [
            "",
            f"{'adherence (classifier acc.)':<30}" + "".join(f"{f'guidance {x:g}':>13}" for x in g),
            f"{'  generated samples':<30}" + "".join(f"{pct(a.share[x]):>13}" for x in g),
            f"{'  chance on samples':<30}" + f"{pct(a.chance):>13}" * len(g),
            f"{'  real val pieces (ceiling)':<30}{pct(ce.ceiling):>13}   chance on val "
            f"{pct(ce.chance)}",
            "",
            f"validity: {pct(cl.valid_decode)} of samples decode with no token skipped, "
            f"{pct(cl.valid_bars)} have notes in every bar (real val pieces: {pct(cl.real_bars)})",
        ]
    return "\n".join(lines + headline_control(res.control))


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
            mean = lambda path: c.summary.get((name, path, m), {}).get("mean", float("nan"))
            base, model = mean("none-user"), mean("model")
            lines.append(
                f"{'  ' + m:<30}{pct(value):>11}{pct(base):>9}{pct(model):>9}   "
                f"{'met' if ok_demo else 'MISSED'} / {'met' if ok_long else 'MISSED'} ({demo}; "
                f"{long})"
            )
    return lines


# -----------------------------------------------------------------------------
# report.md, section by section


def report(res):
    s = res.setup
    return "\n".join(
        [
            f"# Evaluation of {s.ckpt} (iter {s.iter})\n",
            f"Made by `{s.command}` on {s.device} in {res.seconds['total']:.0f} s ("
            + ", ".join(f"{k} {v:.0f} s" for k, v in res.seconds.items() if k != "total")
            + f"). Data: `{s.data_dir}`.\n",
            "```\n" + headline(res) + "\n```\n",
            *report_likelihood(res.likelihood),
            *loss_tables(s, res.likelihood),
            *(report_samples(res) if res.adherence is not None else []),
            *(report_control(res.control) if res.control is not None else []),
        ]
    )


def loss_cells(t, i, prefix="", digits=3):
    """Loss, perplexity and accuracy of row i of a likelihood table (prefix "baseline_": the
    unigram's)."""
    loss = t[f"{prefix}loss"][i]
    return [num(loss, digits), f"{math.exp(loss):.2f}", pct(t[f"{prefix}acc"][i])]


def report_likelihood(lk):
    o = lk["overall"]
    gain = lambda without: [
        num(o["loss"][0], 4),
        num(o[without][0], 4),
        f"{o[without][0] - o['loss'][0]:+.4f}",
    ]
    return [
        "## 1. Likelihood\n",
        f"{lk['windows']} fixed windows of val.bin, {int(o['tokens'][0]):,} tokens scored; each "
        "window is led by its piece's attribute prefix (semantic token, key, meter, tempo, "
        "instruments, all measured from the piece) and starts on an event boundary, as in "
        "training. Unigram: the token frequencies of train.bin, add-one smoothed. *loss uncond*: "
        "the same windows with the whole prefix unspecified; conditioning gains "
        f"{o['loss_uncond'][0] - o['loss'][0]:+.4f} nats per token.\n",
        table(
            ["", "loss (nats)", "perplexity", "accuracy", "loss uncond"],
            [
                ["model", *loss_cells(o, 0, digits=4), num(o["loss_uncond"][0], 4)],
                ["unigram", *loss_cells(o, 0, "baseline_", digits=4), ""],
            ],
        ),
        "Loss with and without each attribute: the same windows with that one slot unspecified, "
        "the others given. Gain = loss without - loss with (nats per token; > 0: the model uses "
        "it).\n",
        table(
            ["attribute", "loss with", "loss without", "gain"],
            [[slot, *gain(f"loss_no_{slot}")] for slot in attributes.PREFIX_SLOTS]
            + [["all of them", *gain("loss_uncond")]],
        ),
    ]


def loss_tables(setup, lk):
    """The likelihood per token type (of the target) and per semantic token (of the window)."""
    types_, sem = lk["type"], lk["first"]
    sem_name = lambda i: (
        label_of(setup, i - tokenizer.semantic_token(0))
        if i != tokenizer.UNCOND
        else "(pieces without one)"
    )
    head = ["loss", "perplexity", "accuracy"]
    return [
        "Per token type (of the target token):\n",
        table(
            ["type", "tokens", *head, "unigram loss"],
            [
                [name, f"{types_['tokens'][i]:,}", *loss_cells(types_, i)]
                + [num(types_["baseline_loss"][i])]
                for i, name in enumerate(setup.type_names)
                if types_["tokens"][i]
            ],
        ),
        "Per semantic token (of the window):\n",
        table(
            ["token", "label", "tokens", *head, "loss uncond", "unigram loss"],
            [
                [tokenizer.token_name(i), sem_name(i), f"{sem['tokens'][i]:,}"]
                + [*loss_cells(sem, i), num(sem["loss_uncond"][i]), num(sem["baseline_loss"][i])]
                for i in np.flatnonzero(sem["tokens"])
            ],
        ),
        "![loss per token type](likelihood.png)\n",
    ]


def report_samples(res):
    """Sections 2-4: adherence, closeness and validity of the samples per semantic token."""
    s, cl = res.settings, res.closeness
    return [
        *report_adherence(res),
        *report_closeness(res),
        "## 4. Validity\n",
        f"Over all {len(s.guidance) * len(res.ceiling.tokens) * s.num_samples} samples. Sampling "
        "is constrained by tokenizer.py's grammar, so no skipped token is expected. A bar (its "
        "length from the time signature, 4/4 by default) counts as filled when a note sounds in "
        "it.\n",
        table(
            ["", "samples", "real val pieces"],
            [
                ["decode with no token skipped", pct(cl.valid_decode), ""],
                ["notes in every bar", pct(cl.valid_bars), pct(cl.real_bars)],
            ],
        ),
    ]


def report_adherence(res):
    s, ce, a = res.settings, res.ceiling, res.adherence
    g, n_tok, n = s.guidance, s.max_new_tokens, s.num_samples * len(ce.tokens)
    n_train, n_val = len(ce.real_train[0]), len(ce.real_val[0])
    met = max(a.share.get(x, 0) for x in g if x <= 2) >= 0.8 * ce.ceiling
    met = met and ce.ceiling >= 2 * ce.chance
    return [
        "## 2. Conditioning adherence\n",
        f"A random forest (200 trees) learns the semantic token from {ce.n_features} musical "
        "features (pitch-class histogram, the metrics of section 3, register, tempo, notes per "
        "second, instrument families and drums, durations, velocity, meter) of "
        f"{n_train} real train pieces, each cut to its first {n_tok + 1} tokens like a sample. "
        f"Ceiling: its accuracy on the {n_val} real val pieces that have a semantic id. "
        f"Adherence: its accuracy on {s.num_samples} samples per token ({TOKEN_PATH[s.token_path]}"
        f", at most {n_tok} new tokens) at each guidance scale. Chance: naming the largest cluster "
        f"({pct(ce.chance)} on val; {pct(a.chance)} on the samples, as every token gets as "
        "many).\n",
        table(
            ["", "ceiling (real val)", "chance (val)"] + [f"samples, guidance {x:g}" for x in g],
            [
                ["all tokens", share_interval(ce.ceiling, n_val), pct(ce.chance)]
                + [share_interval(a.share[x], n) for x in g]
            ],
        ),
        f"Brackets: 95% Wilson intervals ({n} samples per guidance scale, {s.num_samples} per "
        f"token). Target: adherence >= 80% of the ceiling ({pct(0.8 * ce.ceiling)}) at guidance "
        f"<= 2, with the ceiling >= 2x chance ({pct(2 * ce.chance)}): "
        + ("met" if met else "**missed**")
        + ".\n",
        "Per token: the share of its samples that the classifier names as that token.\n",
        table(
            ["token", "label", "val pieces"] + [f"guidance {x:g}" for x in g],
            [token_cells(res, c) + [pct(a.by_token[x, c]) for x in g] for c in ce.tokens],
        ),
        "![adherence](adherence.png)\n",
    ]


def report_closeness(res):
    s, cl = res.settings, res.closeness
    keys, distance = list(METRICS) + ["durations"], cl.distance
    mean_of = lambda k, i: num(metrics.mean_std([pair[i][k] for pair in distance.values()])[0], 2)
    return [
        "## 3. Closeness to real music\n",
        f"Samples at guidance {s.guidance[0]:g} against the real val pieces of the same token, "
        f"both cut to {s.max_new_tokens + 1} tokens. Metrics as in muspy: pitch-class entropy "
        "(bits, pitched notes), scale consistency (the largest share of notes in one major or "
        "natural minor scale), polyphony (mean number of notes sounding, over the steps where any "
        "does), note density (notes per beat), empty-beat rate (share of beats where no note "
        "starts).\n\n"
        "**Distance** d: |mean over the samples - mean over the real pieces|, in units of the "
        "metric's standard deviation over all real val pieces (0 = the same mean; as with Cohen's "
        "d, 0.2 is small, 0.5 medium, 0.8 large). Means are fair with a few samples per token, "
        "where histograms are noise. For durations: the overlapping area of the two mean duration "
        "histograms (1 = the same). In brackets, the same for the real *train* pieces of the "
        "token: how far two sets of real pieces lie apart, the floor to compare with.\n",
        table(
            ["metric", "real val mean ± std", "generated mean ± std", "real train mean ± std"],
            [[METRICS[k]] + [f"{num(m)} ± {num(sd)}" for m, sd in cl.pooled[k]] for k in METRICS],
        ),
        table(
            ["token", "label", "val pieces"]
            + [f"d {METRICS[k]}" for k in METRICS]
            + ["durations overlap"],
            [
                token_cells(res, c) + [f"{num(gd[k], 2)} ({num(td[k], 2)})" for k in keys]
                for c, (gd, td) in distance.items()
            ]
            + [["mean", "", ""] + [f"{mean_of(k, 0)} ({mean_of(k, 1)})" for k in keys]],
        ),
        "![real vs generated](closeness.png)\n",
    ]


# -----------------------------------------------------------------------------
# section 5: control


def control_targets(c, name):
    """The targets on the user's path of one prompt set -> [(measure, target for the demo model,
    for the long preset, realised share, met for the demo, met for the long)]."""
    get = lambda path, m: c.summary.get((name, path, m), dict(n=0, mean=float("nan")))
    out = []
    for m in metrics.CONTROL_MEASURES:
        user, base = get("user", m), get("none-user", m)
        if not user["n"]:
            continue
        twice = user["mean"] >= 2 * base["mean"] and user["mean"] > 0
        if m in TARGETS or m in CEILINGS:
            demo, long = TARGETS.get(m) or CEILINGS[m]
            at_most = m in CEILINGS
            words = tuple(("<= " if at_most else ">= ") + f"{pct(x)}" for x in (demo, long))
            met = [user["mean"] <= g if at_most else user["mean"] >= g for g in (demo, long)]
        elif m == "meter":  # the long target: 80% of the classifier's recall on the meters asked
            goal = 0.8 * c.classifiers["meter"]["prompt_ceiling"]
            words = ("2x unconditioned", f">= {pct(goal)} (80% of the ceiling)")
            met = [twice, user["mean"] >= goal]
        elif m == "tempo word":
            words, met = ("2x unconditioned", "2x unconditioned"), [twice, twice]
        else:
            continue
        out.append((m, *words, user["mean"], *met))
    return out


def control_table(c, name, measures, ceiling=None):
    """The measures of one prompt set on each path, with intervals and the ratio to the
    unconditioned samples; ceiling: {measure: share of real pieces}, a column beside them."""
    ratio = lambda a, b: f"{a['mean'] / b['mean']:.1f}x" if a and b and b["mean"] else ""
    shown = lambda cell: interval(cell) if cell else ""
    rows = []
    for m in measures:
        keys = [(name, path, m) for path in ("user", "model", "none-user", "none-model")]
        user, model, none_user, none_model = map(c.summary.get, keys)
        if user or model:
            rows.append(
                [m, (user or model)["n"], shown(user), shown(none_user), ratio(user, none_user)]
                + [shown(model), shown(none_model), ratio(model, none_model)]
                + ([pct(ceiling[m])] if ceiling else [])
            )
    header = ["measure", "samples", "user's path", "unconditioned", "ratio", "model alone"]
    header += ["unconditioned", "ratio"] + ["real pieces (ceiling)"] * bool(ceiling)
    return table(header, rows)


def per_prompt_table(c, name):
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
                for m in metrics.PER_PROMPT_MEASURES
            ]
        )
    return table(["prompt (user's path)"] + metrics.PER_PROMPT_MEASURES, out)


def report_control(c):
    lines = [
        "## 5. Control: the attributes asked for, measured in the notes\n",
        "Every prompt of each set is read by prompt.parse_prompt as `sample.py --prompt` reads "
        f"it, and sampled {c.n_per_prompt} times on each path:\n",
        *[f"- **{path}**: {words}" for path, words in c.path_words.items()],
        "\nThe unconditioned samples are scored against the same prompt: the baseline of each "
        "path. Measured from the decoded notes: key and mode by describe's Krumhansl-Schmuckler "
        "estimator and by music21's analyze('key'); instruments by the programs that sound "
        "(*exact*: every asked instrument sounds and no other; recall and precision over "
        "instruments some training file has); meter and tempo word by random forests on rhythm "
        "features of the notes alone, trained on real val pieces; *polyphony outlier*: the mean "
        "number of notes an instrument sounds at once is above the 95th percentile of the real "
        f"val pieces in parts ({c.polyphony_p95[0]:.2f}; *(all real)*: of every real val piece, "
        f"{c.polyphony_p95[1]:.2f}, which 95% single melody lines hold at 1). Brackets: 95% "
        "intervals (Wilson for shares, normal for the instrument means). *tempo token* is "
        "plumbing: the sample's own first tempo equals the one asked (on the user's path "
        "sample.py writes it).\n",
    ]
    for name, prompts in c.sets.items():
        lines += control_set(c, name, prompts)
    return lines + classifier_table(c)


def control_set(c, name, prompts):
    """One prompt set's tables: its measures on each path, the targets, closeness, per prompt."""
    targets = [
        [m, demo, long, pct(value)] + ["met" if ok else "**missed**" for ok in (ok_demo, ok_long)]
        for m, demo, long, value, ok_demo, ok_long in control_targets(c, name)
    ]
    close = c.closeness.get(name, {})
    lines = [
        f"### Prompt set: {name} ({len(prompts)} prompts)\n",
        control_table(c, name, [m for m in metrics.CONTROL_MEASURES if m not in texture.ROWS]),
        "Targets on the user's path, for the demo model and the long CPU preset:\n",
        table(["measure", "demo model", "long CPU preset", "realised", "demo", "long"], targets),
    ]
    if c.ensemble and any(row["set"] == name and row["ensemble"] for row in c.rows):
        rows = control_table(c, name, texture.ROWS, c.ensemble["ceiling"])
        lines[2:2] = [texture.words(c.ensemble), rows, table(*texture.medians(c, name))]
    if close:
        lines += [
            "Closeness to real music (d: |mean of the samples - mean of real val pieces| in real "
            "val standard deviations; floor: the same for real train pieces):\n",
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
    return lines + [per_prompt_table(c, name)]


def classifier_table(c):
    rows = [
        [name, v["n"], pct(v["ceiling"]), pct(v["prompt_ceiling"]), pct(v["chance"])]
        + [
            ", ".join(
                f"{label} {n} ({pct(v['recall'][label])})"
                for label, n in sorted(v["labels"].items(), key=lambda x: -x[1])[:9]
            )
        ]
        for name, v in c.classifiers.items()
    ]
    return [
        "The meter and tempo-word classifiers (5-fold cross-validated on real val pieces, cut to "
        "the samples' length; chance = always the commonest label). *Ceiling on the asked*: its "
        "recall on real pieces of the labels the prompts ask for, averaged over the prompts that "
        "ask. Labels with their val pieces and, in brackets, the classifier's recall on them:\n",
        table(
            ["classifier", "pieces", "ceiling", "ceiling on the asked", "chance"]
            + ["labels (commonest first)"],
            rows,
        ),
        "Instruments some training file has: "
        f"{', '.join(map(describe.instrument_name, c.seen))}.\n",
    ]


# -----------------------------------------------------------------------------
# summary.json and the page


def summary(res):
    """The headline numbers as plain JSON (eval/summary.json), for comparing runs."""
    o, s = res.likelihood["overall"], res.settings
    out = dict(
        ckpt=res.setup.ckpt,
        iter=res.setup.iter,
        val_loss=float(o["loss"][0]),
        val_nats_per_note=res.likelihood["nats_per_note"],
        gain={"all": float(o["loss_uncond"][0] - o["loss"][0])}
        | {slot: float(o[f"loss_no_{slot}"][0] - o["loss"][0]) for slot in attributes.PREFIX_SLOTS},
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
            ensemble=c.ensemble,
            lab=c.lab,
        )
    return out


def write_page(res, examples, eval_dir, audio=False):
    """eval_dir/index.html: the report's tables and plots (markdown -> HTML by the markdown
    package), then EXAMPLES_PER_TOKEN samples per token at the largest guidance scale (MIDI, piano
    roll, and a WAV with audio) in eval_dir/samples."""
    import markdown

    s = res.setup
    sample_dir, g = os.path.join(eval_dir, "samples"), max(res.settings.guidance)
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
