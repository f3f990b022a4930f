"""kafka-python 3 (idempotent by default) against the real sluice binary, with 1 and 2 shards:
admin topics and partitions, acks 0/1/all, the idempotent producer, assign/seek/from-beginning,
offsets by timestamp, kill -9 in the middle of an idempotent stream, consumer groups (a group of
two consumers, committed offsets, the admin client's group operations), and transactions (commit
and abort, read_committed, zombie fencing, consume-transform-produce)."""

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
from kafka.errors import (
    CommitFailedError, InvalidProducerEpochError, KafkaError, ProducerFencedError, TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from kafka.structs import OffsetAndMetadata

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


def create_topics(broker, topics):
    """Creates the topics with an admin client that it closes: a client left open keeps trying
    to reconnect to its broker after the test stopped it, for the rest of the session."""
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics(topics)
    admin.close()


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


def test_broker_defaults_change_at_run_time(broker):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic("py-defaults", 1, 1)])
    result = admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs={"log.retention.ms": "604800001"})])
    assert "Error" not in str(result), result
    text = str(admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-defaults")], config_filter="all"))
    assert "604800001" in text, text
    # Only the topic defaults change at run time; other keys and bad values get INVALID_CONFIG.
    for key, value in [("num.partitions", "3"), ("log.retention.ms", "soon")]:
        result = admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs={key: value})])
        assert "Error 40" in str(result), result
    text = str(admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1")], config_filter="all"))
    assert "604800001" in text, text
    # Back to the file's default, so the other tests see the broker as configured.
    admin.alter_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs={"log.retention.ms": "604800000"})])
    text = str(admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "py-defaults")], config_filter="all"))
    assert "604800001" not in text and "604800000" in text, text
    admin.delete_topics(["py-defaults"])
    admin.close()


@pytest.mark.parametrize("acks", [0, 1, "all"])
def test_every_record_round_trips_once_in_order(broker, acks):
    topic = f"py-acks-{acks}"
    create_topics(broker, [NewTopic(topic, 3, 1)])
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
    create_topics(broker, [NewTopic(topic, 1, 1)])
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
    create_topics(broker, [NewTopic(topic, 2, 1)])
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


# kafka-python 3.0.12 can lose a JoinGroup/SyncGroup round. A consumer sends its first JoinGroup
# before it has fetched its topics' metadata, so as the group's leader it assigns nothing ("No
# partition metadata for topic") and rejoins once the metadata arrives. If poll() times out while
# that second round is in flight, the round completes in the background; the next poll() sees the
# leader's assignment snapshot now matching its metadata, asks for no rejoin, and never takes the
# round's result: the consumer keeps its empty assignment, never turns its heartbeat back on (it
# is off during a join) and the coordinator expires its session. Hence group consumers learn their
# topics' partitions before they first join, and poll while waiting for records with all the time
# left (a poll returns as soon as records arrive), never giving up a poll in the middle of a join.


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
    consumer = KafkaConsumer(*topics, **settings)
    for topic in topics:
        assert consumer.partitions_for_topic(topic), f"no partitions for {topic}"
    return consumer


def poll_within(consumer, deadline):
    """One poll that may wait until `deadline` (time.time()); it returns once records arrive."""
    return consumer.poll(timeout_ms=max(0, int((deadline - time.time()) * 1000)))


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
                # Short, to notice `stopping`, yet long enough for a whole JoinGroup/SyncGroup
                # round inside one poll (see group_consumer).
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
        for records in poll_within(consumer, deadline).values():
            out.extend(records)
    # A second more, to catch anything beyond what was expected.
    extra_until = time.time() + 1
    while time.time() < extra_until:
        for records in poll_within(consumer, extra_until).values():
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
        for rs in poll_within(consumer, deadline).values():
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


# Transactions: kafka-python's transactional producer (transactional_id) and read_committed
# consumers.


