"""FakeBrowserbase: the sessions API on loopback, with faults on demand."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import random
import secrets
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, ClassVar, Final, Literal, TypeAlias

import attrs
from aiohttp import web

DEFAULT_API_KEY: Final = "bb_fake_key"
DEFAULT_PROJECT_ID: Final = "fake-project"
TERMINAL: Final = frozenset({"COMPLETED", "ERROR", "TIMED_OUT"})
STATUSES: Final = ("PENDING", "RUNNING", "ERROR", "TIMED_OUT", "COMPLETED")
REGIONS: Final = ("us-west-2", "us-east-1", "eu-central-1", "ap-southeast-1")

FaultKind: TypeAlias = Literal["status", "drop", "lose", "stall", "hang", "html", "body"]
Route: TypeAlias = Literal["update", "retrieve", "list", "create"]
_Act: TypeAlias = Callable[[], Awaitable[web.Response]]


@attrs.frozen
class Fault:
    """One scripted misbehaviour, for the next request that `FakeBrowserbase.inject` aims at.

    Build them with the class methods: ``Fault.status(503)``, ``Fault.drop()``...
    """

    kind: FaultKind
    status_code: int = 200
    headers: Mapping[str, str] = attrs.field(factory=dict)
    content: bytes = b""

    @classmethod
    def status(
        cls, status_code: int, *, headers: Mapping[str, str] | None = None, message: str = ""
    ) -> Fault:
        """Answer *status_code* with a JSON error body, without touching the session."""
        text = message or f"fake error {status_code}"
        body = json.dumps({"statusCode": status_code, "message": text}).encode()
        return cls("status", status_code, dict(headers or {}), body)

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection before doing anything."""
        return cls("drop")

    @classmethod
    def lose(cls) -> Fault:
        """Do the request, then close the connection instead of answering."""
        return cls("lose")

    @classmethod
    def stall(cls) -> Fault:
        """Do the request, then never answer (until the fake stops): a create's session runs."""
        return cls("stall")

    @classmethod
    def hang(cls) -> Fault:
        """Never answer (until the fake stops)."""
        return cls("hang")

    @classmethod
    def html(cls) -> Fault:
        """Do the request, then answer 200 with an HTML page instead of JSON."""
        return cls("html", 200, {"Content-Type": "text/html"}, b"<html><body>oops</body></html>")

    @classmethod
    def json(cls, payload: object, status_code: int = 200) -> Fault:
        """Answer *payload* as JSON with *status_code*, without touching the session."""
        return cls("body", status_code, {}, json.dumps(payload).encode())


