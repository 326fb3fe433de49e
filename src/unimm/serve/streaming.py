"""Server-sent events for ``/v1/chat/completions`` with ``"stream": true``: the caption's pieces as the decoder
produces them, each decoding step run on the model thread (so steps interleave with the batcher's calls, never
run beside them)."""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Executor


async def model_steps(pieces: Iterator[str], executor: Executor) -> AsyncIterator[str]:
    """Advance a blocking generator one step at a time on ``executor``; closed there too when the client leaves."""
    loop = asyncio.get_running_loop()
    try:
        while (piece := await loop.run_in_executor(executor, next, pieces, None)) is not None:
            yield piece
    finally:
        executor.submit(pieces.close)  # after any step still running: a generator cannot close mid-step


def sse_chunk(ident: str, name: str, created: int, delta: dict, finish: str | None = None) -> str:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": name, "choices": [choice]}
    return f"data: {json.dumps(chunk)}\n\n"


async def sse_events(ident: str, name: str, first: str | None, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    """``chat.completion.chunk`` events: the role, one per piece (``first``, already decoded, then ``rest``), the
    stop; an error while decoding ends the stream with an ``{"error": ...}`` event; then ``[DONE]``."""
    created = int(time.time())
    yield sse_chunk(ident, name, created, {"role": "assistant", "content": ""})
    try:
        if first is not None:
            yield sse_chunk(ident, name, created, {"content": first})
        async for piece in rest:
            yield sse_chunk(ident, name, created, {"content": piece})
    except Exception as err:  # the status line is sent already: the error goes in the stream
        yield f"data: {json.dumps({'error': {'message': str(err), 'type': 'server_error'}})}\n\n"
    else:
        yield sse_chunk(ident, name, created, {}, "stop")
    yield "data: [DONE]\n\n"
