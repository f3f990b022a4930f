"""kafka-python 3 (idempotent by default) against the real sluice binary, with 1 and 2 shards:
admin topics and partitions, acks 0/1/all, the idempotent producer, assign/seek/from-beginning,
offsets by timestamp, kill -9 in the middle of an idempotent stream, and consumer groups (a group
of two consumers, committed offsets, the admin client's group operations)."""

import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import CommitFailedError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

SLUICE = os.environ.get("SLUICE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "sluice"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, cores, settings=()):
        self.cores = cores
        self.settings = list(settings)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="sluice-py-")
        self.proc = None
        self.launches = 0
        self.start()

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def start(self):
        log = open(os.path.join(self.dir, "broker.log"), "a")
        self.proc = subprocess.Popen(
            [SLUICE, "serve", "--listen", self.bootstrap, "--data-dir", os.path.join(self.dir, "data"), "--cores", str(self.cores)]
            + [arg for setting in self.settings for arg in ("--set", setting)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.launches += 1
        deadline = time.time() + 30
        # Ready when every shard of this launch listens.
        while self.log().count("listening on") < self.cores * self.launches:
            assert self.proc.poll() is None, "broker exited:\n" + self.log()
            assert time.time() < deadline, "broker did not start:\n" + self.log()
            time.sleep(0.02)

    def log(self):
        with open(os.path.join(self.dir, "broker.log")) as f:
            return f.read()

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=30) == 0


@pytest.fixture(params=[1, 2], ids=["1-shard", "2-shards"])
def broker(request):
    b = Broker(request.param)
    yield b
    b.stop()


def consume(broker, topic, partitions, expected, start=None):
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    if start is None:
        consumer.seek_to_beginning()
    else:
        for tp in tps:
            consumer.seek(tp, start)
    out = []
    deadline = time.time() + 30
    while len(out) < expected and time.time() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            out.extend(records)
    out.extend(r for rs in consumer.poll(timeout_ms=300).values() for r in rs)
    consumer.close()
    return out


def test_admin_topics_partitions_and_configs(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("py-admin", 2, 1, topic_configs={"segment.bytes": "1048576"})])
    with pytest.raises(TopicAlreadyExistsError):
        admin.create_topics([NewTopic("py-admin", 2, 1)])
    admin.create_partitions({"py-admin": NewPartitions(4)})
    assert len(admin.describe_topics(["py-admin"])[0]["partitions"]) == 4
    configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-admin")])
    text = str(configs)
    assert "segment.bytes" in text and "1048576" in text
    admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, "py-admin", configs={"retention.ms": "7200000"})])
    text = str(admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-admin")]))
    assert "7200000" in text, text
    assert "py-admin" in admin.list_topics()
    admin.delete_topics(["py-admin"])
    assert "py-admin" not in admin.list_topics()
    with pytest.raises(UnknownTopicOrPartitionError):
        admin.delete_topics(["py-admin"])
    admin.close()


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_every_record_round_trips_once_in_order(broker, acks):
    topic = f"py-acks-{acks}"
    KafkaAdminClient(bootstrap_servers=broker.bootstrap).create_topics([NewTopic(topic, 3, 1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks=acks, enable_idempotence=False, linger_ms=5)
    n = 600
    for i in range(n):
        producer.send(topic, key=b"k%d" % (i % 7), value=b"v%d" % i, partition=i % 3, headers=[("h", b"%d" % i)], timestamp_ms=1_700_000_000_000 + i)
    producer.flush()
    producer.close()
    records = consume(broker, topic, 3, n)
    assert len(records) == n
    last = {}
    for r in records:
        i = int(r.value[1:])
        assert r.partition == i % 3
        assert r.key == b"k%d" % (i % 7)
        assert r.headers == [("h", b"%d" % i)]
        assert r.timestamp == 1_700_000_000_000 + i
        assert r.offset == last.get(r.partition, -1) + 1, "consecutive offsets, in order"
        last[r.partition] = r.offset


def test_idempotent_producer_by_default(broker):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)  # kafka-python 3: idempotent, acks=all
    topic = "py-idem"
    futures = [producer.send(topic, value=b"%d" % i, partition=0) for i in range(1000)]  # auto-created
    producer.flush()
    offsets = [f.get(timeout=10).offset for f in futures]
    assert offsets == list(range(1000))
    producer.close()
    assert [int(r.value) for r in consume(broker, topic, 1, 1000)] == list(range(1000))


def test_seek_and_offsets_for_times(broker):
    topic = "py-times"
    KafkaAdminClient(bootstrap_servers=broker.bootstrap).create_topics([NewTopic(topic, 1, 1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(10):
        producer.send(topic, value=b"%d" % i, partition=0, timestamp_ms=5_000 + i * 100).get(timeout=10)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    tp = TopicPartition(topic, 0)
    found = consumer.offsets_for_times({tp: 5_350})
    assert found[tp].offset == 4 and found[tp].timestamp == 5_400
    assert consumer.offsets_for_times({tp: 99_999})[tp] is None
    assert consumer.beginning_offsets([tp])[tp] == 0
    assert consumer.end_offsets([tp])[tp] == 10
    consumer.close()
    assert [int(r.value) for r in consume(broker, topic, 1, 3, start=7)] == [7, 8, 9]


def test_kill9_mid_idempotent_stream_keeps_every_acked_record_once(broker):
    topic = "py-kill9"
    KafkaAdminClient(bootstrap_servers=broker.bootstrap).create_topics([NewTopic(topic, 2, 1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, retries=1_000_000, delivery_timeout_ms=60_000, reconnect_backoff_max_ms=200)
    acked = []
    futures = []
    for i in range(4000):
        f = producer.send(topic, value=b"%d" % i, partition=i % 2)
        f.add_callback(lambda md, i=i: acked.append(i))
        futures.append(f)
        if i == 2000:
            time.sleep(0.05)  # some acknowledged, some in flight
            broker.kill9()
            broker.start()
    producer.flush(timeout=60)
    for f in futures:
        f.get(timeout=60)
    producer.close()
    assert len(acked) == 4000
    values = [int(r.value) for r in consume(broker, topic, 2, 4000)]
    assert sorted(values) == list(range(4000)), "every acknowledged record exactly once"


# Consumer groups: a group of two KafkaConsumers, commits and resuming from them, and the admin
# client's group operations. The brokers start with no initial rebalance delay so groups form at
# once; the consumers use short session and heartbeat intervals.

GROUP_SETTINGS = ["group.initial.rebalance.delay.ms=0"]


@pytest.fixture(params=[1, 2], ids=["1-shard", "2-shards"])
def group_broker(request):
    b = Broker(request.param, GROUP_SETTINGS)
    yield b
    b.stop()


def wait_for(condition, what, timeout=30):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, what() if callable(what) else what
        time.sleep(0.05)


def group_consumer(broker, group, *topics, **configs):
    settings = dict(
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        fetch_max_wait_ms=100,
    )
    settings.update(configs)
    return KafkaConsumer(*topics, **settings)


class GroupMember(threading.Thread):
    """A KafkaConsumer in a group, polled on its own thread, committing after each batch."""

    def __init__(self, broker, group, topic, name):
        super().__init__(daemon=True)
        self.name = name
        self.consumer = group_consumer(broker, group, topic, client_id=name)
        self.records = []
        self.assigned = set()
        self.commit_failures = []
        self.error = None
        self.stopping = threading.Event()

    def run(self):
        try:
            while not self.stopping.is_set():
                # Long enough for a whole JoinGroup/SyncGroup round inside one poll: kafka-python
                # 3.0.12 can drop a join that completes after poll() timed out (a leader whose
                # assignment snapshot then matches its metadata never finishes joining, stops
                # heartbeating and is expired).
                batch = self.consumer.poll(timeout_ms=1000)
                got = [r for rs in batch.values() for r in rs]
                self.records.extend(got)
                if got:
                    try:
                        self.consumer.commit()
                    except CommitFailedError as e:
                        self.commit_failures.append(e)
                self.assigned = set(self.consumer.assignment())
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.consumer.close()

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)
        assert not self.is_alive(), f"{self.name} did not stop"
        assert self.error is None, f"{self.name}: {self.error!r}"


def poll_until(consumer, expected, timeout=30):
    out = []
    deadline = time.time() + timeout
    while len(out) < expected and time.time() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(records)
    # A second more, to catch anything beyond what was expected.
    extra_until = time.time() + 1
    while time.time() < extra_until:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(records)
    return out


def test_group_of_two_consumers_shares_partitions_and_resumes_from_commits(group_broker):
    broker = group_broker
    topic, group = "py-group", "py-workers"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, 4, 1)])
    everything = {TopicPartition(topic, p) for p in range(4)}
    a = GroupMember(broker, group, topic, "a")
    b = GroupMember(broker, group, topic, "b")
    a.start()
    b.start()
    try:
        wait_for(
            lambda: len(a.assigned) == 2 and len(b.assigned) == 2 and a.assigned | b.assigned == everything,
            lambda: f"both members hold two partitions: a {a.assigned}, b {b.assigned}, errors {a.error!r} {b.error!r}\n" + broker.log()[-3000:],
        )
        assigned = {"a": set(a.assigned), "b": set(b.assigned)}
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
        n = 400
        for i in range(n):
            producer.send(topic, key=b"k%d" % i, value=b"%d" % i, partition=i % 4)
        producer.flush()
        producer.close()
        wait_for(
            lambda: len({r.value for r in a.records + b.records}) >= n,
            lambda: f"consumed {len(a.records)} + {len(b.records)} of {n}\n" + broker.log()[-3000:],
        )
        time.sleep(0.5)  # anything beyond the n records would arrive now
    finally:
        a.stop()
        b.stop()
    assert a.records and b.records, "both members consumed"
    for member in (a, b):
        assert {TopicPartition(r.topic, r.partition) for r in member.records} <= assigned[member.name], \
            f"{member.name} read only its own partitions"
    values = sorted(int(r.value) for r in a.records + b.records)
    assert values == list(range(n)), "every record consumed exactly once by the stable group"
    assert not a.commit_failures and not b.commit_failures, (a.commit_failures, b.commit_failures)

    # The group's commits: the end of every partition.
    offsets = admin.list_group_offsets(group)[group]
    assert {tp: om.offset for tp, om in offsets.items()} == {tp: n // 4 for tp in everything}

    # A restarted consumer resumes after the committed offsets.
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
    for i in range(n, n + 100):
        producer.send(topic, value=b"%d" % i, partition=i % 4)
    producer.flush()
    producer.close()
    consumer = group_consumer(broker, group, topic)
    records = poll_until(consumer, 100)
    assert sorted(int(r.value) for r in records) == list(range(n, n + 100)), "only what came after the commits"
    consumer.commit()
    consumer.close()
    offsets = admin.list_group_offsets(group)[group]
    assert {tp: om.offset for tp, om in offsets.items()} == {tp: n // 4 + 25 for tp in everything}
    admin.close()


def assigned_partitions(assignment):
    """The partitions in a described member's assignment (decoded by the admin client)."""
    if hasattr(assignment, "partitions"):
        return {(tp.topic, tp.partition) for tp in assignment.partitions()}
    if isinstance(assignment, dict):
        out = set()
        for entry in assignment.get("assigned_partitions", []):
            if isinstance(entry, dict):
                out.update((entry["topic"], p) for p in entry["partitions"])
            else:
                out.update((entry[0], p) for p in entry[1])
        return out
    raise AssertionError(f"undecoded assignment {assignment!r}")


def test_admin_lists_describes_and_deletes_consumer_groups(group_broker):
    broker = group_broker
    topic, group = "py-admin-groups", "py-described"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(topic, 2, 1)])
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(10):
        producer.send(topic, value=b"%d" % i, partition=i % 2)
    producer.flush()
    producer.close()

    consumer = group_consumer(broker, group, topic, client_id="py-member")
    records = []
    deadline = time.time() + 30
    while len(records) < 10 and time.time() < deadline:
        for rs in consumer.poll(timeout_ms=200).values():
            records.extend(rs)
    assert len(records) == 10
    consumer.commit()
    # The member stays in the group: its heartbeat thread keeps the session alive.

    listed = {g["group_id"]: g for g in admin.list_groups()}
    assert group in listed, listed
    assert listed[group]["protocol_type"] == "consumer"

    described = admin.describe_groups([group])[group]
    assert described["error"] is None, described
    assert described["group_state"] == "Stable", described
    assert described["protocol_type"] == "consumer", described
    assert described["protocol_data"] == "range", described
    assert len(described["members"]) == 1, described
    member = described["members"][0]
    assert member["client_id"] == "py-member", member
    assert member["member_id"], member
    assert assigned_partitions(member["member_assignment"]) == {(topic, 0), (topic, 1)}, member

    offsets = admin.list_group_offsets(group)[group]
    assert {tp: om.offset for tp, om in offsets.items()} == {TopicPartition(topic, 0): 5, TopicPartition(topic, 1): 5}

    # Deleting needs an empty group, and an existing one.
    result = admin.delete_groups([group, "py-never-existed"])
    assert result == {group: "NonEmptyGroupError", "py-never-existed": "GroupIdNotFoundError"}, result

    consumer.close()  # LeaveGroup
    described = admin.describe_groups([group])[group]
    assert described["group_state"] == "Empty", described
    assert described["members"] == [], described
    assert admin.list_group_offsets(group)[group], "an empty group keeps its offsets"

    assert admin.delete_groups([group]) == {group: "OK"}
    assert group not in {g["group_id"] for g in admin.list_groups()}
    assert admin.list_group_offsets(group)[group] == {}, "the offsets went with the group"
    assert admin.delete_groups([group]) == {group: "GroupIdNotFoundError"}
    admin.close()