@attrs.frozen
class FaultPlan:
    """Random misbehaviour, drawn per request from a seeded generator.

    Rates are probabilities in ``[0, 1]``; durations are seconds.

    Args:
        error_rate: Answer ``error_status`` (a 5xx) without doing the request.
        error_status: The status of those errors.
        rate_limit_rate: Answer 429 without doing the request.
        retry_after: Seconds sent as ``Retry-After`` with those 429s (``None``: no header).
        lost_response_rate: Do the request, then drop the connection.
        drop_rate: Drop the connection before doing the request.
        non_json_rate: Do the request, then answer 200 with HTML.
        latency: Seconds before each answer.
        latency_jitter: Each answer's latency is drawn uniformly within
            ``latency * (1 +- latency_jitter)``, in ``[0, 1]``: a real server's
            service time varies, and a fixed one keeps clients that share a
            limit in lockstep (whoever sends first in each cycle takes every
            place that frees).
        max_in_flight: Requests served at once; more are answered 429 at once.
        max_per_second: Requests served per second, from a token bucket that
            holds `rate_burst` of them; more are answered 429 at once.
        rate_burst: The bucket's size, in requests; ``None``: a tenth of a
            second's worth (at least one).
        release_delay: Seconds between REQUEST_RELEASE and COMPLETED (``math.inf``: never).
        max_browsers: The plan's concurrent browsers: a create while this many
            sessions run is answered 429, with ``Retry-After`` and the
            ``x-ratelimit-*`` headers, as the API does.
        creates_per_minute: The plan's creates in any 60 seconds; more are answered 429 so.
        lost_create_rate: Of the creates that make a session, drop the
            connection instead of answering (the answer lost, the session running).
        timeout_scale: Real seconds per second of a session's ``timeout``: a
            session created with ``timeout=60`` ends by itself (``TIMED_OUT``)
            after ``60 * timeout_scale`` seconds.
        seed: Seed of the generator, for a reproducible run.
    """

    error_rate: float = 0.0
    error_status: int = 503
    rate_limit_rate: float = 0.0
    retry_after: float | None = None
    lost_response_rate: float = 0.0
    drop_rate: float = 0.0
    non_json_rate: float = 0.0
    latency: float = 0.0
    latency_jitter: float = attrs.field(
        default=0.0, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    max_in_flight: int | None = None
    max_per_second: float | None = None
    rate_burst: float | None = None
    release_delay: float = 0.0
    max_browsers: int | None = None
    creates_per_minute: int | None = None
    lost_create_rate: float = 0.0
    timeout_scale: float = 1.0
    seed: int | None = 0

    @classmethod
    def realistic(cls, seed: int | None = 0) -> FaultPlan:
        """A mix seen on a busy day: a few 5xx and 429s, some lost answers.

        Args:
            seed: Seed of the draws; the same seed, the same faults in the
                same order of requests. ``None``: a fresh draw each time.
        """
        return cls(
            error_rate=0.05,
            rate_limit_rate=0.03,
            retry_after=0.05,
            lost_response_rate=0.02,
            drop_rate=0.01,
            latency=0.01,
            seed=seed,
        )


@attrs.frozen
class Exchange:
    """One request and its answer, as recorded with ``record_exchanges=True``.

    ``arrived`` is the event loop's time (seconds) when the request arrived;
    ``scripted`` tells an answer that a `Fault` made (which may be off the
    API's description on purpose) from the fake's own.
    """

    route: str
    method: str
    path: str
    query: Mapping[str, str]
    request_body: bytes
    status: int
    response_body: bytes
    arrived: float = 0.0
    scripted: bool = False


@attrs.define
class Received:
    """What the fake received, for assertions.

    Attributes:
        requests: Requests per route: ``"update"``, ``"retrieve"``, ``"list"``, ``"create"``.
        answers: Answers per status code, plus ``"dropped"``, ``"lost"`` and ``"hung"``.
        updates: Update requests per session id.
        bodies: The JSON body of every update request, in order.
        peak_in_flight: The most requests served at once.
        exchanges: Every request and its answer, when the fake records them.
    """

    requests: collections.Counter[str] = attrs.field(factory=collections.Counter)
    answers: collections.Counter[int | str] = attrs.field(factory=collections.Counter)
    updates: collections.Counter[str] = attrs.field(factory=collections.Counter)
    bodies: list[object] = attrs.field(factory=list)
    peak_in_flight: int = 0
    exchanges: list[Exchange] = attrs.field(factory=list)

    @property
    def total(self) -> int:
        """All the requests received."""
        return sum(self.requests.values())


class FakeBrowserbase:
    """A fake Browserbase sessions API: a real aiohttp.web server on 127.0.0.1.

    Use it as ``async with FakeBrowserbase() as fake:``, then point a client at
    ``fake.base_url`` with ``fake.api_key``. It serves ``GET /v1/sessions``
    (``status`` and ``q`` filters), ``GET``/``POST /v1/sessions/{id}`` and
    ``POST /v1/sessions``, checks ``X-BB-API-Key``, and answers errors as JSON.

    Args:
        api_key: The key it accepts.
        faults: Random faults for every request.
        project_id: The project of the sessions it creates.
        port: The port to listen on; 0 picks a free one.
        record_exchanges: Keep every request and answer in ``received.exchanges``.
        ssl_context: Serve HTTPS with this server context (a test's own CA,
            from ``trustme`` for instance); ``base_url`` is then ``https://``.

    Attributes:
        clock_offset: Seconds by which the fake's clock runs ahead of the real
            one (negative: behind), as its ``Date`` headers show: a server
            whose clock disagrees with the client's.
    """

    observers: ClassVar[list[Callable[[Exchange], object]]] = []
    """Called with every exchange of every fake, as it is answered: for a test suite
    that holds every answer the fake sends to the API's description."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        faults: FaultPlan | None = None,
        project_id: str = DEFAULT_PROJECT_ID,
        port: int = 0,
        record_exchanges: bool = False,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.api_key: Final = api_key
        self.project_id: Final = project_id
        self.faults = faults if faults is not None else FaultPlan()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.received = Received()
        self._port = port
        self._record = record_exchanges
        self._ssl_context = ssl_context
        self.clock_offset = 0.0
        self._random = random.Random(self.faults.seed)
        self._script: list[tuple[Route | None, Fault]] = []
        self._in_flight = 0
        self._tokens: float | None = None
        self._tokens_at = 0.0
        self._closing = asyncio.Event()
        self._timers: list[asyncio.TimerHandle] = []
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._holding: asyncio.Event | None = None
        self._connections: dict[str, dict[str, str]] = {}
        self._ends_at: dict[str, float] = {}
        self._creates: collections.deque[float] = collections.deque()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def __repr__(self) -> str:
        return f"<FakeBrowserbase {self.base_url or 'not started'} sessions={len(self.sessions)}>"

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> FakeBrowserbase:
        """Start serving; ``base_url`` is set from then on."""
        app = web.Application()
        app.router.add_get("/v1/sessions", self._list)
        app.router.add_post("/v1/sessions", self._create)
        app.router.add_get("/v1/sessions/{id}", self._retrieve)
        app.router.add_post("/v1/sessions/{id}", self._update)
        # Handlers are cancelled when their client goes away, so a hung one ends too.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port, ssl_context=self._ssl_context)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        scheme = "http" if self._ssl_context is None else "https"
        self.base_url = f"{scheme}://{host}:{port}"
        return self

    async def close(self) -> None:
        """Stop serving and cancel pending timers."""
        self._closing.set()
        self.let_go()
        for timer in self._timers:
            timer.cancel()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeBrowserbase:
        return await self.start()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, **kwargs: Any) -> Iterator[FakeBrowserbase]:
        """Serve a fake from a thread of its own, for code that runs its own event loop.

        For tests of synchronous code, or of code that calls ``asyncio.run``.
        Seed it before use: its methods are not thread-safe while requests are served.

        Args:
            kwargs: As for `FakeBrowserbase`.
        """
        fake = cls(**kwargs)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="FakeBrowserbase", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(fake.start(), loop).result()
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.close(), loop).result()
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- seeding and faults ---------------------------------------------------

    def add_session(
        self,
        session_id: str | None = None,
        *,
        status: str = "RUNNING",
        user_metadata: Mapping[str, Any] | None = None,
        region: str = "us-west-2",
        keep_alive: bool = False,
        context_id: str | None = None,
        started_at: datetime | None = None,
    ) -> str:
        """Add one session; return its id. Its JSON form is ``fake.sessions[id]``.

        Args:
            session_id: Its id; ``None``: a new UUID.
            status: Its status.
            user_metadata: Its ``userMetadata``.
            region: Its region.
            keep_alive: Its ``keepAlive``.
            context_id: Its ``contextId``.
            started_at: When it was created and started (a timezone-aware
                datetime); ``None``: now. For sessions of several ages.
        """
        now = datetime.now(UTC)
        start = started_at.astimezone(UTC) if started_at is not None else now
        session: dict[str, Any] = {
            "id": session_id or str(uuid.uuid4()),
            "createdAt": _iso(start),
            "updatedAt": _iso(now),
            "projectId": self.project_id,
            "startedAt": _iso(start),
            "expiresAt": _iso(start + timedelta(hours=6)),
            "status": status,
            "proxyBytes": 0,
            "keepAlive": keep_alive,
            "region": region,
        }
        # Absent rather than null: the API's description types these as plain strings.
        if status in TERMINAL:
            session["endedAt"] = session["updatedAt"]
        if context_id is not None:
            session["contextId"] = context_id
        if user_metadata is not None:
            session["userMetadata"] = dict(user_metadata)
        self.sessions[session["id"]] = session
        return str(session["id"])

    def add_sessions(
        self,
        count: int,
        *,
        status: str = "RUNNING",
        user_metadata: Mapping[str, Any] | None = None,
        started_at: datetime | None = None,
    ) -> list[str]:
        """Add *count* sessions, as `add_session` does; return their ids, in order."""
        return [
            self.add_session(status=status, user_metadata=user_metadata, started_at=started_at)
            for _ in range(count)
        ]

    def status(self, session_id: str) -> str:
        """The session's status now, as the fake holds it."""
        return str(self.sessions[session_id]["status"])

    async def wait_for_requests(self, count: int) -> None:
        """Return once the fake has received *count* requests in all (events, not polling)."""
        await self.wait_until(lambda: self.received.total >= count)

    def hold(self) -> None:
        """Hold every request accepted from now on, before it is answered, until `let_go`.

        Requests that the key check or a limit refuses are answered at once, as ever.

        With `wait_for_in_flight`, a test makes requests overlap by construction.
        """
        if self._holding is None:
            self._holding = asyncio.Event()

    def let_go(self) -> None:
        """Answer the requests held by `hold`, and stop holding."""
        if self._holding is not None:
            holding, self._holding = self._holding, None
            holding.set()

    async def wait_for_status(self, session_id: str, status: str) -> None:
        """Return once the session is in *status* (events, not polling).

        Raises:
            KeyError: No such session.
        """
        self.status(session_id)  # an unknown id fails here, not by waiting forever
        await self.wait_until(lambda: self.status(session_id) == status)

    async def wait_for_in_flight(self, count: int) -> None:
        """Return once *count* requests are being served at once (events, not polling)."""
        await self.wait_until(lambda: self._in_flight >= count)

    async def wait_until(self, reached: Callable[[], bool]) -> None:
        """Return once *reached()* holds (events, not polling).

        It is checked now, as each request arrives, and as each session ends:
        for instance ``lambda: fake.received.requests["update"] >= 1``.
        """
        if reached():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((reached, waiter))
        await waiter

    def _wake_waiters(self) -> None:
        """Wake the waiters whose condition now holds; keep the others."""
        still = []
        for reached, waiter in self._waiters:
            if waiter.done():
                continue
            if reached():
                waiter.set_result(None)
            else:
                still.append((reached, waiter))
        self._waiters = still

    def inject(self, *faults: Fault, route: Route | None = None) -> None:
        """Apply *faults* to the next requests, one each, in order, before any random fault.

        Args:
            faults: What the next requests get.
            route: Aim them at this route only (``"update"``, ``"retrieve"``,
                ``"list"`` or ``"create"``); others pass untouched. ``None``:
                any route.
        """
        self._script.extend((route, fault) for fault in faults)

    def _scripted(self, route: str) -> Fault | None:
        for index, (aim, fault) in enumerate(self._script):
            if aim is None or aim == route:
                del self._script[index]
                return fault
        return None

    # -- handlers -------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        async def act() -> web.Response:
            status = request.query.get("status")
            if status is not None and status not in STATUSES:
                return _error(400, f"invalid status {status!r}")
            terms: list[tuple[list[str], str]] = []
            if (query := request.query.get("q")) is not None:
                try:
                    terms = parse_query(query)
                except ValueError as exc:
                    return _error(400, f"invalid query {query!r}: {exc}")
            found = [
                session
                for session in self.sessions.values()
                if (status is None or session["status"] == status)
                and all(
                    _lookup(session.get("userMetadata"), path) == value for path, value in terms
                )
            ]
            return _json(200, found)

        return await self._serve(request, "list", act)

    async def _retrieve(self, request: web.Request) -> web.Response:
        async def act() -> web.Response:
            session = self.sessions.get(request.match_info["id"])
            if session is None:
                return _error(404, "Session not found")
            return _json(200, {**session, **self._connections.get(session["id"], {})})

        return await self._serve(request, "retrieve", act)

    async def _update(self, request: web.Request) -> web.Response:
        session_id = request.match_info["id"]
        self.received.updates[session_id] += 1

        async def act() -> web.Response:
            try:
                body = json.loads(await request.read())
            except ValueError:
                return _error(400, "body is not JSON")
            self.received.bodies.append(body)
            if (
                not isinstance(body, dict)
                or body.get("status") != "REQUEST_RELEASE"
                or not isinstance(body.get("projectId", ""), str)
                or set(body) - {"status", "projectId"}
            ):
                return _error(400, "body must be {'status': 'REQUEST_RELEASE', 'projectId'?: str}")
            session = self.sessions.get(session_id)
            if session is None:
                return _error(404, "Session not found")
            if session["status"] in TERMINAL:
                return _error(400, f"Session {session_id} is not running")
            self._end_later(session)
            return _json(200, session)

        return await self._serve(request, "update", act)

    async def _create(self, request: web.Request) -> web.Response:
        async def act() -> web.Response:
            try:
                body = json.loads(await request.read() or b"{}")
            except ValueError:
                return _error(400, "body is not JSON")
            if (problem := create_body_problem(body)) is not None:
                return _error(400, problem)
            if (refusal := self._plan_refusal()) is not None:
                return refusal
            self._creates.append(asyncio.get_running_loop().time())
            session_id = self.add_session(
                user_metadata=body.get("userMetadata"),
                keep_alive=body.get("keepAlive", False),
                region=body.get("region", "us-west-2"),
            )
            session = self.sessions[session_id]
            if "projectId" in body:
                session["projectId"] = body["projectId"]
            if "timeout" in body:
                self._time_out_later(session, body["timeout"])
            key = secrets.token_hex(16)
            self._connections[session_id] = {
                "connectUrl": f"wss://connect.fake.invalid/?signingKey={key}",
                "seleniumRemoteUrl": "http://connect.fake.invalid/webdriver",
                "signingKey": key,
            }
            return _json(201, {**session, **self._connections[session_id]})

        return await self._serve(request, "create", act)

    def _plan_refusal(self) -> web.Response | None:
        """The plan's 429 to a create, as the API sends it; ``None`` when there is room."""
        plan, now = self.faults, asyncio.get_running_loop().time()
        if plan.max_browsers is not None:
            running = [sid for sid, s in self.sessions.items() if s["status"] == "RUNNING"]
            if len(running) >= plan.max_browsers:
                ends = [self._ends_at[sid] - now for sid in running if sid in self._ends_at]
                wait = min(ends) if ends else _BROWSER_WAIT
                return _limited(plan.max_browsers, wait, "Max concurrent browsers reached")
        if plan.creates_per_minute is not None:
            while self._creates and self._creates[0] <= now - _MINUTE:
                self._creates.popleft()
            if len(self._creates) >= plan.creates_per_minute:
                wait = self._creates[0] + _MINUTE - now
                return _limited(plan.creates_per_minute, wait, "Session creation limit reached")
        return None

    def _time_out_later(self, session: dict[str, Any], timeout: int) -> None:
        start = datetime.fromisoformat(session["startedAt"])
        session["expiresAt"] = _iso(start + timedelta(seconds=timeout))
        loop = asyncio.get_running_loop()
        delay = timeout * self.faults.timeout_scale
        self._ends_at[session["id"]] = loop.time() + delay
        self._timers.append(loop.call_later(delay, self._end, session, "TIMED_OUT"))

    # -- the fault machinery --------------------------------------------------

    async def _serve(self, request: web.Request, route: str, act: _Act) -> web.Response:
        arrived = asyncio.get_running_loop().time()
        self.received.requests[route] += 1
        self._in_flight += 1
        self.received.peak_in_flight = max(self.received.peak_in_flight, self._in_flight)
        if self._waiters:
            self._wake_waiters()
        authorized = request.headers.get("X-BB-API-Key") == self.api_key
        fault = self._pick(route) if authorized else None
        try:
            answer = await self._answer(request, route, act, fault)
        except ConnectionResetError:
            # The client went away mid-request (a Ctrl-C, a timeout): normal for a test
            # server, not worth aiohttp's traceback. Nothing can be answered.
            return web.Response(status=_CUT)
        finally:
            self._in_flight -= 1
        if self.clock_offset:
            moment = datetime.now(UTC) + timedelta(seconds=self.clock_offset)
            answer.headers["Date"] = format_datetime(moment, usegmt=True)
        if answer.status != _CUT:
            self.received.answers[answer.status] += 1
            if self._record or FakeBrowserbase.observers:
                exchange = Exchange(
                    route,
                    request.method,
                    request.path,
                    dict(request.query),
                    await request.read(),
                    answer.status,
                    answer.body if isinstance(answer.body, bytes) else b"",
                    arrived,
                    fault is not None,
                )
                if self._record:
                    self.received.exchanges.append(exchange)
                for observe in FakeBrowserbase.observers:
                    observe(exchange)
        return answer

    def _pick(self, route: str) -> Fault | None:
        fault = self._scripted(route) if self._script else None
        if fault is None:
            fault = self._draw()
        return fault

    def _latency(self) -> float:
        """Seconds this answer waits: the plan's latency, spread by its jitter."""
        plan = self.faults
        spread = plan.latency * plan.latency_jitter
        if not spread:
            return plan.latency  # no draw: a plan without jitter keeps its faults' sequence
        return plan.latency + self._random.uniform(-spread, spread)

    async def _answer(
        self, request: web.Request, route: str, act: _Act, fault: Fault | None
    ) -> web.Response:
        if request.headers.get("X-BB-API-Key") != self.api_key:
            return _error(401, "Unauthorized: missing or invalid X-BB-API-Key")
        plan = self.faults
        if plan.max_in_flight is not None and self._in_flight > plan.max_in_flight:
            return _error(429, "Too many concurrent requests")
        if plan.max_per_second is not None and not self._take_token(plan.max_per_second):
            return _error(429, "Too many requests per second")
        if self._holding is not None:
            # Held once accepted: a limit refuses at once, as it would anyway.
            await self._holding.wait()
        if fault is not None and fault.kind == "drop":
            return self._cut(request, "dropped")
        if fault is not None and fault.kind in ("status", "body"):
            return web.Response(
                status=fault.status_code,
                body=fault.content,
                headers={"Content-Type": "application/json", **fault.headers},
            )
        if fault is not None and fault.kind == "hang":
            self.received.answers["hung"] += 1
            await self._closing.wait()
            return self._cut(request, "dropped")
        if plan.latency:
            await asyncio.sleep(self._latency())
        answer = await act()
        if (
            route == "create"
            and answer.status == 201
            and self.faults.lost_create_rate
            and self._random.random() < self.faults.lost_create_rate
        ):
            fault = Fault.lose()  # the session made, its answer lost
        if self._waiters:
            # What the request did (a session made) may be what a test waits for.
            self._wake_waiters()
        if fault is not None and fault.kind == "lose":
            return self._cut(request, "lost")
        if fault is not None and fault.kind == "stall":
            self.received.answers["hung"] += 1
            await self._closing.wait()
            return self._cut(request, "dropped")
        if fault is not None and fault.kind == "html" and answer.status < 300:
            return web.Response(status=200, body=fault.content, headers=dict(fault.headers))
        return answer

    def _draw(self) -> Fault | None:
        plan, draw = self.faults, self._random.random()
        for rate, make in (
            (plan.drop_rate, Fault.drop),
            (plan.rate_limit_rate, self._rate_limited),
            (plan.error_rate, lambda: Fault.status(plan.error_status)),
            (plan.lost_response_rate, Fault.lose),
            (plan.non_json_rate, Fault.html),
        ):
            if draw < rate:
                return make()
            draw -= rate
        return None

    def _take_token(self, rate: float) -> bool:
        burst = self.faults.rate_burst or max(1.0, rate / 10)
        now = asyncio.get_running_loop().time()
        if self._tokens is None:
            self._tokens = burst
        else:
            self._tokens = min(burst, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _rate_limited(self) -> Fault:
        after = self.faults.retry_after
        headers = {} if after is None else {"Retry-After": f"{after:g}"}
        return Fault.status(429, headers=headers, message="Too many requests")

    def _cut(self, request: web.Request, what: str) -> web.Response:
        self.received.answers[what] += 1
        if request.transport is not None:
            request.transport.close()
        # Nothing is written on a closed transport: the client sees the drop.
        return web.Response(status=_CUT)

    def _end_later(self, session: dict[str, Any]) -> None:
        delay = self.faults.release_delay
        if delay <= 0:
            self._end(session)
        elif math.isfinite(delay):
            loop = asyncio.get_running_loop()
            self._timers.append(loop.call_later(delay, self._end, session))

    def _end(self, session: dict[str, Any], status: str = "COMPLETED") -> None:
        if session["status"] not in TERMINAL:
            now = _iso(datetime.now(UTC))
            session.update(status=status, endedAt=now, updatedAt=now)
        if self._waiters:
            self._wake_waiters()


def _limited(limit: int, wait: float, message: str) -> web.Response:
    seconds = str(max(1, math.ceil(wait)))
    answer = _error(429, message)
    answer.headers.update(
        {
            "Retry-After": seconds,
            "x-ratelimit-limit": str(limit),
            "x-ratelimit-remaining": "0",
            "x-ratelimit-reset": seconds,
        }
    )
    return answer


def parse_query(query: str) -> list[tuple[list[str], str]]:
    """Parse a ``q`` as the API documents it: ``user_metadata['a']['b']:'value'``.

    Several terms may be joined by `` AND ``; inside quotes, ``\\'`` is a quote
    and ``\\\\`` a backslash. Anything else is refused.

    Returns:
        Each term's path of keys and its value.

    Raises:
        ValueError: The query is not of that form (the reason, said).
    """
    terms: list[tuple[list[str], str]] = []
    at = 0
    while True:
        if not query.startswith(_BASE, at):
            raise ValueError(f"expected {_BASE!r} at {at}")
        at += len(_BASE)
        path: list[str] = []
        while query.startswith("[", at):
            key, at = _quoted(query, at + 1)
            if not query.startswith("]", at):
                raise ValueError(f"expected ']' at {at}")
            path.append(key)
            at += 1
        if not path:
            raise ValueError(f"expected ['key'] at {at}")
        if not query.startswith(":", at):
            raise ValueError(f"expected ':' at {at}")
        value, at = _quoted(query, at + 1)
        terms.append((path, value))
        if at == len(query):
            return terms
        if not query.startswith(_AND, at):
            raise ValueError(f"unexpected text at {at}: {query[at : at + 20]!r}")
        at += len(_AND)


def _quoted(query: str, at: int) -> tuple[str, int]:
    """Read a single-quoted string at *at*; return it and the index after it."""
    if not query.startswith("'", at):
        raise ValueError(f"expected a quoted string at {at}")
    text: list[str] = []
    at += 1
    while at < len(query):
        char = query[at]
        if char == "\\" and at + 1 < len(query) and query[at + 1] in "'\\":
            text.append(query[at + 1])
            at += 2
        elif char == "'":
            return "".join(text), at + 1
        else:
            text.append(char)
            at += 1
    raise ValueError("a quoted string does not end")


def _lookup(metadata: object, path: list[str]) -> object:
    """The value at *path* in the user metadata, or ``None``."""
    for key in path:
        if not isinstance(metadata, dict):
            return None
        metadata = metadata.get(key)
    return metadata


def create_body_problem(body: object) -> str | None:
    """What the API would refuse in a create's body (as its description has it), or ``None``."""
    if not isinstance(body, dict):
        return "body must be a JSON object"
    for key, kind in _CREATE_FIELDS.items():
        if key in body and (problem := _problem(body[key], kind, key)) is not None:
            return problem
    metadata = body.get("userMetadata")
    if metadata is not None and len(json.dumps(metadata)) >= _MAX_METADATA:
        return f"userMetadata must be under {_MAX_METADATA} characters as JSON"
    return None


def _problem(value: object, kind: Any, where: str) -> str | None:
    if isinstance(kind, tuple):  # alternatives
        problems = [_problem(value, option, where) for option in kind]
        if None in problems:
            return None
        # The most telling refusal: of the alternative of the right "type", at the deepest field.
        told = [problem for problem in problems if problem is not None]
        return min(told, key=lambda problem: (".type must be" in problem, -len(problem)))
    if isinstance(kind, frozenset):
        return None if value in kind else f"{where} must be one of {sorted(kind)}"
    if isinstance(kind, range):
        if type(value) is not int or value not in kind:
            return f"{where} must be an integer from {kind.start} to {kind.stop - 1}"
        return None
    if isinstance(kind, list):  # an array of the one item kind
        if not isinstance(value, list):
            return f"{where} must be an array"
        for index, item in enumerate(value):
            if (problem := _problem(item, kind[0], f"{where}[{index}]")) is not None:
                return problem
        return None
    if isinstance(kind, dict):  # an object: its known fields, "!" marks the required
        if not isinstance(value, dict):
            return f"{where} must be an object"
        for key, sub in kind.items():
            name = key.removeprefix("!")
            if name not in value:
                if key.startswith("!"):
                    return f"{where}.{name} is required"
                continue
            if (problem := _problem(value[name], sub, f"{where}.{name}")) is not None:
                return problem
        return None
    if type(value) is not kind:
        return f"{where} must be {_JSON_NAMES[kind]}"
    return None


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(status: int, payload: object) -> web.Response:
    return web.Response(
        status=status, body=json.dumps(payload).encode(), content_type="application/json"
    )


def _error(status: int, message: str) -> web.Response:
    return _json(
        status, {"statusCode": status, "error": _REASONS.get(status, ""), "message": message}
    )


_CUT: Final = 499  # never sent: the marker of an answer replaced by a cut connection
_MINUTE: Final = 60.0
_BROWSER_WAIT: Final = 60.0
"""Seconds a full plan asks to wait when no running session ends by a timeout it knows."""
_BASE: Final = "user_metadata"
_AND: Final = " AND "
_MAX_METADATA: Final = 512
_JSON_NAMES: Final = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object"}
_TWO: Final = {"!country": str, "state": str, "city": str}
_PROXY: Final = (
    {"!type": frozenset({"browserbase"}), "geolocation": _TWO, "domainPattern": str},
    {
        "!type": frozenset({"external"}),
        "!server": str,
        "domainPattern": str,
        "username": str,
        "password": str,
    },
    {"!type": frozenset({"none"}), "domainPattern": str},
)
_CREATE_FIELDS: Final[dict[str, Any]] = {
    "projectId": str,
    "extensionId": str,
    "keepAlive": bool,
    "timeout": range(60, 21601),
    "region": frozenset(REGIONS),
    "userMetadata": dict,
    "proxies": (bool, [_PROXY]),
    "proxySettings": {"caCertificates": [str]},
    "browserSettings": {
        "context": {"!id": str, "persist": bool},
        "extensionId": str,
        "viewport": {"width": int, "height": int},
        "blockAds": bool,
        "solveCaptchas": bool,
        "recordSession": bool,
        "logSession": bool,
        "advancedStealth": bool,
        "verified": bool,
        "captchaImageSelector": str,
        "captchaInputSelector": str,
        "os": frozenset({"windows", "mac", "linux", "mobile", "tablet"}),
        "allowedDomains": [str],
        "ignoreCertificateErrors": bool,
    },
}
"""The create body's fields as the API's description types them (``!``: required)."""
_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
}
