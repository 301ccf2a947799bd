"""What a person sees and hears of a piece: its piano roll (PNG), its sound (a WAV through a General
MIDI SoundFont), a card per sample on a static page that opens from disk (index.html), and markdown
tables. sample.py, evaluate.py and the local app all render through this file.

score, png = write_sample(tokens, "out/x.mid", "a title")     # the MIDI and its piano roll wav,
seconds = render_wav("out/x.mid")                         # out/x.wav beside it"""

import html
import importlib.util
import io
import json
import math
import os
import time
import urllib.parse
import wave

import mido
import numpy as np

import chords
import describe
import tokenizer
from files import UserError, folder_lock, open_regular, write_atomic
from tokenizer import seconds_at

# -----------------------------------------------------------------------------
# the MIDI file and its piano roll


def new_figure(width, height, dpi=100):
    """A matplotlib Figure without pyplot: no global backend state, it renders with Agg."""
    from matplotlib.figure import Figure  # imported here: matplotlib is slow to import

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def save_figure(fig, path):
    write_atomic(path, lambda f: fig.savefig(f, format="png"))


def piano_roll(score, path, title, prime_end=None):
    """A PNG of the notes: time (s) x pitch, a bar per note, coloured by instrument, and a dashed
    line at prime_end (seconds), where a prime's last note starts. Written atomically."""
    from matplotlib import colormaps

    fig = new_figure(12, 5)
    ax = fig.subplots()
    # most notes first: the legend names the top 12
    programs = list(describe.program_counts(score.notes))
    colors = colormaps["tab10" if len(programs) <= 10 else "tab20"]
    for i, program in enumerate(programs):
        notes = [n for n in score.notes if n.program == program]
        start = seconds_at([n.onset for n in notes], score.tempos)  # (n,)
        end = seconds_at([n.onset + n.duration for n in notes], score.tempos)  # (n,)
        # labels starting with _ stay out of the legend
        ax.barh(
            [n.pitch for n in notes],
            end - start,
            left=start,
            height=0.8,
            color=colors(i % colors.N),
            label=describe.instrument_name(program) if i < 12 else "_",
        )
    more = f" (+{len(programs) - 12} more instruments)" if len(programs) > 12 else ""
    ax.set(
        xlabel="time (s)",
        ylabel="MIDI pitch",
        title=title + more,
        xlim=(0, max(float(seconds_at(score.end_step, score.tempos)), 1.0)),
    )
    if prime_end is not None:
        ax.axvline(prime_end, color="black", linestyle="--", linewidth=1, label="end of prime")
    if programs:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    save_figure(fig, path)


def write_sample(tokens, path, title, prime_end=None):
    """tokens -> path (.mid) and its piano roll (.png); returns (score, png path)."""
    score, skipped = tokenizer.tokens_to_score(tokens)
    assert skipped == 0, f"{skipped} tokens of a grammar-constrained sample did not decode"
    midi = tokenizer.score_to_midi(score)
    write_atomic(path, lambda f: midi.save(file=f))
    png = os.path.splitext(path)[0] + ".png"
    piano_roll(score, png, title, prime_end)
    return score, png


def write_samples(samples, folder, *, token, label, seed, prompt_len, prime=None, prime_name=""):
    """Each sample (generation.generate_tokens' rows, whose prompt was prompt_len tokens) -> .mid
    and .png in folder, named after the semantic token, the seed and a prime's file name; -> table
    rows (path, notes, seconds, instruments, new tokens) and, for the gallery, [(path, Score,
    title)]."""
    os.makedirs(folder, exist_ok=True)
    prime_end = None
    if prime is not None:  # its piano roll marks where the prime's last note starts
        prime_score = tokenizer.tokens_to_score(prime)[0]
        prime_end = float(seconds_at(prime_score.notes[-1].onset, prime_score.tempos))
    rows, written = [], []
    for i, tokens in enumerate(samples):
        path = os.path.join(
            folder, f"{token}{'_after_' + prime_name if prime_name else ''}_s{seed}_{i}.mid"
        )
        title = f"{token}: {label} (seed {seed}, sample {i})" + (
            f", after {prime_name}" if prime_name else ""
        )
        score, png = write_sample(tokens, path, title, prime_end)
        print(f"wrote {path} and {png}")
        print("  measured: " + "; ".join(f"{k} {v}" for k, v in measured_facts(score).items()))
        written.append((path, score, title))
        programs = sorted({n.program for n in score.notes})
        instruments = f"{len(programs)}: " + ", ".join(map(describe.instrument_name, programs))
        n_new = len(tokens) - prompt_len - 1  # the tokens the model added, END aside
        rows.append(
            (
                path,
                len(score.notes),
                float(seconds_at(score.end_step, score.tempos)),
                instruments,
                n_new,
            )
        )
    return rows, written


