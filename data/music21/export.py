"""Export the corpus bundled with the music21 package to MIDI files, each with a one-sentence
description written from the work's metadata:

data/music21/midi/<collection>/<name>.mid
data/music21/midi/descriptions.jsonl   {"midi_file": "<collection>/<name>.mid", "description":
                                        "...", "exported": a checksum of the text written here}
data/music21/meta/<collection>/<name>.json   what music21 read from each score (cache of the slow
                                              part)

$ python data/music21/export.py          # all ABC tunes + a bounded sample of the scores (~2 min on
2 cores) $ python data/music21/export.py --full   # every score too (the long run) $ python
data/music21/export.py --limit 3 --collections oneills1850,bach --out /tmp/m21

ABC tune books are split into tunes and converted by symusic (it bundles abc2midi); the scores
(MusicXML, Humdrum, Josquin's one-tune-per-voice ABC) go through music21 in a process pool. Works
already exported are skipped, so a re-run takes seconds. What each size holds and the licence of
each collection: README.md next to this file."""

import argparse
import hashlib
import importlib.util
import json
import multiprocessing as mp
import os
import re
import signal
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

# the repository root: describe.py, files.py
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from describe import key_name  # noqa: E402  (one spelling of keys for the whole project)
from files import (
    NotRegularFile,
    UserError,
    check_range,
    check_text,
    folder_lock,
    open_regular,
    read_jsonl,
    remove_stale_temps,
    run_script,
    write_atomic,
)  # noqa: E402

