"""The terminal loop of ``unimm chat``: lines in, replies out, images attached and returned as files.

A line is a message, or a command:
- ``/image PATH``: attach an image file to the next message (up to ``chat.MAX_IMAGES_PER_MESSAGE``);
- ``/help``: the commands; ``/quit`` (or end of input): leave.
The model's reply prints as ``model: ...`` lines, text as it is and each image as the path of the PNG it was saved
to (``turnT-I.png`` in the output directory). Bad input (a missing or unreadable file, an over-long message) is
one ``error: ...`` line; the conversation goes on as before it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from unimm.chat import MAX_IMAGES_PER_MESSAGE, ChatSession

HELP = (
    "commands: /image PATH attaches an image to your next message; /help shows this; /quit leaves. "
    "Any other line is a message."
)


def run_terminal(
    session: ChatSession,
    lines: Iterable[str],
    write: Callable[[str], None],
    out_dir: Path,
    load_image: Callable[[Path], torch.Tensor],
    save_image: Callable[[torch.Tensor, Path], None],
    prompt: Callable[[], None] = lambda: None,
) -> int:
    """Run the loop over ``lines`` (stdin's); ``load_image`` reads a file as [C, H, W] in [-1, 1] (``ValueError`` /
    ``FileNotFoundError`` for a bad one), ``save_image`` writes one. Returns the number of turns answered."""
    pending: list[torch.Tensor] = []
    answered = 0
    prompt()
    for raw in lines:
        line = raw.strip()
        try:
            if line in ("/quit", "/exit"):
                break
            if line == "/help":
                write(HELP)
            elif line.startswith("/image"):
                path = Path(line[len("/image") :].strip())
                if not str(path) or str(path) == ".":
                    raise ValueError("/image needs a path, e.g. /image digit.png")
                if len(pending) >= MAX_IMAGES_PER_MESSAGE:
                    raise ValueError(f"at most {MAX_IMAGES_PER_MESSAGE} images per message")
                pending.append(load_image(path))
                write(f"attached {path} ({len(pending)} for the next message)")
            elif line.startswith("/"):
                raise ValueError(f"unknown command {line.split()[0]!r}; {HELP}")
            elif line or pending:
                reply = session.send(line, pending)
                pending = []
                answered += 1
                shown = 0
                for part in reply.parts:
                    if isinstance(part, str):
                        write(f"model: {part}")
                        continue
                    shown += 1
                    path = out_dir / f"turn{answered}-{shown}.png"
                    save_image(part, path)
                    write(f"model: [image: {path}]")
                if not reply.parts:
                    write("model: (nothing)")
                if reply.stop != "eos":
                    write(f"(the reply stopped at {reply.stop.replace('_', ' ')})")
        except (FileNotFoundError, ValueError) as err:
            write(f"error: {err}")
        prompt()
    return answered
