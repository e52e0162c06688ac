"""Benchmark: browserbase_async against a bare aiohttp loop and the official SDK (both backends).

    python bench/bench.py                    # the full run (pip install -e '.[bench]' first)
    python bench/bench.py --instructions 2000   # and instruction counts (needs valgrind)
    python bench/bench.py --quick            # a tiny run that only checks everything works

Each contender runs in a fresh process of its own, against one server in another process on
127.0.0.1, for the same ids at the same concurrency; the contenders alternate, round after
round, and the table gives the median of the rounds, each ratio the median of its per-round
ratios. CPU time is the client process's own (getrusage), measured around the releases only,
after an untimed warm-up round of 500; peak RSS is the process's high-water mark. Every
contender runs with the same fixed glibc malloc thresholds (see SETTLED_MALLOC).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# On two cores or more, the server and the client each get a core of their own, so that
# neither steals the other's time slices (the machine is small and shared: keep noise down).
PINNED = hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2
CLIENT_CPU, SERVER_CPU = 0, 1


def _pin_server() -> None:
    if PINNED:
        os.sched_setaffinity(0, {SERVER_CPU})


CONTENDERS = ("ours_many", "ours_release", "aiohttp", "aiohttp_pool", "sdk", "sdk_aiohttp")
SDKS = frozenset({"sdk", "sdk_aiohttp"})
"""The official SDK's contenders: ten times slower a round, they run in fewer rounds."""
LABELS = {
    "ours_many": "ours: release_many",
    "ours_release": "ours: release() + semaphore",
    "aiohttp": "bare aiohttp loop",
    "aiohttp_pool": "bare aiohttp worker pool",
    "sdk": "official SDK, httpx backend (browserbase)",
    "sdk_aiohttp": "official SDK, aiohttp backend (browserbase[aiohttp])",
}


# -- the contenders, each run in its own process --------------------------------------------


async def ours_many(url: str, ids: list[str], concurrency: int) -> int:
    from browserbase_async import SessionsAPI

    async with SessionsAPI("bench-key", base_url=url) as api:
        report = await api.release_many(ids, concurrency=concurrency)
    return len(report.released)


async def ours_release(url: str, ids: list[str], concurrency: int) -> int:
    from browserbase_async import SessionsAPI

    gate = asyncio.Semaphore(concurrency)
    async with SessionsAPI("bench-key", base_url=url) as api:

        async def one(session_id: str) -> bool:
            async with gate:
                return (await api.release(session_id)).is_terminal

        return sum(await asyncio.gather(*(one(i) for i in ids)))


