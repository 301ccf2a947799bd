"""Standard MIDI file bytes -> the events AMT reads: notes, program changes, tempos and meters, per
track. A small reader of just those events (prepare.py spent most of its time in mido's parser,
which builds and checks an object per event); anything unusual goes to mido, for its semantics or
its error. Also the one way this project builds a mido track from timed events.

tokenizer.read_midi puts what read_raw returns onto the beat grid."""

import io
import os
import struct
from dataclasses import dataclass

import mido

from files import NotRegularFile, UserError, open_regular

DRUMS = 128  # the program number we give to channel 10 (index 9)

# What one file may cost, so that a hostile one is skipped with its reason, never the machine's
# memory: the largest real MIDI files hold a few MB and a few hundred thousand events.
MAX_FILE_BYTES = 16 << 20
MAX_EVENTS = 1_000_000  # notes on and off, programs, tempos, meters and keys, over all tracks
MAX_MIDO_BYTES = 4 << 20  # an unusual file goes to mido, whose messages weigh far more than ours
MIDO_MAX_TRACKS = 2**15 - 1  # mido reads a header's track count as signed: more reads as none


class MidiError(UserError):
    """A file that can't be read as MIDI; the message is a one-line reason."""


# The events we read, as (tick, kind, channel, a, b): note on and off (a pitch, b velocity;
# a note-on of velocity 0 is a note-off), program change (a program), tempo (a microseconds
# per quarter), time signature (a numerator, b denominator), key signature (a the pitch class of
# the major key with that signature: its pitch collection, C 0, G 7, F 5; b 1 where it says minor).
NOTE_ON, NOTE_OFF, PROGRAM_CHANGE, SET_TEMPO, TIME_SIGNATURE, KEY_SIGNATURE = range(6)


@dataclass
class MidiEvents:
    type: int  # 0, 1 or 2 (type 2: independent sequences)
    ticks_per_beat: int
    tracks: list  # per track: [(tick, kind, channel, a, b)], ticks from the track's start
    ends: list  # per track: the tick of its last event (of any kind)


class _Unusual(Exception):
    """Bytes the fast reader leaves to mido: damage, running status after sysex, odd metas."""


# Data bytes after each system status byte, as mido reads them; mido refuses the others.
SYSTEM_DATA_BYTES = {
    0xF1: 1,
    0xF2: 2,
    0xF3: 1,
    0xF6: 0,
    0xF8: 0,
    0xFA: 0,
    0xFB: 0,
    0xFC: 0,
    0xFE: 0,
}


def parse_smf(data):
    """Standard MIDI file bytes -> MidiEvents, the same as mido.MidiFile(clip=True) reads them.

    prepare.py spent most of its time in mido's parser, which builds and checks an
    object per event; this reads only the events we use. Anything unusual raises
    _Unusual, and load_midi hands the file to mido, for its semantics or its error."""
    if data[:4] != b"MThd" or len(data) < 14 or int.from_bytes(data[4:8], "big") < 6:
        raise _Unusual
    # counts are unsigned, as the format says (65,535 tracks); a negative division is SMPTE time
    midi_type, n_tracks, division = struct.unpack(">HHh", data[8:14])
    pos = 8 + int.from_bytes(data[4:8], "big")
    tracks, ends, room = [], [], MAX_EVENTS
    for _ in range(n_tracks):
        end = pos + 8 + int.from_bytes(data[pos + 4 : pos + 8], "big")
        if data[pos : pos + 4] != b"MTrk" or end > len(data):
            raise _Unusual
        try:
            events, tick = _parse_track(data, pos + 8, end, room)
        except (IndexError, KeyError):
            raise _Unusual from None
        tracks.append(events)
        ends.append(tick)
        room -= len(events)
        pos = end
    return MidiEvents(midi_type, division, tracks, ends)


def too_many_events():
    return MidiError(f"over the limit of {MAX_EVENTS:,} events in a file")


def _parse_track(data, pos, end, room):
    """A track's bytes -> (events, its last tick); room: how many events it may still hold."""
    events, tick, status = [], 0, None
    append = events.append
    while pos < end:
        if len(events) >= room:
            raise too_many_events()
        delta = 0
        while data[pos] & 0x80:  # variable-length delta time
            delta = (delta << 7) | (data[pos] & 0x7F)
            pos += 1
        tick += (delta << 7) | data[pos]
        byte = data[pos + 1]
        pos += 2
        if byte < 0x80:  # running status: this was the first data byte
            if status is None or status >= 0xF0:
                raise _Unusual
            pos -= 1
        else:
            status = byte if byte != 0xFF else status  # meta events don't set running status
            if byte >= 0xF0:
                pos = _skip_system(data, pos, byte, tick=tick, append=append)
                continue
        kind, channel = status >> 4, status & 0x0F
        if kind == 0xC or kind == 0xD:
            if kind == 0xC:
                append((tick, PROGRAM_CHANGE, channel, min(data[pos], 127), 0))
            pos += 1
            continue
        a, b = min(data[pos], 127), min(data[pos + 1], 127)
        pos += 2
        if kind == 0x9:
            append((tick, NOTE_ON if b else NOTE_OFF, channel, a, b))
        elif kind == 0x8:
            append((tick, NOTE_OFF, channel, a, b))
    if pos != end:  # the last event ran past the chunk: mido reads on into the next one
        raise _Unusual
    return events, tick