def isolated_consume(broker, topic, partitions, expected, isolation_level):
    """Every record of the topic from the beginning, read with the given isolation level: polls
    until `expected` arrived, then a second more for anything beyond. Returns the records and the
    consumer's final position on each partition."""
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                             isolation_level=isolation_level, fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    records = poll_until(consumer, expected)
    positions = {tp.partition: consumer.position(tp) for tp in tps}
    consumer.close()
    return records, positions


def transactional_producer(broker, transactional_id):
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id=transactional_id, linger_ms=5)
    producer.init_transactions()
    return producer


def commit_abort_commit(producer, topic, partitions):
    """Three transactions of 30 records each over the partitions (c0 committed, a aborted, c1
    committed); closes the producer and returns the committed values, sorted."""
    for prefix, commit in [(b"c0", True), (b"a", False), (b"c1", True)]:
        producer.begin_transaction()
        for i in range(30):
            producer.send(topic, value=b"%s-%d" % (prefix, i), partition=i % partitions)
        if commit:
            producer.commit_transaction()
        else:
            producer.flush()
            producer.abort_transaction()
    producer.close()
    return sorted(b"%s-%d" % (p, i) for p in (b"c0", b"c1") for i in range(30))


def test_transactions_read_committed_sees_only_committed_records(broker):
    topic = "py-txn"
    create_topics(broker, [NewTopic(topic, 3, 1)])
    committed = commit_abort_commit(transactional_producer(broker, "py-txn-producer"), topic, 3)
    everything = sorted(committed + [b"a-%d" % i for i in range(30)])

    records, positions = isolated_consume(broker, topic, 3, 60, "read_committed")
    assert sorted(r.value for r in records) == committed, "read_committed: exactly the committed records, once\n" + broker.log()[-3000:]
    # Each partition: 10 records per transaction and one marker after each, and the reader's
    # position past the last marker.
    assert positions == {0: 33, 1: 33, 2: 33}, positions
    for r in records:
        assert r.partition == int(r.value.split(b"-")[1]) % 3

    records, _ = isolated_consume(broker, topic, 3, 90, "read_uncommitted")
    assert sorted(r.value for r in records) == everything, "read_uncommitted: every data record, once"


def fenced(exc):
    """Whether the error says the producer was fenced: it is ProducerFencedError or
    InvalidProducerEpochError, or a KafkaError of the transaction manager's error state that
    names one (kafka-python reports a fatal state's cause in the message or the arguments)."""
    family = (ProducerFencedError, InvalidProducerEpochError)
    return (isinstance(exc, family)
            or any(isinstance(a, family) for a in exc.args)
            or any(cls.__name__ in str(exc) for cls in family))


def open_transaction(broker, transactional_id, topic, prefix):
    """A transactional producer with an open transaction holding PREFIX-0 on partition 0 and
    PREFIX-1 on partition 1, flushed."""
    producer = transactional_producer(broker, transactional_id)
    producer.begin_transaction()
    producer.send(topic, value=prefix + b"-0", partition=0)
    producer.send(topic, value=prefix + b"-1", partition=1)
    producer.flush()
    return producer


