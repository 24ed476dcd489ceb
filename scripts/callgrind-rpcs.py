#!/usr/bin/env python3
"""Instructions per request of Health/Check, a cached GetImageSpec hit and a GetImageSpec of an
unknown id (answered from the negative cache), counted by callgrind in a `spec-provider serve`
on SQLite: a measure that does not depend on what else the machine does, for comparing two
builds of the server (see "The unknown-id path" in docs/benchmarks.md).

    cargo build --release
    pip install h2            # the driver's HTTP/2 client
    scripts/callgrind-rpcs.py target/release/spec-provider [--ids 1000] [--requests 10000]

It starts the server under `valgrind --tool=callgrind` on 127.0.0.1:18080 (metrics on :19500)
with a scratch database and `cache.negative_ttl = 60s` (callgrind slows the server about 50x,
and the unknown ids must stay in the negative cache), stores `examples/spec.json` as `ws-hit`,
warms each kind up, then zeroes callgrind's counters, drives N requests of one kind over one
HTTP/2 connection with 32 in flight, and dumps the counters, kind by kind. Unknown ids cycle
through `--ids` distinct ids (`unknown-0`, `unknown-1`, ...), as `make bench` does with 1000
and with one (`--ids 1`).
"""

import argparse
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time

import h2.config
import h2.connection
import h2.events

ADDR = ("127.0.0.1", 18080)
KINDS = {
    "check": "/grpc.health.v1.Health/Check",
    "hit": "/registryfacade.SpecProvider/GetImageSpec",
    "unknown": "/registryfacade.SpecProvider/GetImageSpec",
}


def framed(kind, n, ids):
    """The gRPC request body of the n-th request of `kind`."""
    if kind == "check":
        return bytes(5)
    ident = (f"unknown-{n % ids}" if kind == "unknown" else "ws-hit").encode()
    message = bytes([0x0A, len(ident)]) + ident
    return b"\0" + len(message).to_bytes(4, "big") + message


def drive(kind, requests, ids, in_flight=32):
    """Sends `requests` calls of `kind`; returns how many answers had each grpc-status."""
    sock = socket.create_connection(ADDR)
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(2**30)
    sock.sendall(conn.data_to_send())
    sent = done = waiting = 0
    statuses = {}
    while done < requests:
        while waiting < in_flight and sent < requests:
            stream = conn.get_next_available_stream_id()
            conn.send_headers(
                stream,
                [
                    (":method", "POST"),
                    (":scheme", "http"),
                    (":authority", f"{ADDR[0]}:{ADDR[1]}"),
                    (":path", KINDS[kind]),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                ],
            )
            conn.send_data(stream, framed(kind, sent, ids), end_stream=True)
            sent += 1
            waiting += 1
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        if not data:
            sys.exit("the server closed the connection")
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.StreamEnded):
                done += 1
                waiting -= 1
            elif isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                for name, value in event.headers:
                    if name == b"grpc-status":
                        statuses[value.decode()] = statuses.get(value.decode(), 0) + 1
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        sock.sendall(conn.data_to_send())
    sock.close()
    return statuses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("binary", type=pathlib.Path)
    parser.add_argument("--ids", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=10000)
    args = parser.parse_args()
    root = pathlib.Path(__file__).resolve().parent.parent
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="callgrind-rpcs-"))
    env = dict(
        os.environ,
        SPEC_PROVIDER__SERVER__LISTEN=f"{ADDR[0]}:{ADDR[1]}",
        SPEC_PROVIDER__SERVER__METRICS_LISTEN=f"{ADDR[0]}:19500",
        SPEC_PROVIDER__DATABASE__URL=f"sqlite://{scratch / 'specs.db'}",
        SPEC_PROVIDER__CACHE__NEGATIVE_TTL="60s",
    )
    out = scratch / "callgrind.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", args.binary, "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        addr = f"http://{ADDR[0]}:{ADDR[1]}"
        deadline = time.monotonic() + 120
        while subprocess.run([args.binary, "health", "--addr", addr], capture_output=True).returncode:
            if time.monotonic() > deadline or server.poll() is not None:
                sys.exit("the server did not start serving within 120 s")
            time.sleep(1)
        spec = root / "examples" / "spec.json"
        subprocess.run(
            [args.binary, "put", "ws-hit", "--file", spec, "--addr", addr],
            check=True,
            capture_output=True,
        )
        for kind in KINDS:
            drive(kind, 3000, args.ids)
        for kind in KINDS:
            subprocess.run(["callgrind_control", "-z", str(server.pid)], check=True, capture_output=True)
            statuses = drive(kind, args.requests, args.ids)
            subprocess.run(["callgrind_control", "-d", kind, str(server.pid)], check=True, capture_output=True)
            dump = sorted(scratch.glob("callgrind.out.*"), key=os.path.getmtime)[-1]
            total = int(re.search(r"^summary: (\d+)", dump.read_text(), re.M).group(1))
            print(f"{kind:8} {total // args.requests:>8} instructions/request  grpc-status {statuses}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
