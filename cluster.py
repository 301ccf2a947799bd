"""
Semantic tokens: one text description per piece -> sentence embedding -> k-means.
The cluster of a piece is its SEMANTIC_TOKEN_k; a free-text prompt maps to the nearest centroid.

    python cluster.py --data_dir data/music21 --k 10          # writes semantic.json, clusters.json
    python cluster.py --data_dir data/music21 --query "a lively irish jig"

Descriptions come from midi/descriptions.jsonl ({"midi_file", "description"}) or MidiCaps captions
({"location", "caption"}); a file with neither gets one written from the MIDI itself.
"""

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

import dataset
import describe
import prompt
import tokenizer
from files import (
    UserError,
    check_range,
    check_text,
    folder_lock,
    read_jsonl,
    run_script,
    write_atomic,
)
from prompt import DEFAULT_EMBEDDER, embed, load_embedder

# looked for beside the MIDI
DESCRIPTION_FILES = ("descriptions.jsonl", "captions.jsonl", "train.json")


# -----------------------------------------------------------------------------
# collecting one description per file


def list_files(data_dir):
    """The files to cluster: those of index.jsonl (ids line up with prepare.py's data), else every
    MIDI file."""
    index = Path(data_dir) / "index.jsonl"
    if index.exists():
        rows = read_jsonl(index, rebuild=f"python prepare.py --data_dir {data_dir}")
        bad = next(
            (
                i
                for i, row in enumerate(rows, 1)
                if not isinstance(row, dict) or not isinstance(row.get("midi_file"), str)
            ),
            None,
        )
        if bad:
            raise UserError(
                f"{index} is corrupt, entry {bad} (no midi_file); rebuild it: "
                f"python prepare.py --data_dir {data_dir}"
            )
        return [row["midi_file"] for row in rows]
    files = list(dataset.iter_midi(dataset.midi_root(data_dir)))
    if not files:
        raise UserError(
            f"no MIDI files in {data_dir} (nor in {Path(data_dir) / 'midi'}): put the MIDI files "
            "there"
        )
    return files


def collect_descriptions(data_dir):
    """-> (files, descriptions, skipped {file: reason}); files without a description get one from
    their MIDI."""
    midi_dir = Path(dataset.midi_root(data_dir))
    given = {}
    for name in DESCRIPTION_FILES:
        if (midi_dir / name).exists():
            for row in filter(lambda r: isinstance(r, dict), read_jsonl(midi_dir / name)):
                file, text = (
                    row.get("midi_file", row.get("location")),
                    row.get("description", row.get("caption")),
                )
                if isinstance(file, str) and file and isinstance(text, str) and text.strip():
                    given.setdefault(Path(file).as_posix(), text.strip())
    # auto descriptions are cached with the file's size and mtime, so re-clustering does not re-read
    # all MIDI
    auto_path = Path(data_dir) / "descriptions_auto.jsonl"
    # a cache: a broken line is described again
    auto = (
        {
            r["midi_file"]: r
            for r in read_jsonl(auto_path)
            if isinstance(r, dict) and "midi_file" in r
        }
        if auto_path.exists()
        else {}
    )
    files, descriptions, skipped, new_auto = [], [], {}, {}
    listed = list_files(data_dir)
    missing = [f for f in listed if f not in given]
    for f in tqdm(missing, desc="describing MIDI", disable=True if len(missing) < 50 else None):
        try:
            st = (midi_dir / f).stat()
            stamp = [st.st_size, st.st_mtime_ns]
            cached = auto.get(f, {})
            fresh = cached.get("stamp") == stamp and isinstance(cached.get("description"), str)
            text = cached["description"] if fresh else describe.describe_midi(midi_dir / f)
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
            f"note: {unmatched} descriptions name files not in "
            f"{'index.jsonl' if (Path(data_dir) / 'index.jsonl').exists() else midi_dir} (ignored)"
        )
    if new_auto or auto_path.exists():
        write_atomic(auto_path, "".join(json.dumps(r) + "\n" for r in new_auto.values()))
    return files, descriptions, skipped