CORPUS = Path(importlib.util.find_spec("music21").submodule_search_locations[0]) / "corpus"
EXCLUDED = {  # path prefix: why it is left out (licences: README.md)
    "palestrina": "its licence reserves all derivative electronic formats",
    "demos": "music21 test fixtures",
    "theoryExercises": "music21 test fixtures",
    "essenFolksong/test": "music21 test samples (copies of other Essen tunes)",
    "trecento/PMFC_12_4-Gloria Rvat 1419_bak": "backup copy of another file",
    "schumann_robert/dichterliebe_no2": "same piece as schumann_robert/opus48no2",
}
# a file's own terms
RESERVED = re.compile(rb"derivative electronic formats reserved|all rights reserved", re.I)
OWN = (("midi", ".mid"), ("meta", ".json"))  # what this script writes of each work: folder, suffix
# preference order when a work comes in several formats
SCORE_EXTS = [".mxl", ".xml", ".musicxml", ".krn"]
ABC = {  # collection or book: (where it comes from, adjective for its tunes)
    "essenFolksong": ("the Essen folksong collection", ""),
    "oneills1850": (
        "O'Neill's Music of Ireland, a collection of 1850 Irish melodies (1903)",
        "Irish",
    ),
    "ryansMammoth": (
        "Ryan's Mammoth Collection of American fiddle tunes (1883)",
        "American fiddle",
    ),
    "airdsAirs": ("Aird's Selection of Scotch, English, Irish and Foreign Airs (1782)", "Scottish"),
    "americanfifeopus": ("a book of Colonial and Civil War American fife music", "American fife"),
    "northumbrianminstrelsyopus": ("Northumbrian Minstrelsy (1882)", "Northumbrian"),
    "nottingham-dataset": ("the Nottingham Music Database", "British folk"),
    "miscFolk": ("a book of folk tunes", "folk"),
}
SCORES = {  # path prefix (the longest match wins): (composer, what kind of music it is)
    "bach": ("Johann Sebastian Bach", "Baroque chorale harmonisation"),
    "beethoven": ("Ludwig van Beethoven", "Classical string quartet movement"),
    "haydn": ("Joseph Haydn", "Classical string quartet movement"),
    "mozart": ("Wolfgang Amadeus Mozart", "Classical string quartet movement"),
    "mozart/k545": ("Wolfgang Amadeus Mozart", "Classical piano sonata movement"),
    "monteverdi": ("Claudio Monteverdi", "late Renaissance madrigal"),
    "josquin": ("Josquin des Prez", "Renaissance polyphonic song"),
    "lusitano": ("Vicente Lusitano", "Renaissance madrigal"),
    "trecento": (None, "fourteenth-century polyphonic piece"),
    "ciconia": ("Johannes Ciconia", "fourteenth-century canon"),
    "luca": ("D. Luca", "fourteenth-century Mass movement"),
    "corelli": ("Arcangelo Corelli", "Baroque trio sonata movement"),
    "handel": ("George Frideric Handel", "Baroque opera aria"),
    "cpebach": ("Carl Philipp Emanuel Bach", "keyboard sonata movement"),
    "chopin": ("Frederic Chopin", "Romantic piano mazurka"),
    "schubert": ("Franz Schubert", "Romantic art song"),
    "schumann_robert": ("Robert Schumann", "Romantic art song"),
    "schumann_robert/opus41no1": ("Robert Schumann", "Romantic string quartet movement"),
    "schumann_clara": ("Clara Schumann", "Romantic piano polonaise"),
    "schumann_clara/opus17": ("Clara Schumann", "Romantic piano trio movement"),
    "verdi": ("Giuseppe Verdi", "Romantic opera aria"),
    "weber": ("Carl Maria von Weber", "Romantic clarinet concertino"),
    "beach": ("Amy Beach", "late Romantic song"),
    "joplin": ("Scott Joplin", "ragtime piano piece"),
    "johnson_j_r": ("J. Rosamond Johnson", "hymn"),
    "liliuokalani": ("Liliuokalani", "Hawaiian song"),
    "leadSheet": (None, "popular song lead sheet"),
    "webern": ("Anton Webern", "twentieth-century sacred song"),
    "schoenberg": ("Arnold Schoenberg", "twentieth-century atonal piano piece"),
}
# The default size: every ABC tune, the shortest scores up to these counts, and a wall-clock budget.
# All 410 Bach chorales (four parts, choir programs) and the string quartets that parse in seconds
# (Haydn, Mozart, Schumann, the shorter Beethoven: violins, viola and cello in parts, about 100k
# notes) so that instrument and texture control have real part-music to learn from.
DEFAULT_CAP = {
    "bach": 410,
    "monteverdi": 8,
    "trecento": 8,
    "josquin": 8,
    "haydn": 9,
    "mozart": 16,
    "schumann_robert": 6,
    "beethoven": 8,
}
DEFAULT_CAP_OTHER, DEFAULT_BUDGET_S = 2, 240
DANCES = [
    "slip jig",
    "double jig",
    "single jig",
    "jig",
    "reel",
    "hornpipe",
    "strathspey",
    "highland fling",
    "fling",
    "clog",
    "set dance",
    "quickstep",
    "march",
    "waltz",
    "polka",
    "mazurka",
    "schottische",
    "minuet",
    "gavotte",
    "slide",
    "planxty",
    "lament",
    "lullaby",
    "walkaround",
    "air",
    "song",
]
GENRES = [
    ("Kinder|Erge", "children's song"),
    ("geistlich|religi", "sacred song"),
    ("Soldat|Krieg", "soldiers' song"),
    ("Jaeger", "hunting song"),
    ("Trink", "drinking song"),
    ("Tanz|Reigen|Yangge", "dance song"),
    ("Abschied", "farewell song"),
    ("Scherz|lustig", "humorous song"),
    ("Wiegen", "lullaby"),
    ("Ballade|Romanze|erzaehl|Sage", "ballad"),
    ("Liebe|aiqing", "love song"),
    ("Klage", "lament"),
    ("Haozi", "work song"),
    ("Shange", "mountain song"),
    ("Xiaodiao", "xiaodiao ditty"),
]
PLACES = dict(
    Deutschland="Germany",
    Lothringen="Lorraine",
    Luxemburg="Luxembourg",
    Frankreich="France",
    Polen="Poland",
    Jugoslawien="Yugoslavia",
    Schweiz="Switzerland",
    Oesterreich="Austria",
    Niederlande="the Netherlands",
    Irland="Ireland",
    UdSSR="the Soviet Union",
    Russland="Russia",
    Ungarn="Hungary",
    Tschechoslowakei="Czechoslovakia",
    Rumaenien="Romania",
    Italien="Italy",
    Elsass="Alsace",
    Hessen="Hesse",
    Schlesien="Silesia",
    Westfalen="Westphalia",
    Rheinland="the Rhineland",
    Thueringen="Thuringia",
    Sachsen="Saxony",
    Franken="Franconia",
    Schwaben="Swabia",
    Bayern="Bavaria",
    Pommern="Pomerania",
    Tirol="Tyrol",
    Boehmen="Bohemia",
    Siebenbuergen="Transylvania",
    Steiermark="Styria",
    Niederrhein="the Lower Rhine",
    Rhein="the Rhine",
    flaemisch="Flanders",
    Schweden="Sweden",
    Galizien="Galicia",
    **{"Nord-Deutschland": "northern Germany"},
    Sueddeutschland="southern Germany",
)
CONTINENTS = {
    "Europa",
    "Mitteleuropa",
    "Osteuropa",
    "Suedosteuropa",
    "Suedeuropa",
    "Nordeuropa",
    "Westeuropa",
    "Asien",
    "Ostasien",
    "Amerika",
    "",
}
MODES = dict(
    m="minor",
    min="minor",
    aeo="minor",
    maj="major",
    ion="major",
    dor="dorian",
    mix="mixolydian",
    phr="phrygian",
    lyd="lydian",
    loc="locrian",
)
NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()
VOCAL = {
    "soprano",
    "alto",
    "tenor",
    "bass",
    "canto",
    "quinto",
    "basso",
    "cantus",
    "altus",
    "superius",
    "bassus",
    "motetus",
    "triplum",
    "duplum",
    "contratenor",
    "voice",
    "sextus",
}
ABBREV = dict(
    violoncello="cello",
    violino="violin",
    tripl="triplum",
    dupl="duplum",
    ct="contratenor",
    c="cantus",
    s="soprano",
    a="alto",
    t="tenor",
    b="bass",
)
# one instrument on several staves
KEYBOARD = {"piano", "pianoforte", "harpsichord", "organ", "keyboard"}
IDENT = [
    (r"bwv(\d+(?:\.\d+)?)", "BWV {}"),
    (r"opus(\d+)", "Op. {}"),
    (r"opus\d+no(\d+)", "No. {}"),
    (r"(?:^|/)k(\d+)", "K. {}"),
    (r"madrigal\.(\d+)\.(\d+)", "Book {}, No. {}"),
    (r"movement(\d+)", "movement {}"),
]

