"""Python `get_counter` calls per second on one thread, beside a dict lookup of a
prebuilt answer and an HTTP call to relcount-server, in the same run; then the same
reads from 2 threads.

    python bindings/python/bench.py --server target/release/relcount-server [--quick]

The engine and the server hold the same data: `--recipients` recipients with
`--fan-in` initiators each, in the seed's relation type. Every figure is the median
of 5 rounds (3 with --quick); the machine is shared, so read the ratios.
"""

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

import relcount

REL = 3
PROPS = {
    "Donate": {"type": "int", "top": 10},
    "Like": {"type": "int", "sum": True},
    "Subscriber": {"type": "bool"},
}


def rows(recipients, fan_in, rng):
    for a in range(recipients):
        for j in range(fan_in):
            b = rng.randrange(recipients * 4)
            yield (f"{a:024x}", f"{b:024x}", {"Donate": rng.randrange(1, 100), "Like": rng.randrange(5),
                                              "Subscriber": rng.random() < 0.5})


def rate(fn, ids, seconds):
    """Calls per second of fn(id) over ids, cycling, for about `seconds`."""
    n, calls = len(ids), 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(0, n, 1):
            fn(ids[i])
        calls += n
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def threaded_rate(fn, ids, seconds, threads):
    """Total calls per second of `threads` threads each calling fn over ids."""
    results = [0.0] * threads
    barrier = threading.Barrier(threads)

    def work(k):
        barrier.wait()
        results[k] = rate(fn, ids[k::threads] or ids, seconds)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(results)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="target/release/relcount-server")
    ap.add_argument("--recipients", type=int, default=10_000)
    ap.add_argument("--fan-in", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="a short run, to check the bench works")
    args = ap.parse_args()
    if args.quick:
        args.recipients = min(args.recipients, 1_000)
    seconds, rounds = (0.2, 3) if args.quick else (1.0, 5)
    if not os.path.exists(args.server):
        sys.exit(f"{args.server} is missing: cargo build --release -p relcount-server")

    data = list(rows(args.recipients, args.fan_in, random.Random(1)))
    engine = relcount.Engine()
    engine.define(REL, 1, 2, PROPS)
    engine.import_relations(REL, data)
    ids = [f"{a:024x}" for a in range(args.recipients)]
    random.Random(2).shuffle(ids)
    prebuilt = {i: engine.get_counter(REL, i) for i in ids}

    port, token = free_port(), "bench-token"
    # The kept-alive connection idles while the other cases run: no idle timeout.
    server = subprocess.Popen([args.server, "--empty", "--addr", f"127.0.0.1:{port}", "--token", token,
                               "--header-timeout", "3600"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        conn = None
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port)
                conn.connect()
                break
            except OSError:
                time.sleep(0.05)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}

        def post(call, body):
            conn.request("POST", f"/api/v1.1/{call}", json.dumps(body, separators=(",", ":")), headers)
            answer = json.loads(conn.getresponse().read())
            if answer["error"] != 0:
                raise RuntimeError(f"{call}: {answer}")
            return answer

        post("relations/define", {"rel_id": REL, "db_a": 1, "db_b": 2, "props": PROPS})
        for k in range(0, len(data), 2_000):
            post("relations/import", {"rel_id": REL, "relations": [
                {"profile_a": {"profile_id": a}, "profile_b": {"profile_id": b}, "weights": w}
                for a, b, w in data[k:k + 2_000]]})
        one = ids[0]
        assert post("relations/get_counter", {"rel_id": REL, "matching": "profile_id", "profile_id": one})["data"] \
            == prebuilt[one], "the server and the module answer the same"

        def http_get(i):
            return post("relations/get_counter", {"rel_id": REL, "matching": "profile_id", "profile_id": i})

        cases = [
            ("dict lookup of a prebuilt answer", prebuilt.__getitem__),
            ("relcount.Engine.get_counter", lambda i: engine.get_counter(REL, i)),
            ("HTTP get_counter to relcount-server (keep-alive, json)", http_get),
        ]
        results = {name: statistics.median(rate(fn, ids, seconds) for _ in range(rounds)) for name, fn in cases}
        two = statistics.median(threaded_rate(lambda i: engine.get_counter(REL, i), ids, seconds, 2)
                                for _ in range(rounds))
    finally:
        server.terminate()
        server.wait()

    base = results["relcount.Engine.get_counter"]
    print(f"Python {sys.version.split()[0]}, {args.recipients} recipients x {args.fan_in} relations, "
          f"median of {rounds} rounds of {seconds} s\n")
    print("| one thread | calls/s | vs get_counter |")
    print("|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r:,.0f} | {r / base:.2f}x |")
    print(f"| relcount.Engine.get_counter, 2 threads | {two:,.0f} | {two / base:.2f}x |")


if __name__ == "__main__":
    main()