def test_transactions_a_new_producer_fences_the_zombie(broker):
    topic, tid = "py-zombie", "py-zombie-id"
    create_topics(broker, [NewTopic(topic, 2, 1)])
    # Each new producer's init_transactions bumps the epoch and aborts the previous one's open
    # transaction. The first zombie's commit is refused by the coordinator (EndTxn with an old
    # epoch); the second zombie's write is refused by the partition (Produce with an old epoch).
    first = open_transaction(broker, tid, topic, b"zombie-a")
    second = open_transaction(broker, tid, topic, b"zombie-b")
    with pytest.raises(ProducerFencedError):
        first.commit_transaction()
    first.close(timeout=1)

    successor = transactional_producer(broker, tid)
    successor.begin_transaction()
    successor.send(topic, value=b"successor-0", partition=0)
    successor.commit_transaction()
    successor.close()

    late = second.send(topic, value=b"zombie-late", partition=1)
    with pytest.raises(KafkaError) as raised:
        late.get(timeout=20)
    assert fenced(raised.value), f"the late write fails as fenced: {raised.value!r}"
    # kafka-python answers the refused write with a KIP-360 epoch bump (InitProducerId with its
    # old producer id and epoch), which the coordinator must fence too; until that answer
    # arrives the client refuses commit_transaction as an invalid state transition. It never
    # commits.
    errors = []

    def commit_is_fenced():
        with pytest.raises(KafkaError) as raised:
            second.commit_transaction()
        errors.append(raised.value)
        return fenced(raised.value)

    wait_for(commit_is_fenced, lambda: f"the fenced producer's commit fails as fenced: {errors[-1]!r}", timeout=20)
    with pytest.raises(KafkaError) as raised:
        second.send(topic, value=b"zombie-later", partition=1)
    assert fenced(raised.value), f"no more writes: {raised.value!r}"
    second.close(timeout=1)

    records, _ = isolated_consume(broker, topic, 2, 1, "read_committed")
    assert [r.value for r in records] == [b"successor-0"], "only the successor's record is visible\n" + broker.log()[-3000:]
    records, _ = isolated_consume(broker, topic, 2, 5, "read_uncommitted")
    assert sorted(r.value for r in records) == [b"successor-0", b"zombie-a-0", b"zombie-a-1", b"zombie-b-0", b"zombie-b-1"], \
        "the log holds the zombies' flushed (aborted) records and the successor's, not the refused write"


def transform_round(consumer, producer, out_topic, n, commit):
    """Reads n records with the group consumer and writes their transformation in one
    transaction, with the consumed offsets (send_offsets_to_transaction and the group's
    metadata); commits or aborts it."""
    read = []
    deadline = time.time() + 30
    while len(read) < n and time.time() < deadline:
        for rs in poll_within(consumer, deadline).values():
            read.extend(rs)
    assert len(read) == n, f"the group consumer read {len(read)} of {n}"
    producer.begin_transaction()
    offsets = {}
    for r in read:
        producer.send(out_topic, value=b"out-" + r.value, partition=r.partition)
        offsets[TopicPartition(r.topic, r.partition)] = OffsetAndMetadata(r.offset + 1, "", -1)
    producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
    if commit:
        producer.commit_transaction()
    else:
        producer.flush()
        producer.abort_transaction()


def test_transactions_consume_transform_produce(group_broker):
    broker = group_broker
    source, sink, group = "py-ctp-in", "py-ctp-out", "py-ctp"
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    admin.create_topics([NewTopic(source, 3, 1), NewTopic(sink, 3, 1)])
    plain = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(30):
        plain.send(source, value=b"v%d" % i, partition=i % 3)
    plain.flush()

    producer = transactional_producer(broker, "py-ctp-producer")
    consumer = group_consumer(broker, group, source, isolation_level="read_committed")
    everything = {TopicPartition(source, p) for p in range(3)}
    transform_round(consumer, producer, sink, 30, commit=True)
    offsets = admin.list_group_offsets(group)[group]
    assert {tp: om.offset for tp, om in offsets.items()} == {tp: 10 for tp in everything}, "the transaction committed the offsets"

    # An aborted round: neither its output nor its offsets stay.
    for i in range(30, 33):
        plain.send(source, value=b"v%d" % i, partition=i % 3)
    plain.flush()
    plain.close()
    transform_round(consumer, producer, sink, 3, commit=False)
    offsets = admin.list_group_offsets(group)[group]
    assert {tp: om.offset for tp, om in offsets.items()} == {tp: 10 for tp in everything}, "an abort leaves the offsets"
    consumer.close()
    producer.close()
    admin.close()

    records, _ = isolated_consume(broker, sink, 3, 30, "read_committed")
    assert sorted(r.value for r in records) == sorted(b"out-v%d" % i for i in range(30)), \
        "each committed transformation once, none of the aborted ones"
