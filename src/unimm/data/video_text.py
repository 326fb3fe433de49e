"""Captions and question/answer pairs of a Moving MNIST clip, made from its exact truth.

``"a 3 moving to the left"``, ``"a handwritten seven moving down, then bouncing up"``; questions ask the
direction (answered by a direction name, ``"left"``), the digit (``"seven"``), the count (``"one"``) and
whether and where to it bounces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unimm.data.captions import article
from unimm.data.prepare import DIGIT_NAMES

if TYPE_CHECKING:
    from unimm.data.video import DigitTrack

DIRECTION_QUESTION = "which way does the digit move?"  # answered by the first direction's name
AFTER_BOUNCE_QUESTION = "which way does the digit move after it bounces?"  # the second's, when it bounces

PHRASES = {
    "left": "to the left",
    "right": "to the right",
    "up": "up",
    "down": "down",
    "up-left": "up and to the left",
    "up-right": "up and to the right",
    "down-left": "down and to the left",
    "down-right": "down and to the right",
}


def motion_phrase(track: DigitTrack) -> str:
    """``"moving down"`` or ``"moving down, then bouncing up"``."""
    text = f"moving {PHRASES[track.directions[0]]}"
    if len(track.directions) > 1:
        text += f", then bouncing {PHRASES[track.directions[1]]}"
    return text


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def clip_text(tracks: list[DigitTrack], names: list[str]) -> tuple[list[str], list[dict[str, str]]]:
    """(captions, [{question, answer}]) of a clip of one or two digits; ``names[label]`` names a digit."""
    by_digit = [f"{article(str(t.label))} {t.label} {motion_phrase(t)}" for t in tracks]
    by_name = [f"{article(names[t.label])} {names[t.label]} {motion_phrase(t)}" for t in tracks]
    qa = [("how many digits are there?", DIGIT_NAMES[len(tracks)])]
    if len(tracks) == 1:
        track = tracks[0]
        captions = [by_digit[0], f"a handwritten {names[track.label]} {motion_phrase(track)}"]
        qa += [
            ("which digit is moving?", names[track.label]),
            (DIRECTION_QUESTION, track.directions[0]),
            ("does the digit bounce?", _yes(track.bounce_frame is not None)),
        ]
        if len(track.directions) > 1:
            qa.append((AFTER_BOUNCE_QUESTION, track.directions[1]))
    else:
        captions = [" and ".join(by_digit), "two digits: " + " and ".join(by_name)]
        qa.append(
            ("which digits are moving?", " and ".join(names[t.label] for t in sorted(tracks, key=lambda t: t.label)))
        )
        if len({t.label for t in tracks}) == len(tracks):  # a digit named once names one track
            for track in tracks:
                qa += [
                    (f"which way does the {track.label} move?", track.directions[0]),
                    (f"does the {track.label} bounce?", _yes(track.bounce_frame is not None)),
                ]
    return captions, [{"question": q, "answer": a} for q, a in qa]