# ---------------------------------------------------------------- descriptions


def describe(m):
    """Metadata dict -> one English sentence; each field appears only when the work has it."""
    head = (
        ("An " if m["kind"][0] in "AEIOU" else "A ")
        + m["kind"]
        + "".join(
            s
            for s in (
                m.get("composer") and f" by {m['composer']}",
                m.get("ident") and f" ({m['ident']})",
                m.get("origin") and f" from {m['origin']}",
                m.get("genre") and f" ({m['genre']})",
                m.get("ensemble") and f" {m['ensemble']}",
            )
            if s
        )
    )
    music = " and ".join(s for s in (m.get("key"), m.get("meter") and f"{m['meter']} time") if s)
    parts = [
        head,
        music and f"in {music}",
        m.get("tempo"),
        m.get("source") and f"from {m['source']}",
        m.get("title") and f'titled "{m["title"]}"',
    ]
    return ", ".join(p for p in parts if p) + "."


# ("B-", "major") or ("Bb", "") -> "B flat major", ("D", "dor") -> "D dorian"
def key_words(tonic, mode):
    mode = mode.lower()
    return key_name(tonic, MODES.get(mode[:3] if len(mode) > 1 else mode, "major"))


# "12. Lugentum siccentur" -> "Lugentum siccentur"; "Kerry Cobbler, The" -> "The Kerry Cobbler"
def clean_title(t):
    t = re.sub(r"^\d+[a-z]?\.\s*|^.*\.(xml|mxl|krn|abc)$", "", (t or "").strip().split("\n")[0])
    t = re.sub(r"^(.*?)[.,]*, (The|A)$", r"\2 \1", " ".join(t.split())).strip(" .,;:")
    return (t.title() if t.isupper() else t).replace('"', "'")


# first value of each ABC field letter (T: R: K: M: O: C: Q: ...) up to the K: line
def header_fields(text):
    fields = {}
    for line in text.splitlines():
        if re.match(r"[A-Za-z]:", line):
            fields.setdefault(line[0], line[2:].strip())
            if line[0] == "K":
                break
    return fields


def folk_song_meta(fields, rhythm):
    """An Essen folk song's kind, origin and genre."""
    # O: "Europa, Mitteleuropa, Deutschland, Hessen" -> "Hesse, Germany"
    country, region = (
        [
            PLACES.get(p, p)
            for p in (
                re.sub(r"\(.*?\)|\]", "", s).replace(" - ", "-").strip(" -")
                for s in re.split(r"[;/]", fields.get("O", ""))[0].split(",")
            )
            if p not in CONTINENTS
        ]
        + ["", ""]
    )[:2]
    return dict(
        kind="folk song",
        origin=region
        if country and region.endswith(country)
        else ", ".join(p for p in (region, country) if p),
        genre=next((g for pat, g in GENRES if re.search(pat, rhythm, re.I)), None),
    )


def dance_meta(fields, rhythm, title, adj):
    """A dance tune's kind (jig, reel, hornpipe...) and composer."""
    dance = next(
        (
            d
            for d in DANCES
            for text in (rhythm, title.replace("Quick Step", "Quickstep"))
            if re.search(rf"\b{d}s?\b", text, re.I)
        ),
        "tune",
    )
    # O'Neill's C: is often "Irish." or "collected by ..."
    composer = fields.get("C", "").strip(' ."')
    composer = (
        None
        if re.search(r"collected|irish|scotch|trad|anon", composer, re.I)
        else clean_title(composer)
    )
    return dict(kind=f"{adj} {dance}".strip(), composer=composer)