# -----------------------------------------------------------------------------
# audio

SAMPLE_RATE = 44100  # CD rate: what every browser and player takes
RELEASE_SECONDS = (
    1.0  # rendered past the last note, so that the last notes ring out instead of stopping dead
)
GALLERY_CARDS = (
    "gallery.json"  # beside index.html: the cards so far, so that a re-run adds to the page
)
_SOUNDFONT = {}  # read once per process: a sample batch renders several files


def soundfont_path():
    """TimGM6mb.sf2, the General MIDI bank (GPL-2, Tim Brechbill) that ships inside the pretty_midi
    wheel. Found on disk, never downloaded: pretty_midi itself is not imported."""
    spec = importlib.util.find_spec("pretty_midi")
    path = spec and spec.origin and os.path.join(os.path.dirname(spec.origin), "TimGM6mb.sf2")
    if not path or not os.path.isfile(path):
        raise UserError("no SoundFont for --audio: pip install pretty_midi (it ships TimGM6mb.sf2)")
    return path


def soundfont_bytes():
    if "sf2" not in _SOUNDFONT:
        with open(soundfont_path(), "rb") as f:
            _SOUNDFONT["sf2"] = f.read()
    return _SOUNDFONT["sf2"]


def with_release(midi_path):
    """The MIDI file's bytes, made RELEASE_SECONDS longer (a marker after its end, at its last
    tempo): the synthesiser stops where the file ends, and this lets the last notes ring out instead
    of stopping dead."""
    mid = mido.MidiFile(midi_path)
    tempos = [m.tempo for m in mido.merge_tracks(mid.tracks) if m.type == "set_tempo"]
    end = max((sum(m.time for m in t) for t in mid.tracks), default=0)  # ticks
    tail = round(RELEASE_SECONDS * 1e6 / (tempos[-1] if tempos else 500000) * mid.ticks_per_beat)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("marker", text="release", time=end + tail)]))
    buf = io.BytesIO()
    mid.save(file=buf)
    return buf.getvalue()


def render_audio(midi_path):
    """A MIDI file -> (2, samples) float32 stereo at SAMPLE_RATE, as long as the file plus
    RELEASE_SECONDS. midirenderer (rustysynth, a SoundFont synthesiser in Rust) plays drums (channel
    10) on the drum kit."""
    try:
        import midirenderer

        wav = midirenderer.render_wave_from(soundfont_bytes(), with_release(midi_path))
    except (
        ImportError,
        ValueError,
        RuntimeError,
    ) as e:  # no wheel, or a SoundFont or file it cannot read
        raise UserError(
            f"the SoundFont synthesiser failed ({type(e).__name__}: {str(e)[:200]})"
        ) from None
    from scipy.signal import resample_poly  # scipy comes with scikit-learn

    with wave.open(io.BytesIO(wav)) as w:
        rate, channels = w.getframerate(), w.getnchannels()
        # (samples, ch)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, channels)
    audio = pcm.T.astype(np.float32) / 32768  # (ch, samples)
    if rate != SAMPLE_RATE:  # it renders at 48 kHz: polyphase resampling to 44.1 kHz (147/160)
        g = math.gcd(SAMPLE_RATE, rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g, axis=1).astype(np.float32)
    return np.broadcast_to(audio, (2, audio.shape[1])) if channels == 1 else audio


def write_wav(audio, path):
    """(2, samples) float -> 16-bit stereo WAV, its peak at -1 dBFS (the synthesiser leaves a lone
    instrument near -18 dBFS, so samples play at one loudness). Written atomically."""
    peak = float(np.abs(audio).max()) if audio.size else 0.0
    pcm = (audio * (0.89 / peak if peak else 1.0) * 32767).round().astype("<i2").T  # (samples, 2)

    def write(f):
        with wave.open(f, "wb") as w:
            w.setnchannels(2)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(pcm.tobytes())

    write_atomic(path, write)
    return audio.shape[1] / SAMPLE_RATE


def render_wav(midi_path):
    """midi_path -> the .wav beside it; returns (wav path, seconds of audio)."""
    wav = os.path.splitext(midi_path)[0] + ".wav"
    return wav, write_wav(render_audio(midi_path), wav)


# -----------------------------------------------------------------------------
# the gallery page


