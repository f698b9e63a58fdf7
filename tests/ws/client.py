#!/usr/bin/env python3
"""WebSocket client scenarios for tests/websocket.rs (the `websockets` package).

    client.py SCENARIO --url ws://127.0.0.1:PORT/ws/... [options]

Prints one line: `OK <scenario> <details>` and exits 0, or `FAIL <scenario>: <reason>` and
exits 1. Every wait is bounded; the whole scenario by --timeout (seconds).

Scenarios (see --help of each):
    echo            N messages on one connection, text and binary alternating, in order
    big             one binary message of --size bytes both ways
    ping            --count pings, each answered by its pong
    close-client    the client starts the close handshake; the server's close frame comes back
    close-server    the server starts it (echo_server's `close` command)
    many            --conns connections open at once, each echoing --messages messages
    expect-status   the handshake is answered with --status instead of 101
    flood           backpressure upstream -> client: the server floods while we do not read
    upload          backpressure client -> upstream: we flood while the server does not read
    idle            echo for --active-for seconds, then stay idle: the connection must close
                    between --min-close and --expect-close-within seconds later

Works with websockets >= 12 (the new asyncio API from 13 on, the legacy one before).
"""

import argparse
import asyncio
import os
import sys
import time
import warnings

import websockets

try:  # websockets >= 13
    from websockets.asyncio.client import connect
except ImportError:  # websockets 12
    from websockets.client import connect  # type: ignore

from websockets.exceptions import ConnectionClosed

try:
    from websockets.exceptions import InvalidStatus  # raised by the new API (13 on)
except ImportError:  # pragma: no cover
    InvalidStatus = None
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:  # raised by the legacy API (12)
        from websockets.exceptions import InvalidStatusCode
    except ImportError:  # pragma: no cover
        InvalidStatusCode = None

MAX_SIZE = 64 * 1024 * 1024


class Fail(Exception):
    pass


def opts(**kw):
    base = dict(
        max_size=MAX_SIZE,
        ping_interval=None,
        open_timeout=20,
        close_timeout=5,
        compression=None,
    )
    base.update(kw)
    return base


async def within(aw, seconds, what):
    try:
        return await asyncio.wait_for(aw, timeout=seconds)
    except asyncio.TimeoutError:
        raise Fail(f"timed out after {seconds} s: {what}") from None


def echo_message(i):
    if i % 2 == 0:
        return f"m{i}-" + "x" * (i % 50)
    return i.to_bytes(4, "big") + bytes([i % 251]) * (i % 200)


async def s_echo(a):
    async with connect(a.url, **opts()) as ws:
        n = a.count

        async def sender():
            for i in range(n):
                await ws.send(echo_message(i))

        task = asyncio.ensure_future(sender())
        try:
            for i in range(n):
                got = await within(ws.recv(), 10, f"echo of message {i}")
                want = echo_message(i)
                if got != want:
                    raise Fail(f"message {i}: got {got[:40]!r}, expected {want[:40]!r}")
            await within(task, 10, "sender")
        finally:
            task.cancel()
    return f"messages={n}"


async def s_big(a):
    data = os.urandom(a.size)
    async with connect(a.url, **opts()) as ws:
        await within(ws.send(data), 60, f"sending {a.size} bytes")
        got = await within(ws.recv(), 60, f"echo of {a.size} bytes")
        if not isinstance(got, bytes):
            raise Fail(f"expected a binary message, got text of {len(got)} characters")
        if got != data:
            first = next((i for i, (x, y) in enumerate(zip(got, data)) if x != y), None)
            raise Fail(f"got {len(got)} bytes, expected {len(data)}; first difference at {first}")
    return f"bytes={a.size}"


async def s_ping(a):
    async with connect(a.url, **opts()) as ws:
        for i in range(a.count):
            waiter = await ws.ping(f"ping-{i}".encode())
            await within(waiter, 5, f"pong {i}")
            await ws.send(f"after-ping-{i}")
            got = await within(ws.recv(), 5, f"echo after ping {i}")
            if got != f"after-ping-{i}":
                raise Fail(f"echo after ping {i}: {got!r}")
    return f"pings={a.count}"