# -----------------------------------------------------------------------------
# embedding


def embed_cached(data_dir, descriptions, embedder, batch_size):
    """Embeddings cached per description, keyed by a hash of embedder + text: another k re-clusters
    in seconds, and an edited description re-embeds only itself."""
    keys = [hashlib.sha1(f"{embedder}\n{d}".encode()).hexdigest() for d in descriptions]
    cache = Path(data_dir) / "embeddings.npz"
    try:
        with np.load(cache) as z:
            known = dict(zip(z["keys"].tolist(), z["embeddings"]))
    except Exception:
        known = {}  # no cache, or an unreadable or older one: embed afresh
    # distinct new texts
    todo = sorted({key: d for key, d in zip(keys, descriptions) if key not in known}.items())
    if not todo:
        print(f"embeddings: all {len(keys)} cached in {cache}")
    else:
        load_embedder(embedder)  # outside the timing: throughput is for encoding alone
        t0 = time.time()
        # (len(todo), dim)
        new = embed([d for _, d in todo], embedder, batch_size, progress=sys.stderr.isatty())
        dt = time.time() - t0
        print(
            f"embedded {len(todo)} descriptions in {dt:.1f}s ({len(todo) / dt:.0f} descriptions/s)"
        )
        known.update(zip([key for key, _ in todo], new))
    emb = np.stack([known[key] for key in keys])  # (N, dim)
    if todo:
        # current texts only
        write_atomic(cache, lambda f: np.savez(f, keys=np.array(keys), embeddings=emb))
    return emb


# -----------------------------------------------------------------------------
# clustering and labels


def kmeans(emb, k, seed):
    """-> (labels (N,), centroids (k, dim)); clusters renumbered by size, largest first, so ids read
    the same every run."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(emb)
    sizes = np.bincount(km.labels_, minlength=k)
    # tie-break: the cluster that appears first
    first = [int(np.argmax(km.labels_ == c)) for c in range(k)]
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    remap = np.empty(k, dtype=int)
    remap[order] = np.arange(k)
    return remap[km.labels_], km.cluster_centers_[order]


LABEL_WORD_MAX = 24  # letters: longer than the words captions use ('counterpoint', 'orchestral')


def cluster_labels(descriptions, labels, k, n_words=3):
    """A few words per cluster: the TF-IDF terms whose cluster mean most exceeds the corpus mean.
    The first word is the cluster's best; the others skip words already in earlier labels, so two
    similar clusters (Irish tunes, Irish jigs) still read differently. A word is 2 to LABEL_WORD_MAX
    letters, so a label is a short line whatever the descriptions hold (a run of a million letters
    is no word)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(
        stop_words="english",
        token_pattern=rf"(?u)\b[a-zA-Z]{{2,{LABEL_WORD_MAX}}}\b",
        sublinear_tf=True,
    )
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


def silhouette_of(emb, labels, descriptions, *, k, seed):
    """The mean cosine silhouette of the clustering (on up to 5,000 points), or None where it is
    undefined."""
    if not 2 <= k < len(set(descriptions)):
        return None
    from sklearn.metrics import silhouette_score

    return float(
        silhouette_score(
            emb, labels, metric="cosine", sample_size=min(len(emb), 5000), random_state=seed
        )
    )


def nearest_examples(emb, labels, centroids, descriptions):
    """For each cluster, the two descriptions nearest its centroid, distinct where possible."""
    examples = []
    for c in range(len(centroids)):
        idx = np.where(labels == c)[0]
        near = idx[np.argsort(-(emb[idx] @ centroids[c]), kind="stable")]
        texts = list(dict.fromkeys(descriptions[i] for i in near))
        examples.append((texts + texts)[:2])
    return examples


