#!/usr/bin/env python3
"""A minimal PAM-side app on a meshward node (Python 3, standard library only).

It appends events to the shared event log, then follows the node's watch stream
(GET /v1/watch, Server-Sent Events) and prints each host key fingerprint the cluster's
leader approves. When the stream ends (an `overflow` because it read too slowly, the daemon
restarting) it reconnects with `Last-Event-ID` set to the last cursor it saw, so it gets
every change after it exactly once; the cursor is kept in --state so a restart of the app
resumes too. Cursors belong to the node: against another node, start without a state file.

Talks to the node's local socket (DATA/meshward.sock; the caller is root), or over HTTPS
with a client certificate (--url https://HOST:PORT --cert --key --ca; the user needs the
read grant on `default` and on the cluster, e.g. guest:*, plus write for --append).
"""

import argparse
import http.client
import json
import os
import socket
import ssl
import sys
import time


class UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket."""

    def __init__(self, path, timeout=60):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def connect(args):
    if args.url:
        host_port = args.url.removeprefix("https://").rstrip("/")
        host, _, port = host_port.rpartition(":")
        context = ssl.create_default_context(cafile=args.ca)
        context.load_cert_chain(args.cert, args.key)
        return http.client.HTTPSConnection(host, int(port), context=context, timeout=60)
    return UnixConnection(os.path.join(args.data, "meshward.sock"))


def append(args, count):
    events = [
        {"kind": "login", "user": args.user, "target": f"{args.target}-{i}"}
        for i in range(count)
    ]
    conn = connect(args)
    body = json.dumps({"events": events})
    conn.request("POST", "/v1/events", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    text = answer.read().decode()
    conn.close()
    if answer.status != 200:
        sys.exit(f"append failed ({answer.status}): {text}")
    print(f"appended {count} events", flush=True)


def events(response):
    """Yields (event, id, data) for each SSE event of the response."""
    event, ident, data = "message", None, []
    while True:
        line = response.readline()
        if not line:
            return
        line = line.decode().rstrip("\r\n")
        if line == "":
            if data:
                yield event, ident, json.loads("\n".join(data))
            event, ident, data = "message", None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("id:"):
            ident = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())


def load_cursor(path):
    try:
        with open(path) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def save_cursor(path, cursor):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(cursor)
    os.replace(tmp, path)


def follow(args):
    cursor = load_cursor(args.state) if args.state else None
    if cursor is None:
        cursor = "0"  # every mastered record this node keeps: approvals from the start
    printed = 0
    while True:
        conn = connect(args)
        conn.request("GET", "/v1/watch?tables=mastered", headers={"Last-Event-ID": cursor})
        response = conn.getresponse()
        if response.status != 200:
            problem = response.read().decode()
            if response.status == 410:
                sys.exit(f"the node no longer keeps changes after {cursor}: {problem}")
            sys.exit(f"watch refused ({response.status}): {problem}")
        for event, ident, data in events(response):
            if event == "overflow":
                cursor = str(data["resume_from"])
                break
            if event in ("compacted", "closed"):
                sys.exit(f"watch {event}: {data}")
            if event != "change":
                continue
            cursor = ident
            row = data["row"]
            approval = row.get("approval")
            if row.get("kind") == "fingerprint-approval" and approval and approval["approved"]:
                print(
                    f"approved {approval['host']} {approval['key_type']} {approval['fingerprint']}",
                    flush=True,
                )
                printed += 1
            if args.state:
                save_cursor(args.state, cursor)
            if args.max and printed >= args.max:
                return
        conn.close()
        time.sleep(0.5)  # the stream ended: reconnect from the last cursor


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="./data", help="the node's data directory (local socket)")
    p.add_argument("--url", help="https://HOST:PORT of the node's admin API instead")
    p.add_argument("--cert", help="client certificate (PEM), with --url")
    p.add_argument("--key", help="its key (PEM), with --url")
    p.add_argument("--ca", help="the cluster CA (PEM), with --url")
    p.add_argument("--append", type=int, default=0, help="append this many events first")
    p.add_argument("--user", default="pam-app", help="the events' user")
    p.add_argument("--target", default="host", help="the events' target prefix")
    p.add_argument("--state", help="file keeping the last cursor, to resume after a restart")
    p.add_argument("--max", type=int, default=0, help="exit after this many approvals")
    args = p.parse_args()
    if args.append:
        append(args, args.append)
    follow(args)


if __name__ == "__main__":
    main()