def tune_meta(fields, body, book, collection):
    """Header fields of one ABC tune -> metadata dict for describe()."""
    source, adj = ABC.get(book) or ABC[collection]
    title, rhythm = clean_title(fields.get("T")), fields.get("R", "")
    m = dict(source=source, title=title)
    if collection == "essenFolksong":
        m.update(folk_song_meta(fields, rhythm))
    else:
        m.update(dance_meta(fields, rhythm, title, adj))
    k = re.match(r"\s*([A-G][#b]?)\s*([A-Za-z]*)", fields.get("K", ""))
    meter = {"C": "4/4", "C|": "2/2"}.get(fields.get("M", "").strip(), fields.get("M", "").strip())
    q = re.search(r"=\s*(\d+)|^\s*(\d+)\s*$", fields.get("Q", ""))
    # O'Neill's marks
    mark = re.search(
        r'(?m)^N:\s*"((?:very |rather )?(?:slow|moderate|lively|spirit|with spirit|tender|animated|'
        r'quick|brisk|plaintive|with expression|graceful)[^"]*?)\.?"',
        body,
        re.I,
    )
    voices = set(re.findall(r"(?m)^V:\s*(\S+)", body))
    # not fingerings like "4"
    chords = re.search(r'"[A-G][#b]?(m|maj|min|dim|aug|sus|7|6|9|/|")', body)
    m.update(
        key=k and key_words(k[1], k[2]),
        meter=meter if re.fullmatch(r"\d+/\d+", meter) else None,
        tempo=q and f"at {q[1] or q[2]} beats per minute" or mark and f'marked "{mark[1]}"',
        ensemble=f"in {NUMBERS[len(voices)]} parts"
        if len(voices) > 1
        else "as a melody with chord accompaniment"
        if chords
        else "for a single melody line",
    )
    return m


# ["Violin I", "Violin II", "Viola", "Cello"] -> "for string quartet (two violins, ...)"
def ensemble(part_names):
    names = [
        re.sub(
            r"\b(\d+(st|nd|rd|th)?|[iv]+|musicxml part|part)\b|\.", "", (x or "").lower()
        ).strip()
        for x in part_names
    ]
    names = [ABBREV.get(x, x) for x in names]
    counts = Counter(x for x in names if x)
    for x in KEYBOARD & set(counts):
        counts[x] = 1  # two piano staves are one piano
    words = [
        f"{NUMBERS[c]} {x}{'es' if x.endswith('s') else 's'}" if c > 1 else x
        for x, c in counts.items()
    ]
    listed = ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)
    n = len(part_names)
    if not counts:
        return f"for {NUMBERS[min(n, 12)]} parts" if n > 1 else "for a single melody line"
    if set(counts) <= VOCAL:
        return f"for {NUMBERS[min(n, 12)]} voices ({listed})" if n > 1 else f"for solo {listed}"
    if counts == Counter(violin=2, viola=1, cello=1):
        return f"for string quartet ({listed})"
    return f"for {listed}"


PART_PROGRAMS = dict(
    violin=40,
    viola=41,
    cello=42,
    contrabass=43,
    harp=46,
    flute=73,
    piccolo=72,
    oboe=68,
    clarinet=71,
    bassoon=70,
    horn=60,
    trumpet=56,
    trombone=57,
    tuba=58,
    piano=0,
    pianoforte=0,
    keyboard=0,
    harpsichord=6,
    organ=19,
    guitar=24,
    lute=24,
    recorder=74,
)


def part_program(part_name, n_parts):
    """The GM program a part's name implies (Violin I -> 40, Soprano -> choir); None when the name
    says nothing."""
    name = re.sub(
        r"\b(\d+(st|nd|rd|th)?|[iv]+|musicxml part|part)\b|\.", "", (part_name or "").lower()
    ).strip()
    name = ABBREV.get(name, name)
    if name in VOCAL:
        return 52 if n_parts > 1 else 53  # Choir Aahs for a choir part, Voice Oohs for a solo voice
    return PART_PROGRAMS.get(name)


def set_programs(s):
    """Give each part of a parsed score the GM program its name implies, so the exported MIDI
    carries strings, winds and voices instead of every part on the piano. A program the file
    declares stays, except on a part named for a voice (several chorales declare a notation
    program's harpsichord for Soprano...Bass)."""
    from music21 import instrument

    parts = list(s.parts) or [s]
    for part in parts:
        program = part_program(part.partName, len(parts))
        instruments = list(part.recurse().getElementsByClass(instrument.Instrument))
        declared = any(i.midiProgram is not None for i in instruments)
        if program is None or (declared and program not in (52, 53)):
            continue
        for inst in instruments:
            inst.midiProgram = program
        if not instruments:
            inst = instrument.Instrument()
            inst.midiProgram = program
            part.insert(0, inst)