async def s_close_client(a):
    ws = await within(connect(a.url, **opts()), 20, "handshake")
    await ws.send("before close")
    got = await within(ws.recv(), 5, "echo before close")
    if got != "before close":
        raise Fail(f"echo: {got!r}")
    t0 = time.monotonic()
    await within(ws.close(a.code, "client bye"), 10, "close handshake")
    took = time.monotonic() - t0
    if ws.close_code != a.code:
        raise Fail(f"close code back from the server: {ws.close_code} (1006: none came)")
    if took > 3:
        raise Fail(f"close took {took:.1f} s: the TCP close did not follow the close frames")
    return f"code={ws.close_code} took={took:.2f}"


async def s_close_server(a):
    ws = await within(connect(a.url, **opts()), 20, "handshake")
    t0 = time.monotonic()
    await ws.send(f"close {a.code} server bye")
    try:
        got = await within(ws.recv(), 10, "the server's close")
        raise Fail(f"expected a close, got a message {got!r}")
    except ConnectionClosed as e:
        # Clean: the server's close frame arrived and ours went back (codes other than 1000
        # and 1001 make it a ConnectionClosedError even then).
        if e.rcvd is None or e.sent is None:
            raise Fail(f"the close handshake did not complete: {e!r}") from None
        code, reason = e.rcvd.code, e.rcvd.reason
    took = time.monotonic() - t0
    if code != a.code or reason != "server bye":
        raise Fail(f"close frame from the server: code={code} reason={reason!r}")
    if took > 3:
        raise Fail(f"close took {took:.1f} s: the TCP close did not follow the close frames")
    return f"code={code} took={took:.2f}"


async def s_many(a):
    opened = 0
    all_open = asyncio.Event()

    async def one(k):
        nonlocal opened
        async with connect(a.url, **opts(open_timeout=30)) as ws:
            opened += 1
            if opened == a.conns:
                all_open.set()
            await within(all_open.wait(), 60, f"all {a.conns} open ({opened} are)")
            for i in range(a.messages):
                msg = f"c{k}-m{i}"
                await ws.send(msg)
                got = await within(ws.recv(), 20, f"connection {k} message {i}")
                if got != msg:
                    raise Fail(f"connection {k}: got {got!r}, expected {msg!r}")

    results = await asyncio.gather(*(one(k) for k in range(a.conns)), return_exceptions=True)
    bad = [(k, r) for k, r in enumerate(results) if isinstance(r, BaseException)]
    if bad:
        k, r = bad[0]
        raise Fail(f"{len(bad)} of {a.conns} connections failed; connection {k}: {r!r}")
    return f"conns={a.conns} messages={a.messages}"


def status_of(exc):
    if InvalidStatus is not None and isinstance(exc, InvalidStatus):
        return exc.response.status_code
    if InvalidStatusCode is not None and isinstance(exc, InvalidStatusCode):
        return exc.status_code
    return None


async def s_expect_status(a):
    try:
        ws = await within(connect(a.url, **opts()), 20, "handshake")
    except Exception as e:  # noqa: BLE001 - any refusal is inspected below
        status = status_of(e)
        if status is None:
            raise Fail(f"expected a {a.status} answer, the handshake failed with {e!r}") from None
        if status != a.status:
            raise Fail(f"expected status {a.status}, got {status}")
        return f"status={status}"
    await ws.close()
    raise Fail(f"expected status {a.status}, the handshake succeeded (101)")


async def s_flood(a):
    # A small queue: the library stops reading from the socket once a message or two wait.
    async with connect(a.url, **opts(max_queue=1)) as ws:
        await ws.send(f"flood {a.total} {a.chunk} {a.stall}")
        await asyncio.sleep(a.pause)  # not reading: the server must stall
        received = 0
        i = 0
        while True:
            m = await within(ws.recv(), 60, f"flood message {i} ({received} bytes so far)")
            if isinstance(m, str):
                words = m.split()
                if words[0] != "end":
                    raise Fail(f"unexpected text {m!r}")
                sent, stalled = int(words[1]), int(words[2])
                break
            if len(m) != a.chunk or m != bytes([i % 256]) * a.chunk:
                raise Fail(f"flood message {i}: wrong content or size {len(m)}")
            received += len(m)
            i += 1
    if received != sent:
        raise Fail(f"the server sent {sent} bytes, {received} arrived")
    if not stalled:
        raise Fail(f"the server was never held back: all {sent} bytes went out while we did not read")
    return f"sent={sent} stalled={stalled}"


