"""A cheap canned Browserbase for benchmarks: every update answers one fixed Session.

Run as ``python bench/server.py PORT [LATENCY_SECONDS]``; it prints ``ready`` once listening.
Stateless on purpose: the benchmark measures the client, so the server must cost little.
"""

from __future__ import annotations

import asyncio
import json
import sys

from aiohttp import web

SESSION = json.dumps(
    {
        "id": "bench",
        "createdAt": "2026-11-28T09:00:00.000Z",
        "updatedAt": "2026-11-28T09:00:01.000Z",
        "projectId": "bench-project",
        "startedAt": "2026-11-28T09:00:00.000Z",
        "endedAt": "2026-11-28T09:00:01.000Z",
        "expiresAt": "2026-11-28T15:00:00.000Z",
        "status": "COMPLETED",
        "proxyBytes": 0,
        "keepAlive": False,
        "region": "us-west-2",
    }
).encode()


async def main(port: int, latency: float) -> None:
    async def update(request: web.Request) -> web.Response:
        await request.read()
        if latency:
            await asyncio.sleep(latency)
        return web.Response(body=SESSION, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/sessions/{id}", update)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.0))
