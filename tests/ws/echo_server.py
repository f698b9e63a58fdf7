#!/usr/bin/env python3
"""A WebSocket echo server for the tests in tests/websocket.rs (the `websockets` package).

Listens on 127.0.0.1, port 0 (or --port), and prints `PORT <n>` on stdout once listening. Then
one line per event, flushed at once, for the Rust side to wait on:

    OPEN <path>
    CLOSED <path> code=<close code received, or 1006> sent=<bytes> received=<bytes>
    STALLED <path> after=<bytes>       a flood send blocked: the peer does not read
    FLOOD <path> sent=<bytes> stalled=<0|1>

Every connection echoes text and binary messages as they come (pings are answered by the
library). Text messages of this form are commands instead of data:

    close <code> <reason>        the server starts the close handshake with that code
    pause <seconds>              stop reading for that long, then go on echoing
    sink <seconds>               stop reading for that long, then read and discard
                                 everything, counting bytes, until the text `count?`, which is
                                 answered `count <bytes>`
    flood <total> <chunk> <stall>
                                 send binary messages of <chunk> bytes (message i is the byte
                                 i % 256 repeated) until <total> bytes were sent or one send
                                 blocked for <stall> seconds (then that send is finished and
                                 the flood ends); then the text `end <sent> <stalled 0|1>`

A request for /<anything>/status/<code> is answered with that status and a short text body
instead of a handshake (an upstream that does not switch protocols).

Works with websockets >= 12 (the new asyncio API from 13 on, the legacy one before).
"""

import argparse
import asyncio
import http
import signal
import sys

import websockets

try:  # websockets >= 13
    from websockets.asyncio.server import serve

    NEW_API = True
except ImportError:  # websockets 12
    from websockets.server import serve  # type: ignore

    NEW_API = False

from websockets.exceptions import ConnectionClosed

MAX_SIZE = 64 * 1024 * 1024


def say(*parts):
    print(*parts, flush=True)


def path_of(ws):
    if NEW_API:
        return ws.request.path
    return ws.path


def received_code(ws, exc=None):
    rcvd = getattr(exc, "rcvd", None) if exc is not None else None
    if rcvd is not None:
        return rcvd.code
    code = ws.close_code
    return 1006 if code is None else code


async def flood(ws, path, total, chunk, stall):
    sent = 0
    stalled = 0
    i = 0
    while sent < total:
        msg = bytes([i % 256]) * chunk
        task = asyncio.ensure_future(ws.send(msg))
        done, _ = await asyncio.wait({task}, timeout=stall)
        if not done:
            stalled = 1
            say("STALLED", path, f"after={sent}")
            # Finish this message (never cut a frame in half); the peer reads again later.
            await asyncio.wait_for(task, timeout=120)
            sent += chunk
            break
        task.result()
        sent += chunk
        i += 1
    say("FLOOD", path, f"sent={sent}", f"stalled={stalled}")
    await ws.send(f"end {sent} {stalled}")
    return sent


async def handler(ws, *_legacy_path):
    path = path_of(ws)
    say("OPEN", path)
    sent = 0
    received = 0
    code = 1006
    try:
        while True:
            msg = await ws.recv()
            received += len(msg)
            if isinstance(msg, str):
                words = msg.split(" ", 2)
                if words[0] == "close" and len(words) >= 2:
                    await ws.close(int(words[1]), words[2] if len(words) > 2 else "")
                    break
                if words[0] == "pause":
                    await asyncio.sleep(float(words[1]))
                    continue
                if words[0] == "sink":
                    await asyncio.sleep(float(words[1]))
                    count = 0
                    while True:
                        m = await ws.recv()
                        if isinstance(m, str) and m == "count?":
                            break
                        count += len(m)
                    received += count
                    await ws.send(f"count {count}")
                    continue
                if words[0] == "flood":
                    total, chunk, stall = msg.split()[1:4]
                    sent += await flood(ws, path, int(total), int(chunk), float(stall))
                    continue
            await ws.send(msg)
            sent += len(msg)
    except ConnectionClosed as e:
        code = received_code(ws, e)
    else:
        try:
            await asyncio.wait_for(ws.wait_closed(), timeout=30)
        except Exception:
            pass
        code = received_code(ws)
    say("CLOSED", path, f"code={code}", f"sent={sent}", f"received={received}")


def status_for(path):
    parts = path.split("?")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "status":
        return int(parts[-1])
    return None


def process_request_new(connection, request):
    status = status_for(request.path)
    if status is None:
        return None
    response = connection.respond(http.HTTPStatus(status), "not a websocket\n")
    return response


async def process_request_legacy(path, _headers):
    status = status_for(path)
    if status is None:
        return None
    return http.HTTPStatus(status), [], b"not a websocket\n"


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    common = dict(
        max_size=MAX_SIZE,
        max_queue=4,
        ping_interval=None,
        close_timeout=10,
        compression=None,
    )
    if NEW_API:
        server = await serve(
            handler, "127.0.0.1", args.port, process_request=process_request_new, **common
        )
    else:
        server = await serve(
            handler, "127.0.0.1", args.port, process_request=process_request_legacy, **common
        )
    port = next(iter(server.sockets)).getsockname()[1]
    say("PORT", port)
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    # Never outlive a test that forgot us: ten minutes at most.
    try:
        await asyncio.wait_for(stop, timeout=600)
    except asyncio.TimeoutError:
        pass
    server.close()


if __name__ == "__main__":
    sys.stderr.write(f"echo_server: websockets {websockets.__version__}\n")
    asyncio.run(main())