def score_meta(info, rel):
    """What a worker read from a parsed score + its path -> metadata dict for describe()."""
    composer, kind = SCORES[
        max((p for p in SCORES if rel == p or rel.startswith(p + "/")), key=len)
    ]
    name = rel.split("/", 1)[1]
    ident = ", ".join(
        fmt.format(*m.groups()) for pat, fmt in IDENT for m in [re.search(pat, name)] if m
    )
    bpm = info.get("bpm")
    tempo = ", ".join(
        s for s in (info.get("tempo_text"), bpm and f"at about {round(bpm)} beats per minute") if s
    )
    file_title = re.sub(r"[_-]+", " ", re.sub(r"^PMFC_[\d_]+[a-z]?-", "", rel.split("/")[-1]))
    title = clean_title(info.get("title")) or file_title
    composer = composer or clean_title(info.get("composer"))
    return dict(
        kind=kind,
        composer=None if re.match(r"anon", composer, re.I) else composer,
        ident=ident,
        ensemble=ensemble(info["part_names"]),
        key=None if "atonal" in kind else info.get("key"),
        meter=info.get("meter"),
        tempo=tempo,
        title=None if ident else title,
    )


# ---------------------------------------------------------------- finding works


# do the file's own terms reserve derived formats? (rights sit near the top of MusicXML)
def reserved(path):
    if path.suffix == ".mxl":
        with zipfile.ZipFile(path) as z:
            return any(
                RESERVED.search(z.open(n).read(8192))
                for n in z.namelist()
                if not n.startswith("META")
            )
    return bool(
        RESERVED.search(path.read_bytes() if path.suffix == ".krn" else path.open("rb").read(8192))
    )


def find_works(collections):
    """-> {collection: [work dicts]} and {why: count} of the files left out."""
    works, left_out, seen_x = defaultdict(list), Counter(), set()
    for path in sorted(CORPUS.rglob("*")):
        rel = path.relative_to(CORPUS).as_posix()
        collection, stem = rel.split("/")[0], rel.rsplit(".", 1)[0]
        if collection not in collections or path.suffix not in SCORE_EXTS + [".abc"]:
            # also skips .rntxt analyses and Finale / MuseData duplicates of MusicXML files
            continue
        why = next((r for p, r in EXCLUDED.items() if rel.startswith(p)), None)
        if why is None and path.suffix != ".abc" and reserved(path):
            why = "the file's own licence reserves derived formats"
        if why:
            left_out[why] += 1
        # josquin: one tune per voice, music21 merges them
        elif path.suffix == ".abc" and collection != "josquin":
            chunks = re.split(r"(?m)^(?=X:)", path.read_text(encoding="latin-1"))
            # lines before the first X: apply to every tune of the book
            header, tunes = (chunks[0], chunks[1:])
            for i, tune in enumerate(tunes, 1):
                fields = {**header_fields(header), **header_fields(tune)}
                # its books overlap; X: is O'Neill's own tune number
                if collection == "oneills1850":
                    if fields.get("X") in seen_x:
                        continue
                    seen_x.add(fields.get("X"))
                name = path.stem if len(tunes) == 1 else f"{path.stem}_{i:04d}"
                works[collection].append(
                    dict(
                        rel=f"{collection}/{name}",
                        abc=header + tune,
                        meta=tune_meta(fields, tune, path.stem, collection),
                    )
                )
        else:
            better = (
                SCORE_EXTS[: SCORE_EXTS.index(path.suffix)] if path.suffix in SCORE_EXTS else []
            )
            # a preferred format of the same work wins
            if not any((CORPUS / (stem + e)).exists() for e in better):
                works[collection].append(
                    dict(
                        rel=re.sub(r"[^\w./-]+", "_", stem), src=str(path), size=path.stat().st_size
                    )
                )
    return works, left_out


# ---------------------------------------------------------------- workers


# abc2midi and music21 print warnings for many files: keep the progress bar readable
def quiet_worker(scratch):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1), os.dup2(devnull, 2)
    # symusic's abc2midi goes through temp files whose names can collide between processes (about
    # one tune in a few hundred failed at random with 2 workers): a temp folder per worker keeps
    # them apart
    os.environ["TMPDIR"] = tempfile.mkdtemp(dir=scratch)

    def on_timer(*_):
        raise TimeoutError("took more than --timeout CPU seconds")

    signal.signal(signal.SIGVTALRM, on_timer)