async def bare_aiohttp(url: str, ids: list[str], concurrency: int) -> int:
    import aiohttp

    gate = asyncio.Semaphore(concurrency)
    headers = {"X-BB-API-Key": "bench-key"}
    body = {"status": "REQUEST_RELEASE"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

        async def one(session_id: str) -> bool:
            async with (
                gate,
                http.post(f"{url}/v1/sessions/{session_id}", json=body, headers=headers) as r,
            ):
                return (await r.json())["status"] == "COMPLETED"

        return sum(await asyncio.gather(*(one(i) for i in ids)))


async def bare_aiohttp_pool(url: str, ids: list[str], concurrency: int) -> int:
    """The bare loop as a worker pool, the shape of release_many: the floor for that shape."""
    import aiohttp

    headers = {"X-BB-API-Key": "bench-key"}
    body = {"status": "REQUEST_RELEASE"}
    pending = iter(ids)
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:

        async def worker() -> None:
            nonlocal done
            for session_id in pending:
                endpoint = f"{url}/v1/sessions/{session_id}"
                async with http.post(endpoint, json=body, headers=headers) as answer:
                    done += (await answer.json())["status"] == "COMPLETED"

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def official_sdk(url: str, ids: list[str], concurrency: int) -> int:
    return await _official_sdk(url, ids, concurrency, aiohttp_backend=False)


async def official_sdk_aiohttp(url: str, ids: list[str], concurrency: int) -> int:
    return await _official_sdk(url, ids, concurrency, aiohttp_backend=True)


async def _official_sdk(
    url: str, ids: list[str], concurrency: int, *, aiohttp_backend: bool
) -> int:
    """The SDK's own call, on its default httpx backend or on its aiohttp one
    (``browserbase[aiohttp]``, ``http_client=DefaultAioHttpClient()``)."""
    from browserbase import AsyncBrowserbase, DefaultAioHttpClient

    gate = asyncio.Semaphore(concurrency)
    backend = {"http_client": DefaultAioHttpClient()} if aiohttp_backend else {}
    client = AsyncBrowserbase(api_key="bench-key", base_url=url, **backend)
    try:

        async def one(session_id: str) -> bool:
            async with gate:
                session = await client.sessions.update(session_id, status="REQUEST_RELEASE")
                return session.status == "COMPLETED"

        return sum(await asyncio.gather(*(one(i) for i in ids)))
    finally:
        await client.close()


async def ours_stream(url: str, count: int, concurrency: int) -> int:
    from browserbase_async import SessionsAPI

    async def generate() -> AsyncIterator[str]:
        for n in range(count):
            yield f"s-{n}"

    done = 0
    async with SessionsAPI("bench-key", base_url=url) as api:
        results = api.release_iter(generate(), concurrency=concurrency)
        async with contextlib.aclosing(results):
            async for result in results:
                done += result.ok
    return done


RUNNERS: dict[str, Callable[[str, list[str], int], Coroutine[Any, Any, int]]] = {
    "ours_many": ours_many,
    "ours_release": ours_release,
    "aiohttp": bare_aiohttp,
    "aiohttp_pool": bare_aiohttp_pool,
    "sdk": official_sdk,
    "sdk_aiohttp": official_sdk_aiohttp,
}


IMPORTS = {
    "sdk": "browserbase",
    "sdk_aiohttp": "httpx_aiohttp",
    "aiohttp": "aiohttp",
    "aiohttp_pool": "aiohttp",
}
WARM_UP = 500


def run_contender(name: str, url: str, n: int, concurrency: int) -> dict[str, Any]:
    """Run one contender in this process; return its measures."""
    if PINNED:
        os.sched_setaffinity(0, {CLIENT_CPU})
    # Imported before the clock starts: the measure is of releases, not of imports.
    __import__(IMPORTS.get(name, "browserbase_async"))
    loop = asyncio.new_event_loop()
    if name == "stream":
        coroutine = ours_stream(url, n, concurrency)
    else:
        # A warm-up round, untimed and alike for all: the measure is of the steady state,
        # not of a new process's first connections and first-time code paths.
        warm = [f"w-{i}" for i in range(WARM_UP)]
        loop.run_until_complete(RUNNERS[name](url, warm, concurrency))
        ids = [f"s-{i}" for i in range(n)]
        coroutine = RUNNERS[name](url, ids, concurrency)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    ok = loop.run_until_complete(coroutine)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    loop.close()
    user = after.ru_utime - before.ru_utime
    system = after.ru_stime - before.ru_stime
    return {
        "name": name,
        "n": n,
        "ok": ok,
        "cpu": user + system,
        "sys": system,
        "page_faults": after.ru_minflt - before.ru_minflt,
        "wall": wall,
        "rss_kb": after.ru_maxrss,
    }


# -- servers --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def python_server(latency: float = 0.0) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "server.py"), str(port), str(latency)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_pin_server,
    )
    try:
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the bench server did not start")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)


ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")


@contextlib.contextmanager
def nginx_server(latency: float = 0.0) -> Iterator[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    body = (HERE / "session.json").read_text().strip()
    if latency:
        # Debian's libnginx-mod-http-echo: a delayed answer that costs nginx nothing.
        load = f"load_module {ECHO_MODULE};"
        answer = f"echo_sleep {latency}; echo '{body}';"
    else:
        load, answer = "", f"return 200 '{body}';"
    with tempfile.TemporaryDirectory() as prefix:
        conf = Path(prefix) / "nginx.conf"
        conf.write_text(
            f"""
{load}
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log stderr error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix};
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location /v1/sessions/ {{
            default_type application/json;
            {answer}
        }}
    }}
}}
"""
        )
        process = subprocess.Popen([nginx, "-p", prefix, "-c", str(conf)], preexec_fn=_pin_server)
        try:
            for _ in range(100):
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                    break
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=10)


def has_nginx() -> bool:
    return shutil.which("nginx") is not None or Path("/usr/sbin/nginx").exists()


# -- the orchestration ----------------------------------------------------------------------


# asyncio reads a socket with recv(256 KiB) and shrinks the bytes to what came. glibc serves
# that buffer from the heap if its top has room, and else, below its mmap threshold, grows the
# heap; above it, it maps fresh memory: mmap, mremap, munmap and two page faults for every
# read, about 10 % of a release's CPU. The threshold starts at 128 KiB and rises for good the
# first time the process frees a mapped buffer whole (an EAGAIN, an EOF); so in a short run,
# which mode a contender runs in is luck of its heap's layout, for any contender. Fixed
# thresholds put every contender in the mode a long-running process settles in;
# BENCH_UNSETTLED=1 leaves glibc's defaults.
SETTLED_MALLOC = "glibc.malloc.mmap_threshold=524288:glibc.malloc.trim_threshold=1048576"