def measured_facts(score):
    """What the notes of a tokenizer.Score say (describe.measure): length, tempo, meter, key,
    instruments, chords bar by bar, texture, notes."""
    m = describe.measure(score)
    return {
        "length": f"{m['seconds']:.1f} s",
        "tempo": f"{m['tempo_bpm']:.0f} bpm ({m['tempo_italian']})",
        "meter": m["meter"],
        "estimated key": m["key"] or "none (no pitched notes)",
        "instruments": ", ".join(
            map(describe.instrument_name, describe.program_counts(score.notes))
        ),
        "chords": bars_text(m["chords"]),
        "texture": f"{m['texture']}, {m['voices_per_instrument']:g} notes at once per instrument",
        "notes": str(len(score.notes)),
    }


def bars_text(symbols, most=16):
    """Chords per bar (symbols, None for a bar without one) -> 'C | G7 | - | Am', the first most."""
    shown = " | ".join(c or "-" for c in symbols[:most])
    return shown + (f" | ... ({len(symbols)} bars)" if len(symbols) > most else "") or "none"


def sample_card(path, score, understood, title, *, folder, made, wav=None):
    """One gallery card as plain types: file names relative to the page's folder; made: when its
    batch was."""
    rel = lambda p: os.path.relpath(p, folder).replace(os.sep, "/")  # noqa: E731
    png = os.path.splitext(path)[0] + ".png"
    return {
        "midi": rel(path),
        "png": rel(png) if os.path.exists(png) else None,
        "wav": rel(wav) if wav else None,
        "title": title,
        "made": made,
        "understood": understood,
        "facts": measured_facts(score),
    }


def understood_facts(understood):
    """What a prompt was understood as (prompt.Request.understood) -> {name: text} of what was asked
    only, with instruments by name, as measured_facts names them."""

    def text(name, value):
        if name == "chords" and isinstance(value, (list, tuple)):  # (root, quality) pairs
            return chords.progression_text(value)
        # GM program numbers (or names a caller already wrote)
        if name == "instruments" and isinstance(value, (list, tuple)):
            return ", ".join(
                describe.instrument_name(v) if isinstance(v, int) else str(v) for v in value
            )
        # a similarity to 3 decimals; a tempo or a guidance scale as it was given
        if isinstance(value, float):
            return f"{value:.3f}" if name == "cosine" else f"{value:g}"
        return ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)

    return {
        k.replace("_", " "): text(k, v) for k, v in understood.items() if v not in (None, [], "")
    }


def card_html(card):
    esc, url = html.escape, lambda p: html.escape(urllib.parse.quote(p))
    rows = lambda d: "".join(
        f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in d.items()
    )  # noqa
    return "\n".join(
        [
            f'<article class="card" id="{esc(card["midi"])}">',
            f'<h2>{esc(card["title"])}</h2><p class="made">{esc(card["made"])}</p>',
            '<div class="tables"><table><caption>asked for, and what was understood</caption>'
            f"{rows(understood_facts(card['understood']))}</table>",
            f"<table><caption>measured in the result</caption>{rows(card['facts'])}</table></div>",
            f'<img src="{url(card["png"])}" alt="piano roll of {esc(card["midi"])}" loading="lazy">'
            if card["png"]
            else "",
            f'<audio controls preload="none" src="{url(card["wav"])}"></audio>'
            if card["wav"]
            else '<p class="note">no audio: sample with --audio</p>',
            f'<p><a href="{url(card["midi"])}" download>download '
            f"{esc(os.path.basename(card['midi']))}</a></p>",
            "</article>",
        ]
    )


PAGE_STYLE = (
    "body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:1280px;padding:0 1em;"
    "color:#222}"
    ".card{border:1px solid #ccc;border-radius:8px;padding:1em;margin:1.2em 0;background:#fafafa}"
    ".card h2{margin:0;font-size:1.1em}.made{margin:.2em 0 .6em;color:#777;font-size:.85em}"
    ".tables{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}"
    "table{border-collapse:collapse;margin:.4em 0}"
    "caption{text-align:left;font-weight:600;padding-bottom:.2em;white-space:nowrap}"
    "th,td{text-align:left;padding:.1em .8em .1em 0;vertical-align:top;"
    "border-bottom:1px solid #e4e4e4}"
    "th{font-weight:500;color:#555}img{max-width:100%;display:block;margin:.6em 0}"
    "audio{width:100%}.note{color:#777}"
    ".report table th,.report table td{padding:.15em .6em;border:1px solid #ddd}"
    "pre{background:#f0f0f0;padding:.6em}"
)