async def s_upload(a):
    async with connect(a.url, **opts()) as ws:
        await ws.send(f"sink {a.pause}")
        sent = 0
        stalled = 0
        i = 0
        while sent < a.total:
            task = asyncio.ensure_future(ws.send(bytes([i % 256]) * a.chunk))
            done, _ = await asyncio.wait({task}, timeout=a.stall)
            if not done:
                stalled = 1
                await within(task, a.pause + 60, "the stalled send")
                sent += a.chunk
                break
            task.result()
            sent += a.chunk
            i += 1
        await ws.send("count?")
        m = await within(ws.recv(), a.pause + 120, "the server's count")
        if m != f"count {sent}":
            raise Fail(f"sent {sent} bytes, the server says {m!r}")
    if not stalled:
        raise Fail(f"we were never held back: all {sent} bytes went out while the server did not read")
    return f"sent={sent} stalled={stalled}"


async def s_idle(a):
    ws = await within(connect(a.url, **opts()), 20, "handshake")
    t_end = time.monotonic() + a.active_for
    i = 0
    while time.monotonic() < t_end:
        await ws.send(f"keepalive-{i}")
        try:
            got = await within(ws.recv(), 3, f"echo {i} while active")
        except ConnectionClosed as e:
            raise Fail(f"closed while active (after {i} echoes): {e!r}") from None
        if got != f"keepalive-{i}":
            raise Fail(f"echo {i}: {got!r}")
        i += 1
        await asyncio.sleep(a.interval)
    idle_from = time.monotonic()
    try:
        got = await asyncio.wait_for(ws.recv(), timeout=a.expect_close_within)
        raise Fail(f"expected a close, got a message {got!r}")
    except asyncio.TimeoutError:
        await ws.close()
        raise Fail(f"still open after {a.expect_close_within} s idle") from None
    except ConnectionClosed:
        pass
    took = time.monotonic() - idle_from
    if took < a.min_close:
        raise Fail(f"closed {took:.2f} s after the last message, earlier than {a.min_close} s")
    return f"echoes={i} closed_after={took:.2f}"


SCENARIOS = {
    "echo": s_echo,
    "big": s_big,
    "ping": s_ping,
    "close-client": s_close_client,
    "close-server": s_close_server,
    "many": s_many,
    "expect-status": s_expect_status,
    "flood": s_flood,
    "upload": s_upload,
    "idle": s_idle,
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("--url", required=True)
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--size", type=int, default=16 * 1024 * 1024)
    p.add_argument("--code", type=int, default=4000)
    p.add_argument("--conns", type=int, default=200)
    p.add_argument("--messages", type=int, default=5)
    p.add_argument("--status", type=int, default=502)
    p.add_argument("--total", type=int, default=256 * 1024 * 1024)
    p.add_argument("--chunk", type=int, default=1024 * 1024)
    p.add_argument("--stall", type=float, default=1.5)
    p.add_argument("--pause", type=float, default=5)
    p.add_argument("--active-for", type=float, default=3)
    p.add_argument("--interval", type=float, default=0.3)
    p.add_argument("--expect-close-within", type=float, default=5)
    p.add_argument("--min-close", type=float, default=0.5)
    a = p.parse_args()
    sys.stderr.write(f"client: websockets {websockets.__version__}\n")
    try:
        detail = asyncio.run(within(SCENARIOS[a.scenario](a), a.timeout, a.scenario))
    except Fail as e:
        print(f"FAIL {a.scenario}: {e}", flush=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001 - one line with the reason, whatever it is
        print(f"FAIL {a.scenario}: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    print(f"OK {a.scenario} {detail}", flush=True)


if __name__ == "__main__":
    main()
