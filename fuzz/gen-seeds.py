#!/usr/bin/env python3
"""Writes the checked-in seed corpus under fuzz/seeds/<target>/ (run from anywhere).

Each target's input layout is described at the top of its fuzz_targets/<target>.rs.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

GET = b"GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
GET_COND = (b"GET /a/b.css?v=3 HTTP/1.1\r\nHost: example.com:8080\r\nIf-None-Match: \"abc\"\r\n"
            b"If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\nConnection: keep-alive\r\n\r\n")
GET_RANGE = (b"GET /video.mp4 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n"
             b"If-Range: \"etag\"\r\nConnection: close\r\n\r\n")
HEAD = b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
HTTP10 = b"GET /index.html HTTP/1.0\r\n\r\n"
HTTP10_KA = b"GET /a HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
ABSOLUTE = b"GET http://example.com/a?q=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
OPTIONS = b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n"
POST_CL = b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
POST_CHUNKED = (b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6;ext=\"v\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
LEADING_CRLF = b"\r\n\r\nGET /empty HTTP/1.1\r\nHost: x\r\n\r\n"
SMUGGLE = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n")
EXPECT = b"PUT /f HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
BAD_VERSION = b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"
PIPELINED = (GET + HEAD + b"GET /missing HTTP/1.1\r\nHost: x\r\n\r\n" + POST_CL + POST_CHUNKED
             + b"DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n" + GET_COND + HTTP10)
BIG = b"GET /big1 HTTP/1.1\r\nHost: x\r\n\r\n" * 3 + b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"

REQUESTS = {
    "get": GET, "get-conditional": GET_COND, "get-range": GET_RANGE, "head": HEAD,
    "http10": HTTP10, "http10-keepalive": HTTP10_KA, "absolute-form": ABSOLUTE,
    "options-star": OPTIONS, "post-length": POST_CL, "post-chunked": POST_CHUNKED,
    "leading-crlf": LEADING_CRLF, "expect-continue": EXPECT, "cl-and-te": SMUGGLE, "http2-version": BAD_VERSION,
}

CHUNKED = {
    "simple": b"5\r\nhello\r\n0\r\n\r\n",
    "two-chunks-trailer": b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-T: v\r\n\r\nNEXT",
    "extensions": b"a ; ext = tok\r\n0123456789\r\n1;q=\"a\\\"b\"\r\nx\r\n00\r\n\r\n",
    "upper-hex": b"1A\r\n" + b"z" * 26 + b"\r\n0\r\n\r\n",
    "bare-lf": b"5\nhello\r\n0\r\n\r\n",
    "too-many-digits": b"11111111111111111\r\n",
}


def write(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def cuts(*pieces):
    """Cut descriptors for common::split: one u16 per piece length, top bit = flush flag."""
    return b"".join(struct.pack("<H", (n & 0x7fff) | (0x8000 if flush else 0)) for n, flush in pieces)


for name, req in REQUESTS.items():
    write("request_head", name, req)

for name, body in CHUNKED.items():
    write("chunked", name, b"\x00" + body)
write("chunked", "split-in-size-line", b"\x02" + cuts((1, 0), (3, 0)) + CHUNKED["two-chunks-trailer"])
write("chunked", "split-in-data", b"\x03" + cuts((5, 0), (2, 0), (9, 0)) + CHUNKED["extensions"])

# session: flags byte (cuts count | 0x10 small limits), cut descriptors, stream
write("session", "pipelined", b"\x00" + PIPELINED)
write("session", "pipelined-split", b"\x04" + cuts((10, 0), (50, 1), (1, 0), (200, 0)) + PIPELINED)
write("session", "pipelined-small-limits", b"\x12" + cuts((30, 1), (30, 0)) + PIPELINED)
write("session", "high-water", b"\x02" + cuts((40, 0), (33, 0)) + BIG)
write("session", "http10", b"\x00" + HTTP10_KA + HTTP10 + GET)
write("session", "leading-crlf-split", b"\x02" + cuts((1, 0), (2, 0)) + LEADING_CRLF)
write("session", "cl-and-te", b"\x00" + SMUGGLE)
write("session", "expect-continue", b"\x00" + EXPECT + GET)
write("session", "partial-head", b"\x00" + GET + b"GET /half HTTP/1.1\r\nHo")
write("session", "head-too-large", b"\x10" + b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
write("session", "body-too-large", b"\x10" + b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      + b"50\r\n" + b"x" * 80 + b"\r\n0\r\n\r\n" + GET)

for name, path in {
    "index": b"/index.html", "dotdot": b"/a/../b", "encoded-dotdot": b"/%2e%2e/", "encoded-dot": b"/a/%2e/b",
    "double-slash": b"//a//b/", "encoded-slash": b"/a%2fb", "backslash": b"/a%5cb", "nul": b"/a%00b",
    "space": b"/a%20b/c", "utf8": b"/%C3%A9t%C3%A9", "escape": b"/a/../../etc/passwd", "root": b"/",
}.items():
    write("path_resolve", name, path)

for name, (length, value) in {
    "first-last": (100, b"bytes=0-99"), "open": (10, b"bytes=5-"), "suffix": (10, b"bytes=-3"),
    "suffix-long": (10, b"bytes=-30"), "past-end": (10, b"bytes=10-"), "suffix-zero": (10, b"bytes=-0"),
    "empty-repr": (0, b"bytes=0-0"), "multi": (10, b"bytes=0-1,3-4"), "reversed": (10, b"bytes=5-1"),
    "ows": (10, b"bytes= 2-3 "), "other-unit": (10, b"items=0-1"),
}.items():
    write("range", name, bytes([length]) + value)
write("range", "huge-len", b"\xff" + struct.pack("<Q", 2**64 - 1) + b"bytes=18446744073709551614-")
write("range", "long-number", b"\x0a" + b"bytes=0-99999999999999999999")

# upstream_response: a raw upstream response head (and what follows it)
UPSTREAM = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello",
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "gzip-close": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzzz",
    "http10-close": b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\nbody",
    "connection-names-length": b"HTTP/1.1 200 OK\r\nConnection: Content-Length, X\r\nContent-Length: 5\r\nX: 1\r\n\r\nhello",
    "connection-names-te": b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "continue-then-200": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "not-modified": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\nETag: \"e\"\r\n\r\n",
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "hop-by-hop": (b"HTTP/1.1 201 Made\r\nKeep-Alive: timeout=5\r\nProxy-Authenticate: x\r\nUpgrade: h2c\r\n"
                   b"Connection: close\r\nContent-Length: 0\r\n\r\n"),
}
for name, resp in UPSTREAM.items():
    write("upstream_response", name, resp)

# proxy_rewrite: flags byte (bit 0: trusted forwarding), then a request head
REWRITE = {
    "get": b"\x00" + GET,
    "absolute-query": b"\x00GET http://h?q=1 HTTP/1.1\r\nHost: h\r\n\r\n",
    "http10-no-host": b"\x00" + HTTP10,
    "post-length": b"\x00" + POST_CL,
    "post-chunked": b"\x00" + POST_CHUNKED,
    "post-zero-length": b"\x00POST /f HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "connection-names-length": b"\x00POST /a HTTP/1.1\r\nHost: h\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\nabc",
    "connection-names-te-host": (b"\x00POST /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Transfer-Encoding, Host\r\n"
                                 b"Transfer-Encoding: chunked\r\n\r\n"),
    "forwarded-untrusted": (b"\x00GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 2.2.2.2\r\n"
                            b"Forwarded: for=3.3.3.3\r\nX-Forwarded-For: 4.4.4.4\r\n\r\n"),
    "forwarded-trusted": (b"\x01GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\nX-Real-IP: 2.2.2.2\r\n"
                          b"Connection: X-Forwarded-For\r\nX-Forwarded-For: 4.4.4.4\r\n\r\n"),
}
for name, req in REWRITE.items():
    write("proxy_rewrite", name, req)

# accept_encoding: byte 0 = siblings (bit 0 br, 1 zstd, 2 gzip; bit 3: no field), then the value
ACCEPT = {
    "browser": (7, b"gzip, deflate, br, zstd"),
    "qvalues": (7, b"br;q=0.5, gzip;q=0.5, identity;q=0"),
    "star-refuses": (4, b"*;q=0, identity"),
    "identity-refused": (3, b"identity;q=0"),
    "malformed-q": (7, b"br;q=1.5, gzip;q=0.001, x-gzip"),
    "absent": (15, b""),
}
for name, (siblings, value) in ACCEPT.items():
    write("accept_encoding", name, bytes([siblings]) + value)
