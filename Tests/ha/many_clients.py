#!/usr/bin/env python3
"""Many keep-alive HTTP connections, held idle across rounds of a test.

usage: many_clients.py GO_FILE COUNT SOURCES HOST:PORT...

Opens COUNT connections to each target, from the comma-separated SOURCES
addresses in turn, and makes one request on each; prints "ready". Then for
each round k = 1, 2, ... it waits (at most 120 s) for GO_FILE.k, makes one
more request on every connection and prints one JSON line: the round, how
many connections the same real server answered again, and the first errors.
GO_FILE.end ends it.
"""
import json
import os
import socket
import sys
import time


def request(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise EOFError("closed before the headers")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise EOFError("closed in the body")
        body += chunk
    # nginx answers its name and the peer it sees: the name is what must not change.
    return body.decode().split()[0]


def main():
    go, count, sources, targets = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4:]
    conns = []
    k = 0
    for t in targets:
        host, port = t.rsplit(":", 1)
        for _ in range(count):
            s = socket.create_connection((host, int(port)), timeout=20, source_address=(sources[k % len(sources)], 0))
            k += 1
            conns.append((t, s, request(s)))
    print("ready %d" % len(conns), flush=True)
    round = 1
    while True:
        deadline = time.time() + 120
        while not os.path.exists("%s.%d" % (go, round)) and not os.path.exists(go + ".end"):
            if time.time() > deadline:
                return
            time.sleep(0.05)
        if os.path.exists(go + ".end"):
            return
        ok, errors = 0, []
        for t, s, first in conns:
            try:
                again = request(s)
                if again == first:
                    ok += 1
                else:
                    errors.append("%s: %s, then %s" % (t, first, again))
            except Exception as e:  # the answer the test reports
                errors.append("%s (%s): %s" % (t, first, e))
        print(json.dumps({"round": round, "connections": len(conns), "ok": ok, "errors": errors[:10]}), flush=True)
        round += 1


main()
