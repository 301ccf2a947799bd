"""What a prompt or --token leaves unnamed follows the semantic token: it is taken from one training
piece of that token (prompt.follow_token, the checkpoint's token_examples). CPU only: a tiny
random GPT saved in train.py's checkpoint format."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import attributes
import dataset
import evaluate
import prompt
import sample
import tokenizer
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parent.parent
MODEL_ARGS = dict(
    block_size=64, vocab_size=512, n_layer=2, n_head=2, n_embd=32, dropout=0.0, bias=True
)
LABELS = ["slow strings", "fast piano"]
AM_E = [(9, "minor"), (4, "major")] * 4  # its chord slots: Am E Am E ...
PIECES = {  # token -> the attributes of its training pieces
    0: [dict(key=21, meter=(3, 4), tempo_bpm=60.0, instruments=[40, 41, 42], chords=AM_E)],
    1: [
        dict(key=2, meter=(2, 4), tempo_bpm=120.0, instruments=[0], chords=None),
        dict(key=7, meter=(6, 8), tempo_bpm=240.0, instruments=[73, 0], chords=None),
    ],
}


def example(k, values):
    return attributes.attribute_prefix(tokenizer.semantic_token(k), **values)


@pytest.fixture(scope="module")
def ckpt():
    return dict(
        labels=LABELS,
        token_examples={k: [example(k, v) for v in pieces] for k, pieces in PIECES.items()},
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory, ckpt):
    root = tmp_path_factory.mktemp("follow")
    data_dir, out_dir = root / "data", root / "out"
    data_dir.mkdir()
    out_dir.mkdir()
    (data_dir / "clusters.json").write_text(json.dumps({"k": 2, "labels": LABELS}))
    torch.manual_seed(0)
    model = GPT(GPTConfig(**MODEL_ARGS))
    saved = ckpt | dict(
        model=model.state_dict(),
        model_args=MODEL_ARGS,
        iter_num=10,
        best_val_loss=float("inf"),
        config=dict(data_dir=str(data_dir), out_dir=str(out_dir)),
        meta=dict(vocab_size=tokenizer.VOCAB_SIZE, blocks=tokenizer.LAYOUT),
    )
    torch.save(saved, out_dir / "ckpt_0000010.pt")
    return out_dir


def resolved(ckpt, text=None, token=None, seed=0, **kw):
    asked = prompt.asked_attributes(text)
    return prompt.request(ckpt, asked, text=text, token=token, seed=seed, data_dir="-", **kw)


def test_a_token_alone_takes_every_attribute_from_one_of_its_pieces(ckpt):
    req = resolved(ckpt, token="SEMANTIC_TOKEN_0")
    assert {k: req.prefix[k] for k in PIECES[0][0]} == PIECES[0][0]
    assert req.followed == PIECES[0][0]
    assert req.followed_line() == (
        "SEMANTIC_TOKEN_0 -> 60 bpm, 3/4, A minor, Violin, Viola, Cello, Am E "
        "(from one of its pieces; name them to choose)"
    )
    # the seed chooses the piece; one seed, one piece; across seeds, each of the token's pieces
    drawn = {json.dumps(resolved(ckpt, token="1", seed=s).followed) for s in range(40)}
    assert drawn == {json.dumps({k: v for k, v in p.items() if v}) for p in PIECES[1]}
    assert resolved(ckpt, token="1", seed=3).prefix == resolved(ckpt, token="1", seed=3).prefix


def test_what_was_followed_reads_as_a_person_says_it():
    # C major is key 0: spoken like any other
    piece = dict(key=0, meter=(6, 8), tempo_bpm=112.4, instruments=[0, 73])
    assert prompt.said_of(piece) == "112 bpm, 6/8, C major, Acoustic Grand Piano, Flute"
    assert prompt.said_of(dict(tempo_bpm=60.0, key=None, instruments=[])) == "60 bpm"


def test_what_is_asked_stays_and_only_the_rest_follows(ckpt):
    asked = prompt.asked_attributes("something in E flat major for flute")
    req = prompt.request(ckpt, asked, token="SEMANTIC_TOKEN_0", seed=0, data_dir="-")
    assert req.prefix["key"] == 3 and req.prefix["instruments"] == [73]
    assert req.followed == dict(meter=(3, 4), tempo_bpm=60.0), (
        "the piece's chords are in A minor: in E flat major they would contradict the key"
    )
    # the model-alone control path keeps only what was asked
    assert req.asked_prefix() == dict(
        key=3, meter=None, tempo_bpm=None, instruments=[73], chords=None
    )
    assert req.understood()["followed"] == "60 bpm, 3/4"
    in_d = prompt.request(
        ckpt, prompt.asked_attributes("in D minor"), token="0", seed=0, data_dir="-"
    )
    assert in_d.followed["chords"] == [(2, "minor"), (9, "major")] * 4, "moved to the asked key"


def test_nothing_follows_without_a_token_examples_or_when_turned_off(ckpt):
    assert resolved(ckpt, token="SEMANTIC_UNCOND").followed == {}
    assert resolved({"labels": LABELS}, token="SEMANTIC_TOKEN_0").followed == {}
    assert resolved(ckpt, token="SEMANTIC_TOKEN_0", follow=False).followed == {}
    no_examples = dict(ckpt, token_examples={1: ckpt["token_examples"][1]})
    assert resolved(no_examples, token="SEMANTIC_TOKEN_0").followed == {}


def test_token_examples_are_prefixes_of_the_tokens_own_train_files():
    sem = np.array([0, 1, 1, -1, 0, 1])
    prefix = np.array([example(max(k, 0), PIECES[1][i % 2]) for i, k in enumerate(sem)])
    data = dict(train=dict(semantic=sem, prefix=prefix))
    out = dataset.token_examples(data, per_token=2, seed=0)
    assert sorted(out) == [0, 1] and len(out[0]) == 2 and len(out[1]) == 2
    for k, rows in out.items():
        own = [prefix[i].tolist() for i in np.flatnonzero(sem == k)]
        assert all(row in own for row in rows)


def test_sample_token_prints_and_plays_what_it_followed(run, tmp_path, monkeypatch, capsys):
    seen, real = {}, sample.generate_tokens

    def spy(model, rows, sampling, programs=None):
        seen.update(rows=rows, programs=programs)
        return real(model, rows, sampling, programs=programs)

    monkeypatch.setattr(sample, "generate_tokens", spy)
    args = ["--out_dir", run, "--token", "SEMANTIC_TOKEN_0", "--num_samples", "2"]
    args += ["--max_new_tokens", "60", "--seed", "1", "--sample_dir", tmp_path, "--device=cpu"]
    written = sample.main([str(a) for a in args])
    assert (
        "SEMANTIC_TOKEN_0 -> 60 bpm, 3/4, A minor, Violin, Viola, Cello" in capsys.readouterr().out
    )
    # the prefix and the opening meter and tempo are the piece's; notes only on its instruments
    header = tokenizer.header_tokens((3, 4), 60.0)
    for row in seen["rows"]:
        assert attributes.read_prefix(row) == dict(
            PIECES[0][0], semantic=tokenizer.semantic_token(0)
        )
        assert list(row[attributes.PREFIX_LEN + 1 :]) == header
    assert seen["programs"] == [[40, 41, 42]] * 2
    for path in written:
        assert {n.program for n in tokenizer.read_midi(path).notes} <= {40, 41, 42}
    cards = json.loads((tmp_path / "gallery.json").read_text())
    assert cards and all("3/4" in card["understood"]["followed"] for card in cards)


def test_evaluate_samples_each_token_on_the_path_asked(ckpt):
    rows, programs = evaluate.token_rows(ckpt, 1, n=6, seed=0, path="user", data_dir="-")
    assert len(rows) == 6 and len({tuple(r) for r in rows}) == 2, "each sample its own piece"
    for row, played in zip(rows, programs):
        values = attributes.read_prefix(row)
        assert values in [dict(v, semantic=tokenizer.semantic_token(1)) for v in PIECES[1]]
        assert played == values["instruments"]
        assert row[attributes.PREFIX_LEN] == tokenizer.START
        assert len(row) > attributes.PREFIX_LEN + 1, "the opening meter and tempo are forced"
    model_rows, free = evaluate.token_rows(ckpt, 1, n=6, seed=0, path="model", data_dir="-")
    assert free is None and [r[: attributes.PREFIX_LEN] for r in model_rows] == [
        r[: attributes.PREFIX_LEN] for r in rows
    ]
    assert all(len(r) == attributes.PREFIX_LEN + 1 for r in model_rows), "nothing forced"
    alone, _ = evaluate.token_rows(ckpt, 1, n=3, seed=0, path="token", data_dir="-")
    assert attributes.read_prefix(alone[0]) == dict(
        semantic=tokenizer.semantic_token(1),
        key=None,
        meter=None,
        tempo_bpm=None,
        instruments=None,
        chords=None,
    )
