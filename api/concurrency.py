"""Admission control: bodies first, then a bounded number of requests inside the application.

Why a line at all: a sync endpoint holds its database connection from its first query until the request
ends, and FastAPI needs a *second* worker thread afterwards to validate the response. With more requests in
flight than pooled connections, every thread could end up waiting for a connection held by a request that
waits for a thread -- the deadlock seen with 41 clients. Admitting at most ``slots`` requests, with the pool
sized ``2 × threads + 8``, makes a pool wait impossible: excess requests queue here, on the event loop.

Why bodies first (issue #22): a slot taken when the headers arrive is held while the body trickles in, so 45
connections sending a POST's headers and no body took all 40 slots and stopped every route. Now:

* **Small bodies** (``Content-Length`` ≤ ``body_buffer_bytes``, or chunked up to that size) are read whole
  *before* the request queues for a slot, under an idle timeout per read and an overall deadline. A sender
  that stalls gets ``408`` and its connection is closed; it never held a slot. At most
  ``readers_per_client`` *slow* bodies (pending over :data:`SLOW_BODY_S`) per client address are being read at
  once (``429`` for further bodies from that address), so one address
  cannot pin unbounded buffers.
* **Large bodies** (uploads) are streamed by the route itself into their final file, so they cannot be read
  first. They take no general slot: they need a valid token or session *before* a byte of the body is read
  (``401``), then one of ``upload_slots`` (``503`` when all are busy) and at most ``uploads_per_user`` per
  caller (``429``), and must keep arriving (idle timeout, and ``upload_min_rate_bps`` on average after
  ``body_timeout_s``), else ``408`` and the connection is closed.
* **Per-caller fairness**: a caller (its token or session cookie; an anonymous client by address) has at most
  ``per_user`` requests inside the application per lane; more wait in the same line.
* **Bounded line**: at most ``queue`` requests wait for a slot; the next one gets ``503`` with
  ``Retry-After`` instead of an ever longer wait.
* **Tiles** have their own lane (``tile_slots``), so map tiles never take the slots of the API and the API
  never starves the map. **Writes** (other methods than GET/HEAD/OPTIONS) have theirs too (``write_slots``): on
  SQLite only one transaction writes at a time, and a writer that waited there longer than the 30 s busy timeout
  failed with ``503 database busy`` under heavy load; now excess writers wait in this line instead.

``/api/v1/health`` and ``/static/`` bypass everything (no database, or a single short read), and health reports
the lanes (:meth:`AdmissionState.snapshot`): ``degraded`` when a request has waited, or all slots have been
held, longer than ``saturated_after_s``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Admission", "AdmissionConfig", "AdmissionState", "LaneSnapshot"]

#: Paths of rendered map tiles: they get their own lane.
TILE_PATH = re.compile(r"^/api/v1/map/[^/]+/[^/]+/tiles/[^/]+/\d+/\d+/\d+\.png$")
_COOKIE = "cspon_session"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
#: A body still arriving after this many seconds counts as slow (``readers_per_client``); normal bodies take ms.
SLOW_BODY_S = 1.0


@dataclass(frozen=True)
class AdmissionConfig:
    """Limits of :class:`Admission` (from :class:`cspon_rs.api.settings.ServeSettings`).

    Attributes:
        slots: Requests inside the application at once (general lane).
        per_user: Requests of one caller inside the application at once, per lane.
        queue: Requests that may wait for a slot (all lanes together); ``503`` beyond.
        tile_slots: Tile requests inside the application at once.
        write_slots: Requests that may write (POST/PUT/PATCH/DELETE with a small body) inside the application
            at once; further writers wait here, on the event loop, instead of in the database's busy timeout.
        body_buffer_bytes: Bodies up to this size are read before admission; larger ones are uploads.
        body_idle_timeout_s: Longest wait for the next piece of a body (seconds).
        body_timeout_s: Deadline of a whole small body; for uploads, the grace before the minimum rate counts.
        readers_per_client: Slow bodies (pending over ``SLOW_BODY_S``) being read at once per client address.
        upload_slots: Uploads (large bodies) streaming at once.
        uploads_per_user: Uploads of one caller at once.
        upload_min_rate_bps: Average rate an upload must keep after ``body_timeout_s`` (bytes/s).
        saturated_after_s: ``/health`` says ``degraded`` when a request waited, or every slot was held, longer.
        max_body_bytes: Larger declared bodies are refused (413) before a byte is read; ``None``: no limit.
    """

    slots: int = 40
    per_user: int = 20
    queue: int = 500
    tile_slots: int = 8
    write_slots: int = 8
    body_buffer_bytes: int = 1024 * 1024
    body_idle_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    readers_per_client: int = 64
    upload_slots: int = 4
    uploads_per_user: int = 2
    upload_min_rate_bps: float = 32 * 1024
    saturated_after_s: float = 10.0
    max_body_bytes: int | None = None


@dataclass
class LaneSnapshot:
    """One lane as ``/health`` reports it (ages in seconds)."""

    slots: int
    in_use: int
    queued: int
    oldest_held_s: float | None
    oldest_wait_s: float | None


@dataclass
class _Lane:
    slots: int
    sem: asyncio.Semaphore
    held: dict[int, float] = field(default_factory=dict)
    waiting: dict[int, float] = field(default_factory=dict)
    users: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    user_refs: Counter[str] = field(default_factory=Counter)


class AdmissionState:
    """Counters shared by the middleware and ``/health`` (one per application, used on its event loop)."""

    def __init__(self, config: AdmissionConfig) -> None:
        self.config = config
        self._lanes: dict[str, _Lane] | None = None
        self.readers: dict[str, dict[int, float]] = {}
        self.uploads: Counter[str] = Counter()
        self.uploads_total = 0
        self.waiting_total = 0
        self.refused: Counter[str] = Counter()
        self._next = 0

    def lanes(self) -> dict[str, _Lane]:
        """The lanes (created inside the running loop on first use)."""
        if self._lanes is None:
            self._lanes = {
                "api": _Lane(self.config.slots, asyncio.Semaphore(self.config.slots)),
                "tiles": _Lane(self.config.tile_slots, asyncio.Semaphore(self.config.tile_slots)),
                "write": _Lane(self.config.write_slots, asyncio.Semaphore(self.config.write_slots)),
            }
        return self._lanes

    def ticket(self) -> int:
        self._next += 1
        return self._next

    def snapshot(self) -> dict[str, Any]:
        """Lanes, body readers, uploads and refusals, plus ``saturated`` (see the module docs)."""
        now = time.monotonic()
        lanes: dict[str, LaneSnapshot] = {}
        for name, lane in (self._lanes or {}).items():
            lanes[name] = LaneSnapshot(
                slots=lane.slots,
                in_use=len(lane.held),
                queued=len(lane.waiting),
                oldest_held_s=round(now - min(lane.held.values()), 1) if lane.held else None,
                oldest_wait_s=round(now - min(lane.waiting.values()), 1) if lane.waiting else None,
            )
        limit = self.config.saturated_after_s
        saturated = any(
            (s.oldest_wait_s is not None and s.oldest_wait_s > limit)
            or (s.in_use >= s.slots and s.oldest_held_s is not None and s.oldest_held_s > limit)
            for s in lanes.values()
        )
        return {
            "saturated": saturated,
            "saturated_after_s": limit,
            "lanes": {k: v.__dict__ for k, v in lanes.items()},
            "reading_bodies": sum(len(r) for r in self.readers.values()),
            "uploads": self.uploads_total,
            "refused": dict(self.refused),
        }


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _caller_key(headers: dict[str, str], client: str) -> tuple[str, bool]:
    """A short key of the caller's credential (bearer token or session cookie), else of its address."""
    auth = headers.get("authorization", "")
    cred = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not cred:
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == _COOKIE and value:
                cred = value
                break
    if cred:
        return "c:" + hashlib.sha256(cred.encode("utf-8", "replace")).hexdigest()[:24], True
    return "a:" + client, False