# one line, with numbers and temp paths blanked so that equal failures group in the summary
def reason(e):
    msg = re.sub(r"/tmp/\S+|\d+", "N", str(e).strip().split("\n")[0])
    return "abc2midi made no MIDI" if "did not create" in msg else f"{type(e).__name__}: {msg}"[:90]


def export_abc(job):  # (rel, abc text, out path) -> (rel, {"notes": n} or {"error": why}, seconds)
    import symusic

    rel, text, out = job
    t0 = time.process_time()
    try:
        score = symusic.Score.from_abc(text)
        if score.note_num() == 0:
            raise ValueError("no notes")
        write_atomic(out, score.dumps_midi())
        return rel, dict(notes=score.note_num()), time.process_time() - t0
    except Exception as e:
        return rel, dict(error=reason(e)), time.process_time() - t0


def play_once(s):  # drop repeat barlines, brackets and D.C./segno marks that music21 cannot expand
    from music21 import bar, repeat, spanner, stream

    for m in s[stream.Measure]:
        for side in ("leftBarline", "rightBarline"):
            if isinstance(getattr(m, side), bar.Repeat):
                setattr(m, side, None)
    for el in list(
        s.recurse().getElementsByClass((repeat.RepeatExpression, spanner.RepeatBracket))
    ):
        el.activeSite.remove(el)


# (rel, source, out path, meta path, timeout) -> (rel, info or {"error": why}, seconds)
def export_score(job):
    from music21 import converter, key, meter, midi, repeat, stream, tempo

    rel, src, out, meta_path, timeout = job
    t0 = time.process_time()
    # CPU time: a busy machine does not time works out
    signal.setitimer(signal.ITIMER_VIRTUAL, timeout)
    try:
        s = converter.parse(src, forceSource=True)
        if isinstance(s, stream.Opus):
            s = s.mergeScores()  # Josquin's ABC: one tune per voice, all with the same title
        flat = s.flatten()
        ks = flat.getElementsByClass(key.KeySignature).first()
        try:
            k = s.analyze("key")  # cheap next to parsing; tells a major key from its relative minor
        except Exception:
            k = None
        # trust the declared key over the analysis
        if ks is not None and (k is None or k.sharps != ks.sharps):
            k = ks if isinstance(ks, key.Key) else ks.asKey("major")
        ts = flat.getElementsByClass(meter.TimeSignature).first()
        mm = flat.getElementsByClass(tempo.MetronomeMark).first()
        md = s.metadata
        info = dict(
            part_names=[p.partName for p in (list(s.parts) or [s])],
            meter=ts and ts.ratioString,
            key=k and key_words(k.tonic.name, k.mode),
            bpm=mm and mm.getQuarterBPM(),
            tempo_text=mm and mm.text,
            title=md and (md.title or md.movementName),
            composer=md and md.composer,
            notes=sum(len(n.pitches) for n in flat.notes),
        )
        if info["notes"] == 0:
            raise ValueError("no notes")
        set_programs(s)
        try:
            data = midi.translate.music21ObjectToMidiFile(s).writestr()
        # badly formed repeats: play the score once through as written
        except repeat.ExpanderException:
            play_once(s)
            data = midi.translate.music21ObjectToMidiFile(s).writestr()
        write_atomic(out, data)
    except Exception as e:  # TimeoutError from the timer included
        info = dict(error=reason(e))
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    Path(meta_path).parent.mkdir(parents=True, exist_ok=True)
    # failures are remembered too, so that a re-run does not retry them
    write_atomic(meta_path, json.dumps(info))
    return rel, info, time.process_time() - t0


def run_pool(fn, jobs, desc, *, budget_s, stall_s):
    """Map fn over jobs on all cores -> (results, why it stopped early or None)."""
    results, deadline = [], time.time() + budget_s
    if not jobs:
        return results, None
    with (
        tempfile.TemporaryDirectory(prefix="amt-export-") as scratch,
        mp.Pool(os.cpu_count(), initializer=quiet_worker, initargs=(scratch,)) as pool,
    ):
        it = pool.imap_unordered(fn, jobs)  # chunksize 1: only its iterator has next(timeout)
        for _ in tqdm(jobs, desc=desc, unit="work", smoothing=0.05, disable=None):
            try:
                results.append(it.next(timeout=max(0.01, min(stall_s, deadline - time.time()))))
            except mp.TimeoutError:  # leaving the with block terminates the workers
                over = time.time() >= deadline
                return (
                    results,
                    "not attempted: time budget (run again to go on)" if over else "stalled",
                )
    return results, None


# ---------------------------------------------------------------- main