def _skip_system(data, pos, status, *, tick, append):
    """Past a meta, sysex or system event; tempo, time and key signature are kept. Returns the new
    position."""
    if status == 0xFF:
        meta_type = data[pos]
        pos += 1
    elif status not in (0xF0, 0xF7):
        return pos + SYSTEM_DATA_BYTES[status]
    length = 0
    while data[pos] & 0x80:
        length = (length << 7) | (data[pos] & 0x7F)
        pos += 1
    length = (length << 7) | data[pos]
    pos += 1
    if status == 0xFF and meta_type in (0x51, 0x58):
        if length != (3 if meta_type == 0x51 else 4) or pos + length > len(data):
            raise _Unusual
        if meta_type == 0x51:
            append((tick, SET_TEMPO, 0, int.from_bytes(data[pos : pos + 3], "big"), 0))
        else:
            append((tick, TIME_SIGNATURE, 0, data[pos], 2 ** data[pos + 1]))
    elif status == 0xFF and meta_type == 0x59 and length == 2 and pos + 2 <= len(data):
        sharps, minor = int.from_bytes(data[pos : pos + 1], "big", signed=True), data[pos + 1]
        if -7 <= sharps <= 7 and minor in (0, 1):  # any other is no key signature: left out
            append((tick, KEY_SIGNATURE, 0, 7 * sharps % 12, minor))
    return pos + length


def events_of(mid):
    """mido.MidiFile -> MidiEvents (for files built or decoded in memory, and mido's reading of odd
    files)."""
    tracks, ends = [], []
    for track in mid.tracks:
        events, tick = [], 0
        for msg in track:
            tick += msg.time
            kind = msg.type
            if kind == "note_on" or kind == "note_off":
                on = kind == "note_on" and msg.velocity > 0
                events.append(
                    (tick, NOTE_ON if on else NOTE_OFF, msg.channel, msg.note, msg.velocity)
                )
            elif kind == "program_change":
                events.append((tick, PROGRAM_CHANGE, msg.channel, msg.program, 0))
            elif kind == "set_tempo":
                events.append((tick, SET_TEMPO, 0, msg.tempo, 0))
            elif kind == "time_signature":
                events.append((tick, TIME_SIGNATURE, 0, msg.numerator, msg.denominator))
            elif kind == "key_signature":
                events.append((tick, KEY_SIGNATURE, 0, *signature_of(msg.key)))
        tracks.append(events)
        ends.append(tick)
    return MidiEvents(mid.type, mid.ticks_per_beat, tracks, ends)


LETTER_PC = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def signature_of(name):
    """mido's key name ('Bb', 'F#m') -> (pitch class of the major key of that signature, minor)."""
    minor = name.endswith("m")
    tonic = LETTER_PC[name[0]] + name[1:].count("#") - name[1:].count("b")
    return (tonic + 3 * minor) % 12, int(minor)


def read_file(path):
    """A MIDI file's bytes, of a regular file only and at most MAX_FILE_BYTES: MidiError with the
    reason for a FIFO, a device, a folder or a broken link under a MIDI name (never waited on), or
    a file over the limit (a sparse file of many GB is never read); OSError (from open) for a file
    that can't be read at all."""
    try:
        with open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise MidiError(
                    f"over the size limit ({size / 2**20:,.0f} MiB; at most "
                    f"{MAX_FILE_BYTES >> 20} MiB)"
                )
            data = f.read(MAX_FILE_BYTES + 1)  # the file may have grown since
    except NotRegularFile as e:
        raise MidiError(f"not a regular file ({e.kind})") from None
    if len(data) > MAX_FILE_BYTES:
        raise MidiError(f"over the size limit (at most {MAX_FILE_BYTES >> 20} MiB)")
    return data