async def _answer(send: Send, status: int, msg: str, kind: str, *, close: bool, retry_after: int | None = None,
                  loc: str | list[str] = "body") -> None:
    """A JSON error shaped like the API's others (``detail`` list naming where and what)."""
    body = json.dumps(
        {"detail": [{"loc": [loc] if isinstance(loc, str) else loc, "msg": msg, "type": kind}], "error": kind},
        ensure_ascii=False
    ).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


CallerCheck = Callable[[Scope], Awaitable[bool]]


class Admission:
    """Pure ASGI middleware: read small bodies first, then admit at most ``slots`` requests (see module docs).

    Args:
        app: The wrapped application.
        state: Limits and counters (also read by ``/health``).
        bypass_prefixes: Paths that skip admission (static files, health).
        known_caller: Async check that the request carries a valid token or session (uploads only).
    """

    def __init__(self, app: ASGIApp, state: AdmissionState, bypass_prefixes: tuple[str, ...] = ("/static/",),
                 known_caller: CallerCheck | None = None) -> None:
        self.app = app
        self.state = state
        self.cfg = state.config
        self.bypass = bypass_prefixes
        self.known_caller = known_caller

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or path.startswith(self.bypass):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        client = str((scope.get("client") or ("?", 0))[0])
        key, has_credential = _caller_key(headers, client)
        length_raw = headers.get("content-length")
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        if length_raw is not None and not (length_raw.isascii() and length_raw.isdigit()):
            await _answer(send, 400, "not a number", "value_error", close=True, loc=["header", "content-length"])
            return
        length = int(length_raw) if length_raw is not None else None
        if length is not None and self.cfg.max_body_bytes is not None and length > self.cfg.max_body_bytes:
            await _answer(send, 413, f"request body larger than {self.cfg.max_body_bytes} bytes", "value_error",
                          close=True, loc=["header", "content-length"])
            return
        if length is not None and length > self.cfg.body_buffer_bytes and not chunked:
            await self._upload(scope, receive, send, key, has_credential)
            return
        if chunked or (length or 0) > 0:
            pending = self.state.readers.setdefault(client, {})
            slow_since = time.monotonic() - SLOW_BODY_S
            if sum(1 for t in pending.values() if t < slow_since) >= self.cfg.readers_per_client:
                self.state.refused["readers_per_client"] += 1
                await _answer(send, 429, f"too many request bodies in flight from {client} "
                              f"(at most {self.cfg.readers_per_client}); retry shortly", "too_many_requests",
                              close=True, retry_after=2, loc="header")
                return
            ticket = self.state.ticket()
            pending[ticket] = time.monotonic()
            try:
                body, outcome = await self._read_small(receive)
            finally:
                pending.pop(ticket, None)
                if not pending:
                    self.state.readers.pop(client, None)
            if outcome == "disconnect":  # nobody will read it; an answer keeps outer middleware consistent
                await _answer(send, 400, "the client closed the connection before its body arrived",
                              "client_disconnected", close=True)
                return
            if outcome == "timeout":
                self.state.refused["body_timeout"] += 1
                await _answer(send, 408, "request body not received in time (the connection is closed)",
                              "request_timeout", close=True)
                return
            if outcome == "too_large":
                await _answer(send, 413, f"a body without Content-Length may be at most "
                              f"{self.cfg.body_buffer_bytes} bytes; send Content-Length", "value_error",
                              close=True, loc="header")
                return
            receive = _replay(body, receive)
        method = str(scope.get("method", "GET")).upper()
        lane_name = "tiles" if TILE_PATH.match(path) else "api" if method in _SAFE else "write"
        await self._admitted(lane_name, key, scope, receive, send)

    async def _read_small(self, receive: Receive) -> tuple[bytes, str]:
        """The whole body (``ok``), or why not: ``timeout``, ``disconnect``, ``too_large``."""
        parts: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.cfg.body_timeout_s
        while True:
            wait = min(self.cfg.body_idle_timeout_s, deadline - time.monotonic())
            if wait <= 0:
                return b"", "timeout"
            try:
                message = await asyncio.wait_for(receive(), wait)
            except TimeoutError:
                return b"", "timeout"
            if message["type"] == "http.disconnect":
                return b"", "disconnect"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.cfg.body_buffer_bytes:
                return b"", "too_large"
            parts.append(chunk)
            if not message.get("more_body", False):
                return b"".join(parts), "ok"

    async def _admitted(self, lane_name: str, key: str, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.state.lanes()[lane_name]
        if self.state.waiting_total >= self.cfg.queue and lane.sem.locked():
            self.state.refused["queue_full"] += 1
            await _answer(send, 503, f"the service is busy ({self.cfg.queue} requests waiting); retry shortly",
                          "busy", close=False, retry_after=2, loc="header")
            return
        user_sem = lane.users.get(key)
        if user_sem is None:
            user_sem = lane.users[key] = asyncio.Semaphore(self.cfg.per_user)
        lane.user_refs[key] += 1
        ticket = self.state.ticket()
        try:
            self.state.waiting_total += 1
            lane.waiting[ticket] = time.monotonic()
            try:
                await user_sem.acquire()
                try:
                    await lane.sem.acquire()
                except BaseException:
                    user_sem.release()
                    raise
            finally:
                self.state.waiting_total -= 1
                lane.waiting.pop(ticket, None)
            lane.held[ticket] = time.monotonic()
            try:
                await self.app(scope, receive, send)
            finally:
                lane.held.pop(ticket, None)
                lane.sem.release()
                user_sem.release()
        finally:
            lane.user_refs[key] -= 1
            if lane.user_refs[key] <= 0:
                del lane.user_refs[key]
                lane.users.pop(key, None)

    async def _upload(self, scope: Scope, receive: Receive, send: Send, key: str, has_credential: bool) -> None:
        """A large body: caller checked before reading it, its own bounded lane, rate-guarded reads."""
        if not has_credential or (self.known_caller is not None and not await self.known_caller(scope)):
            self.state.refused["upload_unauthenticated"] += 1
            await _answer(send, 401, "a valid bearer token or session is needed before a large body is read",
                          "value_error", close=True, loc="header")
            return
        if self.state.uploads[key] >= self.cfg.uploads_per_user:
            self.state.refused["uploads_per_user"] += 1
            await _answer(send, 429, f"at most {self.cfg.uploads_per_user} uploads at once per user; retry "
                          "when one has finished", "too_many_requests", close=True, retry_after=5, loc="header")
            return
        if self.state.uploads_total >= self.cfg.upload_slots:
            self.state.refused["upload_slots"] += 1
            await _answer(send, 503, f"all {self.cfg.upload_slots} upload slots are busy; retry shortly",
                          "busy", close=True, retry_after=5, loc="header")
            return
        self.state.uploads[key] += 1
        self.state.uploads_total += 1
        guard = _RateGuard(receive, self.cfg)
        try:
            await self.app(scope, guard.receive, guard.wrap_send(send))
        except Exception:
            if not guard.timed_out:
                raise
            if not guard.answered:  # the app gave up on the cut-off body with an error: answer 408 ourselves
                await _answer(send, 408, "upload too slow or stalled (the connection is closed)",
                              "request_timeout", close=True)
        finally:
            self.state.uploads_total -= 1
            self.state.uploads[key] -= 1
            if self.state.uploads[key] <= 0:
                del self.state.uploads[key]
            if guard.timed_out:
                self.state.refused["upload_too_slow"] += 1


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then the connection's later events."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _RateGuard:
    """Wraps an upload's ``receive``: idle timeout and minimum average rate; a cut-off answers 408 + close."""

    def __init__(self, receive: Receive, cfg: AdmissionConfig) -> None:
        self._receive = receive
        self.cfg = cfg
        self.started = time.monotonic()
        self.bytes = 0
        self.done = False
        self.timed_out = False
        self.answered = False

    async def receive(self) -> Message:
        if self.timed_out:
            return {"type": "http.disconnect"}
        if self.done:
            return await self._receive()
        elapsed = time.monotonic() - self.started
        wait = self.cfg.body_idle_timeout_s
        if elapsed > self.cfg.body_timeout_s:
            # past the grace period: the average rate must stay above the minimum
            behind = self.cfg.upload_min_rate_bps * elapsed - self.bytes
            if behind > 0:
                self.timed_out = True
                return {"type": "http.disconnect"}
        try:
            message = await asyncio.wait_for(self._receive(), wait)
        except TimeoutError:
            self.timed_out = True
            return {"type": "http.disconnect"}
        if message["type"] == "http.request":
            self.bytes += len(message.get("body", b""))
            self.done = not message.get("more_body", False)
        return message

    def wrap_send(self, send: Send) -> Send:
        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                if self.timed_out:
                    self.answered = True
                    await _answer(send, 408, "upload too slow or stalled (the connection is closed)",
                                  "request_timeout", close=True)
                    return
            elif message["type"] == "http.response.body" and self.timed_out and self.answered:
                return  # the app's own answer to the cut-off body is replaced by the 408 above
            await send(message)

        return guarded
