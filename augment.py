"""Training augmentation: a window's music played otherwise, with its attribute prefix in step.
dataset.build_windows applies these to a batch, row by row, as dataset.augmentation draws them:

- transpose: pitched notes and KEY tokens moved by some semitones;
- scale_tempo: every tempo, the prefix's too, some tempo levels faster or slower;
- revoice: a single-instrument window played by other instruments that cover its range, so the
  model hears the instruments a prompt asks for although the corpus is almost all piano.
"""

import numpy as np

import attributes
from attributes import PREFIX_SLOTS
from tokenizer import DRUMS, OFFSET, TEMPO_FINE_LEVELS, TEMPO_LEVELS, TOKEN_TYPE, TYPE


def transpose(seq, shift):
    """Shift every pitched NOTE of seq (B, T) int64 by shift (B,) semitones, and every KEY token (a
    row packed with several pieces has a prefix, and a key, for each) with it; drum notes (after
    PROGRAM_DRUMS) stay. A row's shift is cut so its pitches stay in 0..127. In place; returns the
    shifts applied (B,)."""
    is_note = TOKEN_TYPE[seq[:, 1:]] == TYPE["NOTE"]  # (B, T-1)
    pitched = is_note & (seq[:, :-1] != OFFSET["PROGRAM"] + DRUMS)  # a NOTE follows its PROGRAM
    pitch = seq[:, 1:] - OFFSET["NOTE"]  # (B, T-1)
    low = np.where(pitched, pitch, 127).min(axis=1)  # (B,)
    high = np.where(pitched, pitch, 0).max(axis=1)
    shift = np.clip(np.asarray(shift), -low, 127 - high)
    seq[:, 1:] += np.where(pitched, shift[:, None], 0)
    key = seq - OFFSET["KEY"]  # (B, T)
    moved = OFFSET["KEY"] + 12 * (key // 12) + (key + shift[:, None]) % 12  # (B, T)
    seq[:] = np.where(TOKEN_TYPE[seq] == TYPE["KEY"], moved, seq)
    return shift


# Re-voicing. Ensembles list their parts from the highest to the lowest; a window of k parts (notes
# at once) takes k of them, spread over the list. A soloist plays a melody within its (low, high).
# strings, organ, choir, harpsichord, accordion, piano
ENSEMBLES = [
    [40, 40, 41, 42],  # string quartet: violins, viola, cello
    [56, 60, 57, 58],  # brass: trumpet, horn, trombone, tuba
    [73, 68, 71, 70],  # woodwinds: flute, oboe, clarinet, bassoon
    [48] * 4,
    [19] * 4,
    [52] * 4,
    [6] * 4,
    [21] * 4,
    [0] * 4,
]
SOLOISTS = {
    73: (60, 96),
    40: (55, 100),
    68: (58, 91),
    71: (50, 91),
    56: (54, 82),
    42: (36, 76),
    74: (72, 98),
    41: (48, 88),
    21: (53, 89),
    19: (36, 96),
    6: (29, 89),
    24: (40, 83),
    52: (48, 79),
    0: (21, 108),
}


def revoice(seq, draws):
    """Play each row of seq (B, T) int64 whose draw (B,) is not nan on other instruments: a melody
    on a soloist whose range holds it, a part-song on an ensemble (its notes split into parts by
    pitch), picked by the draw in [0, 1); every prefix's instrument slots in the row follow, unless
    unspecified. Rows that already mix instruments, hold drums only, or fit no soloist stay as they
    are. In place."""
    for b in np.flatnonzero(~np.isnan(draws)):
        revoice_row(seq[b], float(draws[b]))
    return seq


def revoice_row(row, u):
    kind = TOKEN_TYPE[row]  # (T,)
    # each note's PROGRAM
    at = np.flatnonzero((kind[:-1] == TYPE["PROGRAM"]) & (kind[1:] == TYPE["NOTE"]))
    programs = row[at] - OFFSET["PROGRAM"]
    pitched = at[programs != DRUMS]
    if not len(pitched) or len(set(programs[programs != DRUMS].tolist())) > 1:
        return
    pitch = row[pitched + 1] - OFFSET["NOTE"]  # (N,)
    # notes at one onset
    parts = min(int(np.bincount(np.cumsum(kind == TYPE["TIME_ON"])[pitched]).max()), 4)
    if parts == 1:
        fits = [
            p for p, (low, high) in SOLOISTS.items() if low <= pitch.min() and pitch.max() <= high
        ]
        if not fits:
            return
        new = np.full(len(pitched), fits[int(u * len(fits))])
    else:
        ensemble = ENSEMBLES[int(u * len(ENSEMBLES))]
        # high -> low
        members = np.array(ensemble)[np.round(np.linspace(0, len(ensemble) - 1, parts)).astype(int)]
        # 0 = lowest
        band = np.searchsorted(np.quantile(pitch, np.arange(1, parts) / parts), pitch, side="right")
        new = members[parts - 1 - band]
    row[pitched] = OFFSET["PROGRAM"] + new
    heard = np.unique(row[at] - OFFSET["PROGRAM"], return_counts=True)  # drums keep theirs
    slots = attributes.instrument_ids(
        [p for p, _ in sorted(zip(*heard), key=lambda pc: (-pc[1], pc[0]))]
    )
    slot = PREFIX_SLOTS["instruments"]
    for start in np.flatnonzero(np.isin(kind, [TYPE["SEMANTIC"], TYPE["UNCOND"]])):  # each prefix
        where = slice(start + slot.start, start + slot.stop)
        if where.stop <= len(row) and row[where.start] != OFFSET["INSTRUMENTS_NONE"]:
            row[where] = slots


def scale_tempo(seq, levels):
    """Move every tempo of seq (B, T) int64 by levels (B,) tempo levels (70 an octave: 70 doubles
    it), the prefix's TEMPO slot with them: the same notes, played faster or slower. Levels are
    clamped to the grid. In place. A TEMPO_COARSE cut off from its TEMPO_FINE by the window's end
    moves to the coarse level nearest its new tempo."""
    levels = np.asarray(levels)[:, None]  # (B, 1)
    coarse = TOKEN_TYPE[seq] == TYPE["TEMPO_COARSE"]  # (B, T)
    paired = coarse[:, :-1] & (TOKEN_TYPE[seq[:, 1:]] == TYPE["TEMPO_FINE"])  # (B, T-1)
    level = (
        (seq[:, :-1] - OFFSET["TEMPO_COARSE"]) * TEMPO_FINE_LEVELS
        + seq[:, 1:]
        - OFFSET["TEMPO_FINE"]
    )
    new = np.clip(level + levels, 0, TEMPO_LEVELS - 1)  # (B, T-1)
    seq[:, 1:] = np.where(paired, OFFSET["TEMPO_FINE"] + new % TEMPO_FINE_LEVELS, seq[:, 1:])
    seq[:, :-1] = np.where(paired, OFFSET["TEMPO_COARSE"] + new // TEMPO_FINE_LEVELS, seq[:, :-1])
    lone = coarse[:, -1]  # the window's last token: a coarse level with no fine one after it
    mid = (
        (seq[:, -1] - OFFSET["TEMPO_COARSE"]) * TEMPO_FINE_LEVELS
        + TEMPO_FINE_LEVELS // 2
        + levels[:, 0]
    )
    seq[:, -1] = np.where(
        lone,
        OFFSET["TEMPO_COARSE"] + np.clip(mid, 0, TEMPO_LEVELS - 1) // TEMPO_FINE_LEVELS,
        seq[:, -1],
    )
    return seq