def parse_args(argv):
    ap = argparse.ArgumentParser(
        description="Export the music21 corpus to MIDI files with text descriptions."
    )
    ap.add_argument(
        "--full", action="store_true", help="export every score, not a sample (long run)"
    )
    ap.add_argument(
        "--out", default=str(Path(__file__).resolve().parent), help="dataset folder (default: here)"
    )
    ap.add_argument(
        "--limit", type=int, default=None, help="at most N works per collection (for tests)"
    )
    ap.add_argument("--collections", default=None, help="comma-separated subset of the collections")
    ap.add_argument(
        "--timeout", type=int, default=300, help="CPU seconds one score may take before it fails"
    )
    args = ap.parse_args(argv)
    if args.limit is not None:
        check_range("--limit", args.limit, low=0)
    check_range("--timeout", args.timeout, low=1)
    check_text("--out", args.out)
    check_text("--collections", args.collections)
    known = sorted(p.name for p in CORPUS.iterdir() if p.name in ABC or p.name in SCORES)
    collections = args.collections.split(",") if args.collections else known
    if set(collections) - set(known):
        raise UserError(
            f"unknown collection(s) {sorted(set(collections) - set(known))}; valid: "
            f"{','.join(known)}"
        )
    return args, collections


def plan(works, args, out, stats):
    """Which works to export now -> (abc jobs, score jobs, {rel: (collection, work)}); cached works
    are counted."""
    abc_jobs, score_jobs, by_rel = [], [], {}
    for collection, ws in works.items():
        is_abc = "abc" in ws[0]
        if not is_abc:
            # the sample is the shortest scores: fast and fixed
            ws.sort(key=lambda w: (w["size"], w["rel"]))
        cap = None if args.full or is_abc else DEFAULT_CAP.get(collection, DEFAULT_CAP_OTHER)
        cap = min(c for c in (cap, args.limit, len(ws)) if c is not None)
        st = stats[collection]
        st["found"] = len(ws)
        for i, w in enumerate(ws):
            by_rel[w["rel"]] = collection, w
            w["mid"] = out / "midi" / f"{w['rel']}.mid"
            meta_path = out / "meta" / f"{w['rel']}.json"
            # exported (or failed) before: no need to parse it again
            if not is_abc and meta_path.exists():
                try:
                    with open_regular(meta_path) as f:
                        w["meta"] = json.loads(f.read())
                # a broken cache entry (edited, from another version, a FIFO): export it again
                except (ValueError, NotRegularFile):
                    pass
                if not isinstance(w.get("meta", {}), dict):
                    del w["meta"]
            if i >= cap and not ("meta" in w and w["mid"].exists()):
                continue  # outside the sample (a work a --full run already exported stays in)
            st["selected"] += 1
            if "error" in w.get("meta", {}):
                st["failed"][w["meta"]["error"] + " (earlier run)"] += 1
            elif w["mid"].exists() and "meta" in w:
                st["cached"] += 1
            else:
                w["mid"].parent.mkdir(parents=True, exist_ok=True)
                if is_abc:
                    abc_jobs.append((w["rel"], w["abc"], str(w["mid"])))
                else:
                    score_jobs.append(
                        (i, w["rel"], w["src"], str(w["mid"]), str(meta_path), args.timeout)
                    )
    # round robin over the collections:
    score_jobs = [job[1:] for job in sorted(score_jobs, key=lambda j: j[0])]
    return abc_jobs, score_jobs, by_rel  # the budget cuts the longest tails


def export_all(abc_jobs, score_jobs, by_rel, *, stats, args):
    """Run both pools, counting what each collection gained and why works failed."""
    budget = float("inf") if args.full else DEFAULT_BUDGET_S
    for fn, jobs, desc, budget_s in [
        (export_abc, abc_jobs, "ABC tunes (symusic)", float("inf")),
        (export_score, score_jobs, "scores (music21)", budget),
    ]:
        results, stopped = run_pool(
            fn, jobs, desc, budget_s=budget_s, stall_s=3 * args.timeout + 60
        )
        for rel, info, seconds in results:
            collection, w = by_rel[rel]
            st = stats[collection]
            st["seconds"] += seconds
            if "error" in info:
                st["failed"][info["error"]] += 1
            else:
                st["new"], st["notes"] = st["new"] + 1, st["notes"] + info["notes"]
                w.setdefault("meta", info)  # abc works have theirs from the header
        for rel in {j[0] for j in jobs} - {r[0] for r in results}:  # the pool stopped before these
            stats[by_rel[rel][0]]["failed"][stopped] += 1


