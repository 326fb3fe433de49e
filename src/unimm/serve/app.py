"""The FastAPI app: ``create_app(run_dir_or_model, limits)``: the JSON API under ``/v1`` and a web page over it at
``/`` (``static/``). Bad input is a 4xx ``{"error": {...}}`` naming the problem; the server keeps serving."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from unimm.models import UnifiedModel
from unimm.serve.batcher import Batcher
from unimm.serve.images import decode_data_url, image_tensor, png_base64
from unimm.serve.info import model_card
from unimm.serve.limits import ServeLimits
from unimm.serve.runner import ModelRunner
from unimm.serve.schemas import ChatRequest, ImageRequest
from unimm.serve.streaming import model_steps, sse_events

STATIC = Path(__file__).parent / "static"  # the web page: index.html, page.js, page.css


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


def _bad(message: str) -> HTTPException:
    return HTTPException(400, message)


def _validation_message(err: RequestValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    return f"field {where!r}: {first['msg']}" + (
        f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    )


def create_app(run_dir_or_model: str | Path | UnifiedModel, limits: ServeLimits | None = None) -> FastAPI:
    """An app serving a run directory (or an already loaded model)."""
    limits = limits or ServeLimits()
    if isinstance(run_dir_or_model, UnifiedModel):
        model, run_dir = run_dir_or_model, None
    else:
        run_dir = Path(run_dir_or_model)
        model = UnifiedModel.from_pretrained(run_dir)
    if model.cfg.data.frames is not None:
        raise ValueError(
            f"this is a video model (clips of {model.cfg.data.frames} frames): serving clips is not built; use "
            "unimm generate / caption / eval on it (docs/video.md)"
        )
    runner = ModelRunner(model, run_dir)
    batcher = Batcher(runner.run, limits.max_batch, limits.max_wait_ms)
    created = int(time.time())
    in_flight = [0]

    def take_slot() -> None:
        if in_flight[0] >= limits.max_concurrent:
            raise HTTPException(429, f"more than max_concurrent = {limits.max_concurrent} requests in flight; retry")
        in_flight[0] += 1

    def release_slot() -> None:
        in_flight[0] -= 1

    @asynccontextmanager
    async def slot() -> AsyncIterator[None]:
        take_slot()
        try:
            yield
        finally:
            release_slot()

    async def submit(key, item):
        try:
            return await asyncio.wait_for(batcher.submit(key, item), limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the model did not answer within timeout_s = {limits.timeout_s}") from None
        except ValueError as err:  # the model refused the input
            raise _bad(str(err)) from None

    app = FastAPI(title="unimm", version="0.1.0")
    app.state.limits, app.state.batcher, app.state.runner = limits, batcher, runner

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = {429: "rate_limit_error", 504: "timeout_error"}.get(exc.status_code, "invalid_request_error")
        return _error(exc.status_code, str(exc.detail), kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, _validation_message(exc))

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model.cfg.name}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [model_card(model, run_dir, created)]}

    def read_chat(body: ChatRequest):
        users = [m for m in body.messages if m.role == "user"]
        if not users:
            raise _bad("messages has no user message")
        content = users[-1].content
        parts = [] if isinstance(content, str) else content
        images = [p for p in parts if p.type == "image_url"]
        if len(images) != 1 or images[0].image_url is None:
            raise _bad(f"the last user message must hold exactly one image_url part, it holds {len(images)}")
        texts = [content] if isinstance(content, str) else [p.text or "" for p in parts if p.type == "text"]
        question = " ".join(t.strip() for t in texts if t.strip()) or None
        if question is not None:
            if len(question) > limits.max_prompt_chars:
                raise _bad(
                    f"question has {len(question):,} characters, over max_prompt_chars = {limits.max_prompt_chars}"
                )
            need = runner.question_positions(question)
            if need > model.cfg.model.max_seq_len:
                raise _bad(
                    f"question needs {need} positions, over the model's max_seq_len = {model.cfg.model.max_seq_len}"
                )
        try:
            data = decode_data_url(images[0].image_url.url, limits)
            c = model.cfg.data
            image = image_tensor(data, c.image_size, c.channels, model.background, limits)
        except ValueError as err:
            raise _bad(str(err)) from None
        return image, question

    async def stream_chat(body: ChatRequest) -> StreamingResponse:
        """Decoded alone (not batched), one step per model-thread call. The first piece is awaited before the
        response starts, so a refused input or a timeout before it is still a 4xx / 504 status."""
        take_slot()
        try:
            image, question = read_chat(body)
            steps = model_steps(runner.stream(image, question), batcher.executor)
            try:
                first = await asyncio.wait_for(anext(steps, None), limits.timeout_s)
            except asyncio.TimeoutError:
                raise HTTPException(504, f"the model did not answer within timeout_s = {limits.timeout_s}") from None
            except ValueError as err:
                raise _bad(str(err)) from None
        except BaseException:
            release_slot()
            raise

        async def events() -> AsyncIterator[str]:
            try:
                async for event in sse_events(f"chatcmpl-{uuid.uuid4().hex}", model.cfg.name, first, steps):
                    yield event
            finally:
                release_slot()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest):
        if body.stream:
            return await stream_chat(body)
        async with slot():
            image, question = read_chat(body)
            text = await submit(("caption", question), image)
        ident, name = f"chatcmpl-{uuid.uuid4().hex}", model.cfg.name
        prompt_tokens = runner.question_positions(question) - (
            model.layout.answer_len or model.cfg.sample.max_new_tokens
        )
        completion_tokens = len(model.tokenizer.encode(text))
        return {
            "id": ident,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    @app.post("/v1/images/generations")
    async def images(body: ImageRequest):
        if body.n > limits.max_n:
            raise _bad(f"n = {body.n} is over max_n = {limits.max_n}")
        if body.steps is not None and body.steps > limits.max_steps:
            raise _bad(f"steps = {body.steps} is over max_steps = {limits.max_steps}")
        if len(body.prompt) > limits.max_prompt_chars:
            raise _bad(f"prompt has {len(body.prompt):,} characters, over max_prompt_chars = {limits.max_prompt_chars}")
        need = runner.prompt_positions(body.prompt)
        if need > model.cfg.model.max_seq_len:
            raise _bad(f"prompt needs {need} positions, over the model's max_seq_len = {model.cfg.model.max_seq_len}")
        # a seeded request runs alone, so its images depend only on (prompt, n, seed, steps, guidance)
        alone = uuid.uuid4().hex if body.seed is not None else None
        async with slot():
            out = await submit(("generate", body.steps, body.guidance, body.seed, alone), (body.prompt, body.n))
        return {"created": int(time.time()), "data": [{"b64_json": png_base64(im)} for im in out]}

    return app
