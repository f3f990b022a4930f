#!/usr/bin/env python3
"""The metadata quorum's timing, idle and under P1-style produce load, on a cluster of three
brokers on this machine (every broker a voter, one shard each, Kafka's heartbeat and session
defaults):

  - metadata commit latency: CreateTopics of a one-partition topic through a broker that does not
    lead the quorum (decide, forward to the leader, commit on a majority, apply, answer), timed
    end to end from a client (`sluice topic create`, whose own start, ~2 ms, is included);
  - election: kill -9 of the quorum's leader under load, until a survivor logs a new leader, and
    until a CreateTopics through a survivor succeeds again;
  - fencing: until the new leader fences the dead broker (about `broker.session.timeout.ms`
    after the new leader took over, by design: it gives every broker one session to be heard).

The load is `sluice bench produce` with P1's shape (1 KiB records to 16 partitions, acks=all, as
fast as it goes) from one client. Its topic lives on the two brokers that do not lead the quorum,
and the client bootstraps from one of them, so killing the leader measures the quorum, not a
load that lost a third of its partitions (they have one replica). Run it on a quiet machine:

  scripts/quorum-timing.py [--creates N] [--load-seconds S] [--sluice PATH]
                            (defaults: 50 creates, 60 s of load, target/release/sluice)
"""

import argparse
import datetime
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Cluster:
    def __init__(self, sluice):
        self.sluice = sluice
        self.dir = tempfile.mkdtemp(prefix="sluice-quorum-timing-")
        ports = free_ports(6)
        self.clients = ports[0::2]
        controllers = ports[1::2]
        voters = ",".join(f"{i + 1}@127.0.0.1:{p}" for i, p in enumerate(controllers))
        self.procs = {}
        for i in range(3):
            self.start(i + 1, self.clients[i], controllers[i], voters)
        self.wait_for(lambda: len(set(re.findall(r"unfenced broker (\d)", self.logs()))) == 3, "three live brokers")

    def start(self, node, client, controller, voters):
        log = open(self.log_path(node), "a")
        self.procs[node] = subprocess.Popen(
            [self.sluice, "serve", "--data-dir", os.path.join(self.dir, f"data-{node}"), "--cores", "1",
             "--set", f"node.id={node}",
             "--set", f"listeners=PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}",
             "--set", "controller.listener.names=CONTROLLER",
             "--set", f"controller.quorum.voters={voters}",
             "--set", "cpuset=unpinned"],
            stdout=subprocess.DEVNULL, stderr=log)

    def log_path(self, node):
        return os.path.join(self.dir, f"broker-{node}.log")

    def log(self, node):
        with open(self.log_path(node)) as f:
            return f.read()

    def logs(self):
        return "".join(self.log(n) for n in self.procs)

    def bootstrap(self, node):
        return f"127.0.0.1:{self.clients[node - 1]}"

    def wait_for(self, condition, what, timeout=120):
        deadline = time.time() + timeout
        while not condition():
            if time.time() > deadline:
                sys.exit(f"timed out waiting for {what}; logs in {self.dir}")
            time.sleep(0.01)

    def leader(self):
        """The quorum leader the latest leader line of any broker names."""
        lines = []
        for node in self.procs:
            for line in self.log(node).splitlines():
                m = re.search(r"^(\S+).*metadata quorum leader is now (\d+)", line)
                if m:
                    lines.append((m.group(1), int(m.group(2))))
        return max(lines)[1]

    def stop(self):
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def create_ms(cluster, node, name):
    started = time.perf_counter()
    done = subprocess.run(
        [cluster.sluice, "topic", "create", name, "--partitions", "1", "--bootstrap", cluster.bootstrap(node)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = (time.perf_counter() - started) * 1000
    return elapsed if done.returncode == 0 else None


def latencies(cluster, node, prefix, count):
    out = []
    for i in range(count):
        ms = create_ms(cluster, node, f"{prefix}-{i}")
        if ms is None:
            sys.exit(f"creating {prefix}-{i} through broker {node} failed; logs in {cluster.dir}")
        out.append(ms)
    return out


def summary(values):
    values = sorted(values)
    p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
    return f"p50 {statistics.median(values):.1f} ms, p99 {p99:.1f} ms, max {values[-1]:.1f} ms ({len(values)} creates)"


def log_time(line):
    stamp = line.split()[0].rstrip("Z")[:26]
    return datetime.datetime.fromisoformat(stamp).replace(tzinfo=datetime.timezone.utc).timestamp()


def first_line_after(cluster, nodes, pattern, after):
    for node in nodes:
        for line in cluster.log(node).splitlines():
            if re.search(pattern, line) and log_time(line) > after:
                return log_time(line)
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--creates", type=int, default=50)
    parser.add_argument("--load-seconds", type=int, default=60)
    parser.add_argument("--sluice", default="target/release/sluice")
    args = parser.parse_args()
    sluice = os.path.realpath(args.sluice)
    cluster = Cluster(sluice)
    try:
        leader = cluster.leader()
        follower = next(n for n in (1, 2, 3) if n != leader)
        idle = latencies(cluster, follower, "idle", args.creates)

        others = [n for n in (1, 2, 3) if n != leader]
        assignment = ",".join(str(others[p % 2]) for p in range(16))
        created = subprocess.run(
            [sluice, "topic", "create", "p1", "--replica-assignment", assignment, "--bootstrap", cluster.bootstrap(follower)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if created.returncode != 0:
            sys.exit(f"creating the load's topic failed: {created.stderr}")
        load = subprocess.Popen(
            [sluice, "bench", "produce", "--bootstrap", cluster.bootstrap(follower), "--topic", "p1", "--size", "1024",
             "--acks", "all", "--duration", str(args.load_seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(8)
        loaded = latencies(cluster, follower, "loaded", args.creates)

        if cluster.leader() != leader:
            sys.exit(f"the quorum's leader changed under load before the kill; logs in {cluster.dir}")
        survivors = others
        killed_at = time.time()
        cluster.procs[leader].kill()
        cluster.procs[leader].wait()
        cluster.wait_for(lambda: first_line_after(cluster, survivors, r"metadata quorum leader is now", killed_at), "a new leader")
        elected = first_line_after(cluster, survivors, r"metadata quorum leader is now", killed_at) - killed_at
        i = 0
        while create_ms(cluster, survivors[0], f"after-{i}") is None:
            i += 1
            time.sleep(0.05)
        serving = time.time() - killed_at
        cluster.wait_for(lambda: first_line_after(cluster, survivors, rf"fenced broker {leader} ", killed_at), "the fence")
        fenced = first_line_after(cluster, survivors, rf"fenced broker {leader} ", killed_at) - killed_at
        bench = load.communicate(timeout=args.load_seconds + 60)[0]
        throughput = next((l.strip() for l in bench.splitlines() if "records/s" in l or "msgs/s" in l), "see the bench output")

        print(f"| measurement (3 brokers on this host, {datetime.date.today()}) | result |")
        print("|---|---|")
        print(f"| CreateTopics through a follower, idle | {summary(idle)} |")
        print(f"| CreateTopics through a follower, under P1 load | {summary(loaded)} |")
        print(f"| kill -9 of the quorum leader under load: a new leader elected | {elected * 1000:.0f} ms |")
        print(f"| ... CreateTopics through a survivor succeeds again | {serving * 1000:.0f} ms |")
        print(f"| ... the dead broker fenced | {fenced * 1000:.0f} ms |")
        print(f"| P1 load meanwhile | {throughput} |")
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