def load_midi(src):
    """MidiEvents from a path (read_file), the bytes of a file, a mido.MidiFile or MidiEvents.
    MidiError with a one-line reason for bytes that are not MIDI or a file over a limit; OSError
    (from open) for a file that can't be read at all."""
    if isinstance(src, MidiEvents):
        return src
    if isinstance(src, mido.MidiFile):
        return events_of(src)
    data = src if isinstance(src, bytes) else read_file(src)
    try:
        midi = parse_smf(data)
    except _Unusual:
        midi = events_of(mido_file(data))
        if sum(map(len, midi.tracks)) > MAX_EVENTS:
            raise too_many_events() from None
    if midi.ticks_per_beat <= 0:
        raise MidiError("SMPTE or zero time division is not supported")
    return midi


def mido_file(data):
    """Bytes the fast reader leaves to mido -> mido.MidiFile, or MidiError with mido's reason."""
    if len(data) > MAX_MIDO_BYTES:
        raise MidiError(
            f"not a readable MIDI file (bytes only mido reads, in a file over "
            f"{MAX_MIDO_BYTES >> 20} MiB)"
        )
    if data[:4] == b"MThd" and int.from_bytes(data[10:12], "big") > MIDO_MAX_TRACKS:
        raise MidiError(
            f"not a readable MIDI file (bytes only mido reads, in a file of "
            f"{int.from_bytes(data[10:12], 'big'):,} tracks, more than mido reads)"
        )
    try:
        return mido.MidiFile(file=io.BytesIO(data), clip=True)
    except Exception as e:  # mido raises OSError, EOFError, ValueError, KeyError... on bad bytes
        raise MidiError(
            f"not a readable MIDI file ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else 'no detail'})"
        ) from None


def merged_events(midi):
    """All tracks' events in time order, and the file's end tick.

    Tracks of a type 0 or 1 file play together; at one tick, earlier tracks come
    first, as in mido.merge_tracks. A type 2 file holds independent sequences: we
    play them one after another, each starting where the one before ends."""
    events, offset = [], 0
    for track, end in zip(midi.tracks, midi.ends):
        if midi.type == 2:
            events += [(tick + offset, *rest) for tick, *rest in track]
            offset += end
        else:
            events += track
    events.sort(key=lambda e: e[0])  # stable: keeps track order at a tick
    return events, offset if midi.type == 2 else max(midi.ends, default=0)


def read_raw(midi):
    """Notes as (onset_tick, end_tick, pitch, program, velocity) plus tempos (tick, bpm), meters,
    length, repeated and zero-length note counts, and key signatures (tick, collection, minor).

    Channel state (program) is shared across tracks. A note keeps the program sounding at its onset.
    A note-on of a key already sounding on that channel ends the earlier note, as a synthesizer
    does. A second note-on of a sounding key at the very same tick is not a new note (a key can't be
    struck twice at once): it is counted in `repeats`. A note-off at the note-on's tick is a
    zero-length note: players sound it as a short hit, so it is kept."""
    events, end_tick = merged_events(midi)
    notes, tempos, time_signatures, key_signatures, repeats, zero_length = [], [], [], [], 0, 0
    program = [0] * 16
    sounding = {}  # (channel, pitch) -> (onset_tick, velocity, program)
    for at, kind, channel, a, b in events:
        if kind == NOTE_ON:
            key = (channel, a)
            if key in sounding:
                onset, vel, prog = sounding[key]
                if at == onset:
                    repeats += 1
                    continue
                notes.append((onset, at, a, prog, vel))
            sounding[key] = (at, b, DRUMS if channel == 9 else program[channel])
        elif kind == NOTE_OFF:
            started = sounding.pop((channel, a), None)
            if started is not None:  # else a stray note-off: nothing to end
                notes.append((started[0], at, a, started[2], started[1]))
                zero_length += at == started[0]
        elif kind == PROGRAM_CHANGE:
            program[channel] = a
        elif kind == SET_TEMPO:
            tempos.append((at, 60e6 / max(a, 1)))
        elif kind == TIME_SIGNATURE:
            time_signatures.append((at, a, b))
        else:
            key_signatures.append((at, a, b))
    for (_, pitch), (onset, vel, prog) in sounding.items():  # never ended: end them with the file
        notes.append((onset, max(end_tick, onset), pitch, prog, vel))
        zero_length += end_tick <= onset
    return notes, tempos, time_signatures, end_tick, repeats, zero_length, key_signatures


def track_from_events(events, name=None, end_tick=None):
    """events: (tick, order, mido message) at absolute ticks, in any order -> a mido.MidiTrack with
    delta times, sorted by (tick, order): order puts note-offs before note-ons at a tick. name: a
    track_name first; end_tick: an end_of_track there (else mido adds one at the last event)."""
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)] if name else [])
    now = 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        track.append(msg.copy(time=tick - now))
        now = tick
    if end_tick is not None:
        track.append(mido.MetaMessage("end_of_track", time=max(end_tick - now, 0)))
    return track
