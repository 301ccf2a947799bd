"""evaluate.py's plots: val loss per token type, adherence per guidance scale, and histograms of
the samples' statistics beside real val pieces (render.new_figure: matplotlib without pyplot).
report.write_report calls write_plots with evaluate's Results."""

import os
from fractions import Fraction

import numpy as np

import metrics
import render
import tokenizer
from metrics import METRICS


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
    g = res.settings.guidance
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
    pooled = lambda by: [s for c in tokens for s in by[c]]
    rows = [("all tokens", pooled(real_by), pooled(gen_by))]
    rows += [(tokenizer.semantic_name(c), real_by[c], gen_by[c]) for c in tokens]
    fig = render.new_figure(3 * (len(METRICS) + 1), 2.2 * len(rows), dpi=80)
    sets = (("real val", "tab:blue"), ("generated", "tab:orange"))
    for (title, real, gen), axes in zip(
        rows, fig.subplots(len(rows), len(METRICS) + 1, squeeze=False)
    ):
        for ax, key in zip(axes, METRICS):
            values = [metrics.finite([s[key] for s in x]) for x in (real, gen)]
            both = np.concatenate(values + [np.zeros(1)] * (not any(map(len, values))))
            bins = np.linspace(both.min(), max(both.max(), both.min() + 1e-6), 16)
            for v, (label, color) in zip(values, sets):
                if len(v):  # y: the share of pieces, so sets of any size compare
                    weights = np.full(len(v), 1 / len(v))
                    ax.hist(v, bins, weights=weights, alpha=0.5, color=color, label=label)
            ax.set_title(
                f"{title}: {METRICS[key]}" if key == "pc_entropy" else METRICS[key], fontsize=8
            )
            ax.ticklabel_format(axis="x", useOffset=False)  # 1.0, not 0.0 with "+1" in the corner
        for i, (x, (label, color)) in enumerate(zip((real, gen), sets)):
            if x:
                durations = np.mean([s["durations"] for s in x], axis=0)
                axes[-1].bar(
                    np.arange(10) + 0.4 * i - 0.2, durations, 0.4, color=color, label=label
                )
        quarters = [
            str(Fraction(int(e), tokenizer.STEPS_PER_QUARTER)) for e in metrics.DURATION_EDGES[:-1]
        ]
        axes[-1].set_xticks(range(10), quarters, fontsize=7)
        axes[-1].set_title("durations (quarters, bin start)", fontsize=8)
        axes[-1].legend(fontsize=6)
    render.save_figure(fig, path)


def write_plots(res, eval_dir):
    plot_likelihood(res, os.path.join(eval_dir, "likelihood.png"))
    if res.adherence is not None:
        plot_adherence(res, os.path.join(eval_dir, "adherence.png"))
        plot_closeness(res, os.path.join(eval_dir, "closeness.png"))