def page_html(title, cards, intro=""):
    return "\n".join(
        [
            "<!doctype html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head><body>",
            f"<h1>{html.escape(title)}</h1>",
            intro,
            f"<p>{len(cards)} samples, newest first. Audio: TimGM6mb General MIDI SoundFont.</p>",
            *map(card_html, cards),
            "</body></html>\n",
        ]
    )


def write_gallery(folder, new_cards, title="AMT samples", intro=""):
    """Add cards to folder/index.html, newest first. A card replaces the older one of the same MIDI
    file, and a card whose MIDI file is gone is dropped (a picture or WAV that is gone, left out),
    so re-running never duplicates a card or leaves a broken one. Returns the page's path."""
    # two runs into one folder: each adds its cards, neither loses the other's
    with folder_lock(folder, wait=True):
        return update_gallery(folder, new_cards, title, intro)


# what card_html reads of a card beside its midi, png and wav (file names; png and wav may be None)
CARD_TYPES = {"title": str, "made": str, "understood": dict, "facts": dict}


def read_cards(store):
    """The gallery's cards as the page can show them: each card on its own, so one that lacks a
    key (or holds the wrong kind of value) loses that field only (an empty table, no picture), and
    one with no MIDI file name is left out, with a count; never the other cards. A store that can't
    be read at all (not JSON, not a list, a FIFO) starts the gallery again, with a warning."""
    try:
        with open_regular(store) as f:
            old = json.loads(f.read().decode("utf-8"))
        if not isinstance(old, list):
            raise ValueError("not a list of cards")
    except FileNotFoundError:
        return []
    except (OSError, UserError, ValueError, RecursionError):
        print(f"warning: {store} is unreadable; the gallery starts again from this run")
        return []
    cards = [
        {"midi": c["midi"]}
        | {k: c.get(k) if isinstance(c.get(k), kind) else kind() for k, kind in CARD_TYPES.items()}
        | {k: c.get(k) if isinstance(c.get(k), str) else None for k in ("png", "wav")}
        for c in old
        if isinstance(c, dict) and isinstance(c.get("midi"), str)
    ]
    if len(cards) < len(old):
        print(f"warning: {len(old) - len(cards)} cards of {store} name no MIDI file; left out")
    return cards


def update_gallery(folder, new_cards, title, intro):
    store = os.path.join(folder, GALLERY_CARDS)
    old = read_cards(store)
    new = {c["midi"] for c in new_cards}
    kept = [
        c for c in old if c["midi"] not in new and os.path.isfile(os.path.join(folder, c["midi"]))
    ]
    cards = list(new_cards) + kept
    for c in cards:
        for key in ("png", "wav"):
            if c.get(key) and not os.path.isfile(os.path.join(folder, c[key])):
                c[key] = None
    # a stable sort: a batch keeps its order
    cards.sort(key=lambda c: str(c.get("made", "")), reverse=True)
    write_atomic(store, json.dumps(cards, indent=1))
    page = os.path.join(folder, "index.html")
    write_atomic(page, page_html(title, cards, intro))
    return page


def audio_and_gallery(written, folder, audio=False, *, title="AMT samples", intro=""):
    """written: [(MIDI path, Score, title, understood)] -> a WAV beside each (with audio) and their
    cards in folder/index.html; returns (the page's path, the new cards). A synthesiser that fails
    says so in one line; the MIDI and the page are written all the same."""
    cards, seconds, t0 = [], 0.0, time.perf_counter()
    # one time for the batch, so that it keeps its order on the page
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    for path, score, card_title, understood in written:
        wav = None
        if audio:
            try:
                wav, length = render_wav(path)
                seconds += length
            except UserError as e:
                print(f"no audio: {e}")
                audio = False
        cards.append(
            sample_card(path, score, understood, card_title, folder=folder, made=made, wav=wav)
        )
    elapsed = time.perf_counter() - t0
    if seconds:
        print(
            f"rendered {sum(c['wav'] is not None for c in cards)} WAV ({seconds:.1f} s of audio, "
            f"{SAMPLE_RATE} Hz) "
            f"in {elapsed:.1f} s: {seconds / elapsed:.0f}x real time"
        )
    page = write_gallery(folder, cards, title, intro)
    print(f"gallery: {page}")
    return page, cards


# -----------------------------------------------------------------------------
# tables


def markdown_table(header, rows):
    """A header and rows of values -> a markdown table (with a blank line after it), as reports and
    bench print."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]) + "\n"
