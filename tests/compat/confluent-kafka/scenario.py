"""The client compatibility scenario (scripts/compat) with confluent-kafka (librdkafka inside).

Usage: python scenario.py HOST:PORT (or BOOTSTRAP=HOST:PORT)
Prints "STEP n name: ok" per step passed; on the first failure prints "FAIL step n name: why"
and exits 1.
"""

import os
import sys
import threading
import time

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    ConsumerGroupTopicPartitions,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "compat-confluent-kafka"
TXN_TOPIC = "compat-confluent-kafka-txn"
GROUP = "compat-confluent-kafka-group"
PARTITIONS = 3
FIRST_BATCH = 100
SECOND_BATCH = 10
# Every wait is bounded: a hung client fails the step instead of hanging CI.
WAIT_S = 60
# After the expected records arrived, how long to watch for unexpected extra ones.
QUIET_S = 1.5


class StepFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise StepFailed(message)


def record(i):
    return {
        "key": f"key-{i}".encode(),
        "value": f"value-{i}".encode(),
        "headers": [("index", str(i).encode()), ("client", b"confluent-kafka")],
    }


def common(bootstrap):
    # 127.0.0.1, never localhost: librdkafka may resolve localhost to ::1.
    return {"bootstrap.servers": bootstrap, "log_level": 3}


def produce(bootstrap, start, end):
    producer = Producer({**common(bootstrap), "acks": "all", "enable.idempotence": True})
    acked, failed = [], []

    def on_delivery(err, msg):
        (failed if err else acked).append((err, msg.key()))

    for i in range(start, end):
        producer.produce(TOPIC, on_delivery=on_delivery, **record(i))
    left = producer.flush(WAIT_S)
    check(left == 0, f"{left} records still unacked after {WAIT_S} s")
    check(not failed, f"records not acked: {failed[:3]}")
    check(len(acked) == end - start, f"{len(acked)} acks, want {end - start}")


class Seen:
    """The records a group consumed, shared by its members; the first failed check is kept."""

    def __init__(self):
        self.lock = threading.Lock()
        self.indexes = set()
        self.error = None

    def accept(self, msg):
        with self.lock:
            try:
                check(msg.error() is None, f"consume error {msg.error()}")
                key = msg.key().decode()
                index = int(key.removeprefix("key-"))
                want = record(index)
                check(msg.value() == want["value"], f"{key}: value {msg.value()!r}")
                check(msg.headers() == want["headers"], f"{key}: headers {msg.headers()}")
                check(index not in self.indexes, f"{key} delivered twice")
                self.indexes.add(index)
            except (StepFailed, ValueError) as e:
                self.error = self.error or e

    def snapshot(self):
        with self.lock:
            return set(self.indexes), self.error

    def wait_for(self, n):
        """Waits for n records, then watches a quiet period for records that should not come."""
        deadline = time.monotonic() + WAIT_S
        while True:
            got, error = self.snapshot()
            if error:
                raise error
            if len(got) >= n:
                break
            check(time.monotonic() < deadline, f"got {len(got)} records after {WAIT_S} s, want {n}")
            time.sleep(0.05)
        time.sleep(QUIET_S)
        got, error = self.snapshot()
        if error:
            raise error
        check(len(got) == n, f"got {len(got)} records, want {n}")
        return got


class Member(threading.Thread):
    """One group member. It commits each record synchronously before polling again; rebalance
    callbacks run inside poll, so a revoked partition's records are already committed."""

    def __init__(self, bootstrap, seen):
        super().__init__(daemon=True)
        self.seen = seen
        self.stop = threading.Event()
        self.assigned = []
        self.count = 0
        self.error = None
        self.consumer = Consumer(
            {
                **common(bootstrap),
                "group.id": GROUP,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10000,
                "fetch.wait.max.ms": 500,
            }
        )
        self.consumer.subscribe([TOPIC], on_assign=self.on_assign)
        self.start()

    def on_assign(self, consumer, partitions):
        self.assigned.append(len(partitions))

    def run(self):
        try:
            while not self.stop.is_set():
                msg = self.consumer.poll(0.2)
                if msg is None:
                    continue
                self.seen.accept(msg)
                self.count += 1
                self.consumer.commit(message=msg, asynchronous=False)
        except Exception as e:  # reported by close()
            self.error = e
        finally:
            self.consumer.close()

    def close(self):
        self.stop.set()
        self.join(WAIT_S)
        check(not self.is_alive(), "consumer did not close")
        if self.error:
            raise self.error
        return self.assigned[-1] if self.assigned else 0


def step_create_topic(bootstrap, admin):
    futures = admin.create_topics(
        [NewTopic(TOPIC, num_partitions=PARTITIONS, replication_factor=1), NewTopic(TXN_TOPIC, 1, 1)],
        operation_timeout=10,
    )
    for future in futures.values():
        future.result(WAIT_S)
    partitions = len(admin.list_topics(timeout=10).topics[TOPIC].partitions)
    check(partitions == PARTITIONS, f"metadata shows {partitions} partitions, want {PARTITIONS}")