def spawn(
    name: str, url: str, n: int, concurrency: int, wrapper: tuple[str, ...] = ()
) -> dict[str, Any]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if os.environ.get("BENCH_UNSETTLED") != "1":
        env["GLIBC_TUNABLES"] = SETTLED_MALLOC
    out = subprocess.run(
        [*wrapper, sys.executable, __file__, "contender", name, url, str(n), str(concurrency)],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    if result["ok"] != n:
        raise RuntimeError(f"{name}: {result['ok']} of {n} releases succeeded")
    if wrapper:
        result["stderr"] = out.stderr
    return result


CACHEGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")


def instructions(url: str, contenders: list[str], n: int, concurrency: int) -> dict[str, float]:
    """User-space instructions per release of each contender, counted by cachegrind.

    A count, not a time: the same whatever else the machine does, so it shows a change of
    a few per cent that the noise of a shared machine hides. Each contender runs twice,
    with *n* releases and with none, and the difference is divided by *n*: start-up,
    imports and the warm-up cancel out. The kernel's work (system time) is not counted.
    """
    counts = {}
    for name in contenders:
        refs = [
            int(re.search(r"I\s+refs:\s+([\d,]+)", run["stderr"])[1].replace(",", ""))  # type: ignore[index]
            for run in (spawn(name, url, size, concurrency, CACHEGRIND) for size in (0, n))
        ]
        counts[name] = (refs[1] - refs[0]) / n
    return counts


def median_of(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def throughput(
    url: str, contenders: list[str], n: int, concurrency: int, runs: int, sdk_runs: int
) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for round_ in range(runs):
        order = contenders[round_ % len(contenders) :] + contenders[: round_ % len(contenders)]
        for name in order:
            # The SDK takes ten times as long a round, and its ratio is far from its target.
            if name not in SDKS or round_ < sdk_runs:
                rows[name].append(spawn(name, url, n, concurrency) | {"round": round_})
    table: dict[str, Any] = {}
    for name, measured in rows.items():
        cpu = median_of(measured, "cpu")
        wall = median_of(measured, "wall")
        table[name] = {
            "cpu_us_per_release": cpu / n * 1e6,
            "sys_us_per_release": median_of(measured, "sys") / n * 1e6,
            "page_faults_per_release": median_of(measured, "page_faults") / n,
            "wall_s": wall,
            "releases_per_s": n / wall,
            "peak_rss_mib": median_of(measured, "rss_kb") / 1024,
            "runs": measured,
        }
    return table


PAIRS = (
    ("ours (release_many) / bare aiohttp, CPU", "ours_many", "aiohttp", "<= 1.2"),
    ("ours (release()) / bare aiohttp, CPU", "ours_release", "aiohttp", "<= 1.2"),
    ("ours (release_many) / bare aiohttp worker pool, CPU", "ours_many", "aiohttp_pool", ""),
    ("official SDK, httpx backend / ours (release_many), CPU", "sdk", "ours_many", ">= 10"),
    ("official SDK, aiohttp backend / ours (release_many), CPU", "sdk_aiohttp", "ours_many", ""),
)


def paired_ratios(table: dict[str, Any]) -> list[tuple[str, list[float], str]]:
    """Each ratio as its per-round ratios, sorted: a round's contenders ran side by side,
    under the same load, so pairing them cancels most of a shared machine's drift."""
    ratios = []
    for label, top, bottom, target in PAIRS:
        if top in table and bottom in table:
            by_round = {run["round"]: run["cpu"] for run in table[bottom]["runs"]}
            values = sorted(run["cpu"] / by_round[run["round"]] for run in table[top]["runs"])
            ratios.append((label, values, target))
    return ratios


def spread(values: list[float]) -> str:
    """The median of sorted *values*, and their middle half when there are enough of them."""
    middle = f"{statistics.median(values):.2f}"
    if len(values) < 4:
        return middle
    low, _, high = statistics.quantiles(values, n=4)
    return f"{middle} ({low:.2f} to {high:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="releases per contender run")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=25, help="alternating rounds (median)")
    parser.add_argument("--sdk-runs", type=int, default=5, help="of which rounds with the SDK")
    parser.add_argument("--server", choices=("auto", "nginx", "python"), default="auto")
    parser.add_argument("--stream", default="10000,100000", help="ids for the RSS check")
    parser.add_argument("--latency-n", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="tiny N, one round: a smoke run")
    parser.add_argument(
        "--contenders", default=",".join(CONTENDERS), help="which contenders, comma-separated"
    )
    parser.add_argument("--skip-extras", action="store_true", help="no RSS or latency run")
    parser.add_argument(
        "--instructions",
        type=int,
        default=0,
        metavar="N",
        help="also count instructions per release under valgrind, over N releases",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args()
    if args.quick:
        args.n, args.runs, args.stream, args.latency_n = 200, 1, "200,400", 200
    chosen = args.contenders.split(",")
    unknown = sorted(set(chosen) - set(CONTENDERS))
    if unknown:
        choices = ", ".join(CONTENDERS)
        parser.error(f"unknown contenders: {', '.join(unknown)}; choose from {choices}")
    contenders = [name for name in chosen if name not in SDKS or _importable(IMPORTS[name])]
    use_nginx = args.server == "nginx" or (args.server == "auto" and has_nginx())
    server = nginx_server if use_nginx else python_server
    report: dict[str, Any] = {
        "n": args.n,
        "concurrency": args.concurrency,
        "runs": args.runs,
        "sdk_runs": min(args.sdk_runs, args.runs),
        "server": "nginx" if use_nginx else "python",
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "malloc": "glibc defaults" if os.environ.get("BENCH_UNSETTLED") == "1" else "settled",
    }
    with server() as url:
        report["throughput"] = throughput(
            url, contenders, args.n, args.concurrency, args.runs, args.sdk_runs
        )
        if args.instructions:
            if shutil.which("valgrind") is None:
                print("no valgrind: instruction counts skipped", file=sys.stderr)
            else:
                report["instructions"] = {
                    "n": args.instructions,
                    "per_release": instructions(
                        url, contenders, args.instructions, args.concurrency
                    ),
                }
        if args.skip_extras:
            _finish(report, args.out)
            return
        small, large = (int(x) for x in args.stream.split(","))
        stream = {size: spawn("stream", url, size, args.concurrency) for size in (small, large)}
        report["stream"] = {
            "small": small,
            "large": large,
            "rss_small_mib": stream[small]["rss_kb"] / 1024,
            "rss_large_mib": stream[large]["rss_kb"] / 1024,
        }
    slow = nginx_server if use_nginx and ECHO_MODULE.exists() else python_server
    with slow(latency=0.05) as url:
        latency_run = spawn("ours_many", url, args.latency_n, 100)
        ideal = args.latency_n / 100 * 0.05
        report["latency"] = {"n": args.latency_n, "wall_s": latency_run["wall"], "ideal_s": ideal}
    _finish(report, args.out)


def _finish(report: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(render(report))


def render(report: dict[str, Any]) -> str:
    table = report["throughput"]
    lines = [
        f"{report['n']} releases, concurrency {report['concurrency']}, "
        f"median of {report['runs']} alternating rounds (the SDK in {report['sdk_runs']}), "
        f"{report['server']} server, "
        f"Python {report['python']}, {report['cpus']} CPUs"
        + (", client and server pinned to a core each" if PINNED else "")
        + f", malloc {report['malloc']}",
        "",
        "| contender | CPU µs / release | of which system | page faults / release "
        "| wall s | releases / s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {LABELS[name]} | {row['cpu_us_per_release']:.0f} | {row['sys_us_per_release']:.0f} "
            f"| {row['page_faults_per_release']:.1f} | {row['wall_s']:.2f} "
            f"| {row['releases_per_s']:.0f} | {row['peak_rss_mib']:.1f} |"
        )
    ratios = paired_ratios(table)
    lines += [
        "",
        "| ratio (median of the per-round ratios, and their middle half) | value | target |",
        "|---|---:|---:|",
    ]
    lines += [f"| {label} | {spread(values)} | {target} |" for label, values, target in ratios]
    if "stream" in report:
        lines += _extras(report)
    if "instructions" in report:
        lines += _instruction_table(report["instructions"])
    return "\n".join(lines)


def _instruction_table(counted: dict[str, Any]) -> list[str]:
    per = counted["per_release"]
    lines = [
        "",
        f"Instructions per release, user space, counted by cachegrind over {counted['n']:,}",
        "releases (deterministic: a check on the timed ratios, which a shared machine blurs):",
        "",
        "| contender | instructions / release |",
        "|---|---:|",
    ]
    lines += [f"| {LABELS[name]} | {count:,.0f} |" for name, count in per.items()]
    lines += ["", "| ratio of instructions | value |", "|---|---:|"]
    lines += [
        f"| {label.removesuffix(', CPU')} | {per[top] / per[bottom]:.2f} |"
        for label, top, bottom, _ in PAIRS
        if top in per and bottom in per
    ]
    return lines


def _extras(report: dict[str, Any]) -> list[str]:
    lines = []
    stream = report["stream"]
    lines.append(
        f"| RSS({stream['large']:,} streamed) / RSS({stream['small']:,} streamed) "
        f"| {stream['rss_large_mib'] / stream['rss_small_mib']:.2f} | <= 1.1 |"
    )
    latency = report["latency"]
    lines.append(
        f"| latency-bound run ({latency['n']:,} ids, 50 ms, concurrency 100) / ideal "
        f"| {latency['wall_s'] / latency['ideal_s']:.2f} | <= 1.25 |"
    )
    return lines


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "contender":
        _, _, name, url, n, concurrency = sys.argv
        print(json.dumps(run_contender(name, url, int(n), int(concurrency))))
    else:
        main()
