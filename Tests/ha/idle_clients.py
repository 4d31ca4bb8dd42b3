#!/usr/bin/env python3
"""Keep-alive HTTP connections held idle across a director failover.

usage: idle_clients.py GO_FILE HOST:PORT...

Opens 5 connections to each target and makes one request on each, prints
"ready", waits (at most 60 s) until GO_FILE exists, then makes a second
request on every connection and prints one JSON line: for each connection
its target and both answers (or the error of the second).
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
    return body.decode().strip()


def main():
    go, targets = sys.argv[1], sys.argv[2:]
    conns = []
    for t in targets:
        host, port = t.rsplit(":", 1)
        for _ in range(5):
            s = socket.create_connection((host, int(port)), timeout=20)
            conns.append((t, s, request(s)))
    print("ready", flush=True)
    deadline = time.time() + 60
    while not os.path.exists(go) and time.time() < deadline:
        time.sleep(0.05)
    results = []
    for t, s, first in conns:
        try:
            second = request(s)
        except Exception as e:  # the answer the test reports
            second = "error: %s" % e
        results.append({"target": t, "first": first, "second": second})
    print(json.dumps(results), flush=True)


main()
