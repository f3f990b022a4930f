"""kafka-python 3 (idempotent by default) against the real sluice binary, with 1 and 2 shards:
admin topics and partitions, acks 0/1/all, the idempotent producer, assign/seek/from-beginning,
offsets by timestamp, and kill -9 in the middle of an idempotent stream."""

import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

SLUICE = os.environ.get("SLUICE_BIN", os.path.join(os.path.dirname(__file__), "..", "..", "target", "debug", "sluice"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, cores):
        self.cores = cores
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
            [SLUICE, "serve", "--listen", self.bootstrap, "--data-dir", os.path.join(self.dir, "data"), "--cores", str(self.cores)],
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
