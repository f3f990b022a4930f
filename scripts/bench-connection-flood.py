#!/usr/bin/env python3
"""Connection flood: what idle and stalled connections cost a Sluice broker and its clients.

Starts a broker (fresh data dir, free port), runs `sluice bench e2e` (producers and consumers at a
fixed rate) once alone, then again while the script holds --idle connections that send nothing
and --stalled connections that each announce a 100 MiB request (socket.request.max.bytes), send
its header and --stalled-body bytes of it, and stall. Reports the broker's resident memory
(VmRSS, sampled every 0.5 s) and the e2e client's latency percentiles for both runs, then waits
out sluice.request.receive.timeout.ms and counts the stalled connections the broker closed.

Usage: scripts/bench-connection-flood.py [--sluice PATH] [--cores N] [--idle N] [--stalled N]
       [--rate N] [--duration SECS] [--set KEY=VALUE ...] [--json]
The e2e clients and the flood run on this machine, beside the broker.
"""

import argparse
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ANNOUNCED_BYTES = 100 * 1024 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """The largest VmRSS of `pid` seen while it runs (every 0.5 s)."""

    def __init__(self, pid):
        self.pid, self.peak_kib, self.stop = pid, rss_kib(pid), threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.wait(0.5):
            self.peak_kib = max(self.peak_kib, rss_kib(self.pid))

    def finish(self):
        self.stop.set()
        self.thread.join()
        return max(self.peak_kib, rss_kib(self.pid))


def start_broker(sluice, cores, port, data_dir, settings):
    log_path = os.path.join(data_dir, "broker.log")
    cmd = [sluice, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir,
           "--cores", str(cores), "--set", "sluice.admin.listen=none"]
    for setting in settings:
        cmd += ["--set", setting]
    log = open(log_path, "ab")
    broker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 30
    while time.time() < deadline:
        with open(log_path, errors="replace") as f:
            if f.read().count("listening on") >= cores:
                return broker, log_path
        if broker.poll() is not None:
            sys.exit(f"broker exited; see {log_path}")
        time.sleep(0.1)
    broker.kill()
    sys.exit(f"broker did not start; see {log_path}")


def run_e2e(sluice, bootstrap, args):
    cmd = [sluice, "bench", "e2e", "--bootstrap", bootstrap, "--rate", str(args.rate),
           "--duration", str(args.duration), "--warmup", "2", "--partitions", "4",
           "--producers", "2", "--consumers", "2", "--json"]
    limit = args.duration + 60
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return {"failed": f"no result within {limit} s: the broker stopped answering"}
    if out.returncode != 0 or not out.stdout.strip():
        return {"failed": f"exit {out.returncode}: {out.stderr.strip()[-500:]}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setblocking(False)
    return s


def stalled_head(body_bytes):
    """A produce frame's size (100 MiB), its request header, and `body_bytes` of its body."""
    client_id = b"flood"
    header = struct.pack(">hhih", 0, 9, 1, len(client_id)) + client_id
    return struct.pack(">i", ANNOUNCED_BYTES) + header + b"\0" * body_bytes


def is_closed(s):
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def measure(label, broker, sluice, bootstrap, args):
    sampler = RssSampler(broker.pid)
    result = run_e2e(sluice, bootstrap, args)
    peak = sampler.finish()
    if "failed" in result:
        print(f"{label}: {result['failed']}; broker RSS peak {peak / 1024:.0f} MiB",
              file=sys.stderr)
        return {"e2e": result, "rss_peak_mib": round(peak / 1024, 1)}
    print(f"{label}: p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, "
          f"p99.9 {result['p999_ms']:.2f} ms, max {result['max_ms']:.2f} ms, "
          f"{result['msgs_per_sec']:.0f} msgs/s, errors {result['errors']}; "
          f"broker RSS peak {peak / 1024:.0f} MiB", file=sys.stderr)
    return {"e2e": result, "rss_peak_mib": round(peak / 1024, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    default_sluice = os.path.join(here, "..", "target", "release", "sluice")
    parser.add_argument("--sluice", default=default_sluice)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--stalled", type=int, default=1_000)
    parser.add_argument("--stalled-body", type=int, default=1024)
    parser.add_argument("--rate", type=int, default=2_000)
    parser.add_argument("--duration", type=int, default=15)
    parser.add_argument("--receive-timeout-ms", type=int, default=30_000)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.idle + args.stalled + 500:
        sys.exit(f"the open-file hard limit ({hard}) is too low for the flood")

    data_dir = tempfile.mkdtemp(prefix="sluice-flood-")
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    settings = [f"sluice.request.receive.timeout.ms={args.receive_timeout_ms}"] + args.set
    broker, log_path = start_broker(args.sluice, args.cores, port, data_dir, settings)
    report = {"idle": args.idle, "stalled": args.stalled, "cores": args.cores,
              "rate": args.rate, "duration_s": args.duration}
    try:
        time.sleep(2)
        report["rss_idle_mib"] = round(rss_kib(broker.pid) / 1024, 1)
        report["alone"] = measure("alone", broker, args.sluice, bootstrap, args)

        opened = time.time()
        idle = [connect(port) for _ in range(args.idle)]
        stalled = [connect(port) for _ in range(args.stalled)]
        head = stalled_head(args.stalled_body)
        for s in stalled:
            s.setblocking(True)
            s.sendall(head)
            s.setblocking(False)
        print(f"flood: {len(idle)} idle and {len(stalled)} stalled connections open after "
              f"{time.time() - opened:.1f} s", file=sys.stderr)
        time.sleep(2)
        report["rss_flood_mib"] = round(rss_kib(broker.pid) / 1024, 1)
        report["flood"] = measure("with the flood", broker, args.sluice, bootstrap, args)

        wait_until = opened + args.receive_timeout_ms / 1000 + 5
        time.sleep(max(0.0, wait_until - time.time()))
        report["stalled_closed"] = sum(is_closed(s) for s in stalled)
        report["idle_closed"] = sum(is_closed(s) for s in idle)
        print(f"after sluice.request.receive.timeout.ms: {report['stalled_closed']} of "
              f"{len(stalled)} stalled and {report['idle_closed']} of {len(idle)} idle "
              f"connections closed", file=sys.stderr)
        for s in idle + stalled:
            s.close()
    finally:
        broker.terminate()
        broker.wait(timeout=60)
        shutil.rmtree(data_dir, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
    else:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