def run(data_dir, *, k=10, embedder=DEFAULT_EMBEDDER, seed=0, batch_size=64):
    """Describe, embed, cluster; write semantic.json and clusters.json; return the clusters dict.
    The folder is locked to this process meanwhile (files.folder_lock), as prepare.py locks it."""
    if not 1 <= k <= tokenizer.N_SEMANTIC:
        raise UserError(
            f"--k must be between 1 and {tokenizer.N_SEMANTIC} (the number of semantic tokens), "
            f"got {k}"
        )
    if not Path(data_dir).is_dir():
        raise UserError(
            f"{data_dir} is a file, not a data folder"
            if Path(data_dir).exists()
            else f"data folder not found: {data_dir}"
        )
    with folder_lock(data_dir):
        files, descriptions, skipped = collect_descriptions(data_dir)
        if skipped:
            print(
                f"skipped {len(skipped)} unreadable MIDI files (they get the unconditional token):"
            )
            for f, reason in list(skipped.items())[:20]:
                print(f"  {f}: {reason}")
            if len(skipped) > 20:
                print(f"  ... and {len(skipped) - 20} more (all listed in clusters.json)")
        if len(files) < k:
            raise UserError(
                f"--k {k} needs at least {k} described files, found {len(files)}; lower --k"
            )
        emb = embed_cached(data_dir, descriptions, embedder, batch_size)  # (N, dim)
        labels, centroids = kmeans(emb, k, seed)  # (N,), (k, dim)
        clusters = {
            "embedder": embedder,
            "k": k,
            "seed": seed,
            "silhouette": silhouette_of(emb, labels, descriptions, k=k, seed=seed),
            "labels": cluster_labels(descriptions, labels, k),
            "sizes": np.bincount(labels, minlength=k).tolist(),
            "examples": nearest_examples(emb, labels, centroids, descriptions),
            "centroids": centroids.astype(float).tolist(),
            "skipped": skipped,
        }
        write_atomic(
            Path(data_dir) / "semantic.json",
            json.dumps({f: int(c) for f, c in zip(files, labels)}, indent=1),
        )
        write_atomic(Path(data_dir) / "clusters.json", json.dumps(clusters, indent=1))
    return clusters


def print_table(clusters, width=70):
    w = max(5, *map(len, clusters["labels"]))
    print(f"{'token':<18} {'label':<{w}} {'size':>6}  example")
    for c in range(clusters["k"]):
        ex = clusters["examples"][c][0]
        print(
            f"{tokenizer.semantic_name(c):<18} {clusters['labels'][c]:<{w}} "
            f"{clusters['sizes'][c]:>6}  {ex[:width] + ('...' if len(ex) > width else '')}"
        )
    s = clusters["silhouette"]
    print(
        f"silhouette (cosine): {'n/a' if s is None else f'{s:.3f}'}  ({clusters['embedder']}, "
        f"k={clusters['k']}, seed={clusters['seed']})"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--data_dir", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument(
        "--embedder",
        default=DEFAULT_EMBEDDER,
        help="sentence-transformers model: local folder or cached hub name",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument(
        "--query",
        help="print the semantic tokens nearest this text instead of clustering (writes nothing)",
    )
    p.add_argument("--top", type=int, default=3)
    args = p.parse_args(argv)
    check_range("--top", args.top, low=1)
    check_range("--batch_size", args.batch_size, low=1)
    check_range("--seed", args.seed, low=0, high=2**32 - 1)
    check_text("--embedder", args.embedder)
    check_text("--data_dir", args.data_dir)
    # a query only reads: an empty one is a mistake, never a reason to re-cluster
    if args.query is not None:
        check_text("--query", args.query)
        for c, label, sim in prompt.nearest_tokens(args.query, args.data_dir, args.top):
            print(f"{tokenizer.semantic_name(c):<18} {label:<28} cosine {sim:.3f}")
    else:
        print_table(
            run(
                args.data_dir,
                k=args.k,
                embedder=args.embedder,
                seed=args.seed,
                batch_size=args.batch_size,
            )
        )


if __name__ == "__main__":
    run_script(main)