def both_hold(members):
    """Waits until every member owns partitions, for at most WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not all(m.assigned and m.assigned[-1] > 0 for m in members):
        check(time.monotonic() < deadline, f"members still hold {[m.assigned for m in members]}")
        time.sleep(0.05)


def step_group_of_two(bootstrap, admin):
    seen = Seen()
    members = [Member(bootstrap, seen), Member(bootstrap, seen)]
    try:
        seen.wait_for(FIRST_BATCH)
        # The first member may read the whole batch before the second has joined: the group
        # settles (both own partitions) before they leave.
        both_hold(members)
    finally:
        last = [m.close() for m in members]
    check(all(n > 0 for n in last), f"a member ended without partitions: {last}")
    print(f"  group of two: members got {members[0].count} and {members[1].count} records")


def step_resume(bootstrap, admin):
    produce(bootstrap, FIRST_BATCH, FIRST_BATCH + SECOND_BATCH)
    seen = Seen()
    member = Member(bootstrap, seen)
    try:
        got = seen.wait_for(SECOND_BATCH)
        old = sorted(i for i in got if i < FIRST_BATCH)
        check(not old, f"resumed consumer got already-committed records {old}")
        passed(4, "resume from committed offsets")
        current[:] = [5, "list and describe group"]
        describe_group(admin)
        passed(5, "list and describe group")
    finally:
        member.close()


def describe_group(admin):
    """Runs while the resumed member is still in the group: one Stable member."""
    listed = admin.list_consumer_groups().result(WAIT_S)
    check(not listed.errors, f"list_consumer_groups errors {listed.errors}")
    ids = [g.group_id for g in listed.valid]
    check(GROUP in ids, f"list_consumer_groups lacks {GROUP}: {ids}")
    described = admin.describe_consumer_groups([GROUP])[GROUP].result(WAIT_S)
    check(described.state == ConsumerGroupState.STABLE, f"group state {described.state}")
    check(len(described.members) == 1, f"group has {len(described.members)} members, want 1")
    request = [ConsumerGroupTopicPartitions(GROUP)]
    offsets = admin.list_consumer_group_offsets(request)[GROUP].result(WAIT_S)
    total = sum(tp.offset for tp in offsets.topic_partitions if tp.topic == TOPIC)
    check(total == FIRST_BATCH + SECOND_BATCH, f"committed offsets add up to {total}")


def step_transactions(bootstrap, admin):
    producer = Producer({**common(bootstrap), "transactional.id": "compat-confluent-kafka-txn"})
    producer.init_transactions(WAIT_S)
    for kind, n, commit in [("committed", 5, True), ("aborted", 5, False), ("sentinel", 1, True)]:
        producer.begin_transaction()
        for i in range(n):
            producer.produce(TXN_TOPIC, key=f"{kind}-{i}".encode(), value=kind.encode())
        if commit:
            producer.commit_transaction(WAIT_S)
        else:
            producer.flush(WAIT_S)
            producer.abort_transaction(WAIT_S)
    consumer = Consumer(
        {
            **common(bootstrap),
            "group.id": "compat-confluent-kafka-txn-reader",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(TXN_TOPIC, 0, OFFSET_BEGINNING)])
    values = []
    deadline = time.monotonic() + WAIT_S
    try:
        while "sentinel" not in values:
            check(time.monotonic() < deadline, f"no sentinel after {WAIT_S} s; saw {values}")
            msg = consumer.poll(0.2)
            if msg is not None:
                check(msg.error() is None, f"consume error {msg.error()}")
                values.append(msg.value().decode())
    finally:
        consumer.close()
    check(values == ["committed"] * 5 + ["sentinel"], f"read_committed saw {values}")


def step_delete_topics(bootstrap, admin):
    for future in admin.delete_topics([TOPIC, TXN_TOPIC], operation_timeout=10).values():
        future.result(WAIT_S)
    # The answer means the deletion is committed; a broker that has not applied it yet (in a
    # cluster, as in Apache Kafka's) may still list the topics for a moment.
    deadline = time.monotonic() + WAIT_S
    while left := {TOPIC, TXN_TOPIC} & set(admin.list_topics(timeout=10).topics):
        check(time.monotonic() < deadline, f"topics still listed {WAIT_S} s after delete: {left}")
        time.sleep(0.05)


current = [0, "connect"]
step_start = [time.monotonic()]


def passed(n, name):
    print(f"STEP {n} {name}: ok ({(time.monotonic() - step_start[0]) * 1000:.0f} ms)", flush=True)
    step_start[0] = time.monotonic()


def main():
    bootstrap = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("BOOTSTRAP")
    if not bootstrap:
        sys.exit("usage: scenario.py HOST:PORT")
    admin = AdminClient(common(bootstrap))
    steps = [
        (1, "create topic", step_create_topic),
        (2, "produce keyed records with headers", lambda b, a: produce(b, 0, FIRST_BATCH)),
        (3, "consumer group of two", step_group_of_two),
        # Step 4 reports 4 and 5 itself (5 runs while its member is still in the group).
        (4, "resume from committed offsets", step_resume),
        (6, "transactions", step_transactions),
        (7, "delete topic", step_delete_topics),
    ]
    try:
        for n, name, run in steps:
            current[:] = [n, name]
            run(bootstrap, admin)
            if n != 4:
                passed(n, name)
    except Exception as e:
        print(f"FAIL step {current[0]} {current[1]}: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
