"""POST /v1/chat/completions: validation, admission, generation, streaming."""

import asyncio
import json
import logging
import re
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from inference import logs
from inference.decoders import TokenSink
from inference.detokenize import TextStream
from inference.engine import ImageRefused, PromptTooLong
from inference.limits import ApiError, check_number, parse_messages
from inference.stats import Finished

log = logging.getLogger("inference.chat")


class QueueSink(TokenSink):
    """Hands tokens from the generation thread to the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_done):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.on_done = on_done

    def tokens(self, ids: list[int]) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, ids)

    def done(self, error: BaseException | None) -> None:
        def finish():
            self.queue.put_nowait(error or StopIteration())
            self.on_done()

        self.loop.call_soon_threadsafe(finish)


def _error_kind(exc: BaseException) -> tuple[str, str]:
    text = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in text.lower():
        return "out_of_memory", "CUDA out of memory"
    if "CUDA error" in text:
        return "cuda_error", "CUDA error"
    return "generation_error", "generation failed"


# A request id is echoed and logged: only a plain token, never text a client could dress up as a
# log line (the console counts CUDA errors and timeouts in the log).
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused past `limit` bytes while it arrives (parsed later, off the event loop)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes", "body_too_large")
    if "json" not in request.headers.get("content-type", "application/json"):
        raise ApiError(415, "send the request as application/json", "unsupported_media_type")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise ApiError(413, f"request body larger than {limit} bytes", "body_too_large")
    return bytes(data)


def parse_body(data: bytes) -> dict:
    try:
        body = json.loads(data)
    except RecursionError:
        raise ApiError(400, "the request body is nested too deeply", "invalid_json") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the request body is not valid JSON", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", "invalid_json")
    return body


def register_chat(app: FastAPI, server) -> None:
    settings = server.settings
    stats = server.stats

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        began = time.monotonic()
        client = request.client.host if request.client else "unknown"
        stats.requests += 1
        if not REQUEST_ID.match(request_id):
            stats.reject("invalid_request_id")
            raise ApiError(400, "X-Request-Id must be 1-128 letters, digits and . _ : -", "invalid_request_id")
        if server.draining:
            stats.reject("draining")
            raise ApiError(
                503, "the server is draining before a restart; retry shortly", "draining", {"Retry-After": "5"}
            )
        if not server.loaded:
            stats.reject("not_ready")
            raise ApiError(503, f"the model is {server.state}", "not_ready", {"Retry-After": "10"})
        if not server.rate_limiter.allow(client):
            stats.reject("rate_limited")
            raise ApiError(429, "rate limit exceeded for this client", "rate_limited", {"Retry-After": "60"})
        # Admission before the body is read: a request beyond what the slots and the queue hold is
        # refused at once, not after its 20 MB are read, decoded and tokenised.
        if server.preparing + stats.queued + stats.in_flight >= settings.max_concurrency + settings.max_queue:
            stats.reject("overloaded")
            raise ApiError(429, "too many requests in flight; retry shortly", "overloaded", {"Retry-After": "2"})
        server.preparing += 1
        try:
            data = await read_body(request, settings.max_body_bytes)

            def parse_and_prepare():
                # Off the event loop, on the preprocessing threads: parsing, validating, decoding
                # images and tokenising, before the request queues for a slot (ready to prefill).
                body = parse_body(data)
                max_tokens = check_number(
                    body, "max_tokens", min(512, settings.max_new_tokens), 1, settings.max_new_tokens, int
                )
                temperature = check_number(body, "temperature", 0.0, 0.0, 2.0)
                top_p = check_number(body, "top_p", 1.0, 0.01, 1.0)
                stream = body.get("stream", False)
                if not isinstance(stream, bool):
                    raise ApiError(400, "'stream' must be true or false", "invalid_parameter")
                messages, images = parse_messages(body, settings)
                limit = server.engine.prompt_limit(settings.max_prompt_tokens)
                return server.engine.prepare(messages, images, limit), max_tokens, temperature, top_p, stream

            loop = asyncio.get_running_loop()
            prepared, max_tokens, temperature, top_p, stream = await loop.run_in_executor(
                server.preprocessing, parse_and_prepare
            )
        except PromptTooLong as exc:
            stats.reject("prompt_too_long")
            raise ApiError(400, str(exc), "context_length_exceeded") from None
        except ImageRefused as exc:
            stats.reject("invalid_image")
            raise ApiError(400, str(exc), "invalid_image") from None
        except ApiError as exc:
            stats.reject(exc.code)
            raise
        finally:
            server.preparing -= 1
        if stats.queued >= settings.max_queue and server.slots.locked():
            stats.reject("overloaded")
            raise ApiError(429, "too many requests in flight; retry shortly", "overloaded", {"Retry-After": "2"})

        stats.queued += 1
        try:
            await asyncio.wait_for(server.slots.acquire(), timeout=settings.request_timeout)
        except TimeoutError:
            stats.reject("queue_timeout")
            raise ApiError(504, "no generation slot became free in time", "timeout") from None
        finally:
            stats.queued -= 1
        stats.in_flight += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                stats.in_flight -= 1
                server.slots.release()

        try:
            if server.fault_delay:
                await asyncio.sleep(server.fault_delay)
            run = Generation(server, prepared, max_tokens, temperature, top_p, began, request_id, release)
            run.start()
        except BaseException:
            release()
            raise
        if stream:
            return ClosingStreamingResponse(
                run.sse(request),
                media_type="text/event-stream",
                headers={"X-Request-Id": request_id, "Cache-Control": "no-cache"},
            )
        try:
            return await run.complete()
        finally:
            run.cancelled = True  # a no-op once it finished; its slot is released when the thread ends


class ClosingStreamingResponse(StreamingResponse):
    """Closes the body generator when the client goes away, so its generation stops at once.

    Starlette leaves the generator suspended when a send fails; closing it runs
    its cleanup (cancel, wait for the thread, release the slot) right away.
    """

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


class Generation:
    """One request's generation, shared by the streaming and the whole-answer paths."""

    def __init__(self, server, prepared, max_tokens, temperature, top_p, began, request_id, release):
        self.server = server
        self.prepared = prepared
        self.prompt_tokens = prepared.prompt_tokens
        self.max_tokens, self.temperature, self.top_p = max_tokens, temperature, top_p
        self.began, self.request_id = began, request_id
        self.deadline = began + server.settings.request_timeout
        self.cancelled = False
        self.client_gone = False
        self.recorded = False
        self.release = release
        self.ids: list[int] = []
        self.first_token_at: float | None = None
        self.submitted_at = began
        self.sink = QueueSink(asyncio.get_running_loop(), self.thread_done)
        self.id = f"chatcmpl-{request_id[:24]}"
        self.created = int(time.time())
        self.model = server.settings.model_name or server.engine.name

    def should_stop(self) -> bool:
        return self.cancelled or time.monotonic() > self.deadline

    def start(self) -> None:
        self.submitted_at = time.monotonic()  # parsing, validation, admission and preprocessing are behind us
        self.server.engine.generate(
            self.prepared,
            self.sink,
            max_new_tokens=self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            should_stop=self.should_stop,
        )
        self.prepared = None

    async def tokens(self):
        """Yield token id lists until done; raises the generation's error."""
        while True:
            item = await self.sink.queue.get()
            if isinstance(item, StopIteration):
                return
            if isinstance(item, BaseException):
                kind, summary = _error_kind(item)
                self.server.stats.error(kind)
                logs.event(log, summary, logging.ERROR, request_id=self.request_id, error=str(item)[:500])
                status = 503 if kind == "out_of_memory" else 500
                raise ApiError(status, f"{summary}: the request could not be completed", kind)
            if self.first_token_at is None:
                self.first_token_at = time.monotonic()
            self.ids.extend(item)
            yield item

    def thread_done(self) -> None:
        """On the event loop once the generation thread has ended: free the slot.

        Done here rather than in the request's own cleanup, which can be
        cancelled (client gone) before the thread has stopped.
        """
        self.release()
        if not self.recorded and self.client_gone:
            self.record(499, True)

    def finish_reason(self) -> str:
        if time.monotonic() > self.deadline:
            return "timeout"
        return "length" if len(self.ids) >= self.max_tokens or self.sink.truncated else "stop"

    def record(self, status: int, stream: bool) -> None:
        if self.recorded:
            return
        self.recorded = True
        now = time.monotonic()
        latency = now - self.began
        ttft = (self.first_token_at - self.began) if self.first_token_at else None
        decode = (now - self.first_token_at) if self.first_token_at else 0.0
        if status == 200:
            self.server.stats.record(Finished(time.time(), latency, ttft, len(self.ids), decode))
        logs.event(
            log,
            "request",
            request_id=self.request_id,
            status=status,
            stream=stream,
            latency_ms=round(latency * 1000, 1),
            ttft_ms=round(ttft * 1000, 1) if ttft else None,
            prepare_ms=round((self.submitted_at - self.began) * 1000, 1),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.ids),
        )

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": len(self.ids),
            "total_tokens": self.prompt_tokens + len(self.ids),
        }

    async def complete(self) -> JSONResponse:
        try:
            async for _ in self.tokens():
                pass
        except ApiError as exc:
            self.record(exc.status, False)
            raise
        if self.finish_reason() == "timeout":
            self.server.stats.error("timeout")
            self.record(504, False)
            raise ApiError(504, f"generation took longer than {self.server.settings.request_timeout:.0f} s", "timeout")
        text = self.server.engine.decode(self.ids)
        self.record(200, False)
        return JSONResponse(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": self.finish_reason(),
                    }
                ],
                "usage": self.usage(),
            },
            headers={"X-Request-Id": self.request_id},
        )

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> str:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    async def watch_disconnect(self, request: Request) -> None:
        """A client that leaves mid-stream stops its generation at the next token."""
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                self.cancelled = True
                return

    async def sse(self, request: Request):
        status = 200
        watcher = asyncio.create_task(self.watch_disconnect(request))
        text = TextStream(self.server.engine.decode)
        try:
            yield self._chunk({"role": "assistant"})
            async for ids in self.tokens():
                added = text.add(ids)
                if added:
                    yield self._chunk({"content": added})
            reason = self.finish_reason()
            if reason == "timeout":
                status = 504
                self.server.stats.error("timeout")
                yield f"data: {json.dumps({'error': {'message': 'generation timed out', 'code': 'timeout'}})}\n\n"
            else:
                yield self._chunk({}, reason)
            yield "data: [DONE]\n\n"
        except ApiError as exc:
            status = exc.status
            yield f"data: {json.dumps(exc.body())}\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            self.client_gone = True
            raise
        finally:
            # No await here: this may run inside a cancelled scope. The slot is
            # released by thread_done once generation has really stopped.
            watcher.cancel()
            self.cancelled = True
            if not self.client_gone:
                self.record(status, True)