def write_descriptions(works, out):
    """descriptions.jsonl: every work whose MIDI exists, from this run or an earlier one (a --full
    run's too), merged into the lines already there. A line of the user's (one this script did not
    write, or wrote and the user edited: see exported_here) is kept as it is, for a file exported
    now too; a run over some collections keeps the lines of the others (those whose MIDI is still
    there). Returns (works described, lines of other collections kept, the user's lines kept)."""
    path, lines = out / "midi" / "descriptions.jsonl", {}
    for collection, ws in sorted(works.items()):
        for w in ws:
            if w["mid"].exists() and "error" not in w.get("meta", {"error": "not exported"}):
                meta = w["meta"] if "abc" in w else score_meta(w["meta"], w["rel"])
                text = describe(meta)
                lines[f"{w['rel']}.mid"] = dict(
                    midi_file=f"{w['rel']}.mid", description=text, exported=checksum(text)
                )
    old = [
        row
        for row in (read_jsonl(path) if path.exists() else [])
        if isinstance(row, dict) and isinstance(row.get("midi_file"), str)
    ]
    users = [row for row in old if not exported_here(row, lines.get(row["midi_file"]))]
    described = len(lines)
    for row in users:
        lines.pop(row["midi_file"], None)  # the user's caption for a file wins over ours
    kept = [
        row
        for row in old
        if exported_here(row, lines.get(row["midi_file"]))
        and row["midi_file"].split("/")[0] not in works
        and (out / "midi" / row["midi_file"]).exists()
    ]
    # stable: by collection
    rows = sorted(
        users + kept + list(lines.values()), key=lambda row: row["midi_file"].split("/")[0]
    )
    if rows:
        write_atomic(path, "".join(map(jsonl_line, rows)))
    return described, len(kept), len(users)


def checksum(text):
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def exported_here(row, ours=None):
    """Whether a descriptions.jsonl line is this script's own, as it wrote it: its "exported"
    checksum is that of its description (a line the user wrote has none; one they edited no longer
    matches), or (a line of an older run, without one) its text is what this run writes (ours)."""
    text = row.get("description")
    if not isinstance(text, str):
        return False
    if "exported" in row:
        return row["exported"] == checksum(text)
    return ours is not None and ours["description"] == text


def jsonl_line(row):
    """A row -> its JSON line, UTF-8 as it reads; a lone surrogate (a \\ud800 escape read back)
    stays an escape, as UTF-8 cannot hold it."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row)
    return line + "\n"


def print_summary(stats, left_out):
    cols, total = ["found", "selected", "new", "cached", "failed", "notes", "cpu s"], Counter()
    print(f"\n{'collection':<20}" + "".join(f"{c:>9}" for c in cols))
    for c, st in sorted(stats.items()):
        row = dict(st, failed=sum(st["failed"].values()), **{"cpu s": round(st["seconds"])})
        total.update({k: row[k] for k in cols})
        print(f"{c:<20}" + "".join(f"{row[k]:>9}" for k in cols))
        for why, n in st["failed"].most_common(3):
            print(f"{'':<22}{n:>5} x {why}")
    print(f"{'total':<20}" + "".join(f"{total[k]:>9}" for k in cols))
    for why, n in sorted(left_out.items()):
        print(f"left out: {n} files, {why}")


def main(argv=None):
    args, collections = parse_args(argv)
    out, t_start = Path(args.out), time.time()
    # one export at a time: a second would write through the first's files
    with folder_lock(out, create=True):
        # to count them in the summary
        excluded = set() if args.collections else {p for p in EXCLUDED if "/" not in p}
        works, left_out = find_works(set(collections) | excluded)
        # left by a killed run: the temporaries of the files this export writes, nothing else
        remove_stale_temps(
            [out / "midi" / "descriptions.jsonl"]
            + [out / d / f"{w['rel']}{ext}" for ws in works.values() for w in ws for d, ext in OWN]
        )
        stats = defaultdict(
            lambda: dict(
                found=0, selected=0, new=0, cached=0, failed=Counter(), seconds=0.0, notes=0
            )
        )
        abc_jobs, score_jobs, by_rel = plan(works, args, out, stats)
        export_all(abc_jobs, score_jobs, by_rel, stats=stats, args=args)
        n_described, n_kept, n_users = write_descriptions(works, out)
    print_summary(stats, left_out)
    kept = f", and {n_kept} of other collections kept from earlier runs" if n_kept else ""
    if n_users:
        kept += f"; {n_users} lines of yours kept as they are (remove one to have it written here)"
    print(
        f"{n_described} works described in {out / 'midi' / 'descriptions.jsonl'}{kept} "
        f"({time.time() - t_start:.0f} s)"
    )
    if not n_described:
        raise UserError("nothing could be exported; see the failures above")


if __name__ == "__main__":
    run_script(main)
