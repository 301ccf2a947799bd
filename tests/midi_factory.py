"""Small MIDI files built with mido, for tests. Times are in beats; TPB ticks per beat."""

import mido

import midifile

TPB = 480


def track(events, name=None):
    """events: (beat, mido.Message or MetaMessage) in any order -> MidiTrack with delta times;
    events at one tick keep the order they are listed in."""
    return midifile.track_from_events(
        [(round(beat * TPB), i, msg) for i, (beat, msg) in enumerate(events)], name
    )


def notes(channel, spec, program=None):
    """spec: (onset_beats, duration_beats, pitch[, velocity]) -> note_on/note_off events."""
    events = (
        []
        if program is None
        else [(0, mido.Message("program_change", channel=channel, program=program))]
    )
    for onset, duration, pitch, *vel in spec:
        events.append(
            (onset, mido.Message("note_on", channel=channel, note=pitch, velocity=(vel or [80])[0]))
        )
        events.append(
            (onset + duration, mido.Message("note_off", channel=channel, note=pitch, velocity=0))
        )
    return events


def tempo(beat, bpm):
    return (beat, mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)))


def midi_file(tracks, type=1):
    mid = mido.MidiFile(type=type, ticks_per_beat=TPB)
    mid.tracks.extend(tracks)
    return mid


def meter(beat, numerator, denominator):
    return (beat, mido.MetaMessage("time_signature", numerator=numerator, denominator=denominator))


def heard(mid):
    """What a player hears: (onset seconds, pitch, instrument) of every struck note, on mido's own
    playback clock, with the program sounding on the channel at the onset ("drums" on channel 10).
    """
    program, now, struck = [0] * 16, 0.0, []
    for msg in mid:  # mido plays the tracks together; msg.time is seconds since the last message
        now += msg.time
        if msg.type == "program_change":
            program[msg.channel] = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            struck.append((now, msg.note, "drums" if msg.channel == 9 else program[msg.channel]))
    return sorted(struck)
