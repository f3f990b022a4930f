"""kafka-python 3 against a cluster of three sluice brokers on one machine (every broker a voter
of the metadata quorum): the admin client creates a topic whose partitions are led by all three,
an idempotent acks=all producer bootstrapped from one broker writes to every leader, a consumer
bootstrapped from another reads every record back once, and a group of two consumers shares the
partitions and commits through whichever broker coordinates the group; transactions over
partitions of all three brokers commit and abort as on one broker."""

import os
import subprocess
import tempfile
import time

import pytest
from kafka import KafkaAdminClient, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from test_kafka_python import (
    SLUICE,
    GroupMember,
    commit_abort_commit,
    consume,
    free_port,
    isolated_consume,
    transactional_producer,
    wait_for,
)


class ClusterBroker:
    """One broker of the cluster: node `node_id`, its client and controller ports."""

    def __init__(self, node_id, client_port, controller_port, voters):
        self.node_id = node_id
        self.port = client_port
        self.dir = tempfile.mkdtemp(prefix=f"sluice-py-cluster-{node_id}-")
        settings = [
            f"node.id={node_id}",
            f"listeners=PLAINTEXT://127.0.0.1:{client_port},CONTROLLER://127.0.0.1:{controller_port}",
            "controller.listener.names=CONTROLLER",
            f"controller.quorum.voters={voters}",
            "cpuset=unpinned",
            "group.initial.rebalance.delay.ms=0",
        ]
        log = open(os.path.join(self.dir, "broker.log"), "a")
        self.proc = subprocess.Popen(
            [SLUICE, "serve", "--data-dir", os.path.join(self.dir, "data"), "--cores", "1"]
            + [arg for setting in settings for arg in ("--set", setting)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    @property
    def bootstrap(self):
        return f"127.0.0.1:{self.port}"

    def log(self):
        with open(os.path.join(self.dir, "broker.log")) as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(timeout=60) == 0, self.log()[-3000:]


@pytest.fixture
def cluster():
    ports = [(free_port(), free_port()) for _ in range(3)]
    voters = ",".join(f"{i + 1}@127.0.0.1:{controller}" for i, (_, controller) in enumerate(ports))
    brokers = [ClusterBroker(i + 1, client, controller, voters) for i, (client, controller) in enumerate(ports)]
    try:
        # Ready when each broker's metadata lists all three brokers live.
        for broker in brokers:
            wait_for(
                lambda: live_brokers(broker) == {1, 2, 3},
                lambda: f"broker {broker.node_id} sees three live brokers:\n" + broker.log()[-3000:],
                timeout=60,
            )
        yield brokers
    finally:
        for broker in brokers:
            broker.stop()


def live_brokers(broker):
    try:
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=5000)
    except Exception:  # not listening yet
        return set()
    try:
        return {b["broker_id"] for b in admin.describe_cluster()["brokers"]}
    except Exception:
        return set()
    finally:
        admin.close()


def leaders(broker, topic):
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        described = admin.describe_topics([topic])[0]
        return {p["partition_index"]: p["leader_id"] for p in described["partitions"]}
    finally:
        admin.close()


def create_spread(through, seen_by, topic, partitions):
    """Creates the topic through one broker and waits until another sees its partitions led by
    all three."""
    admin = KafkaAdminClient(bootstrap_servers=through.bootstrap)
    admin.create_topics([NewTopic(topic, partitions, 1)])
    admin.close()
    wait_for(
        lambda: set(leaders(seen_by, topic).values()) == {1, 2, 3},
        lambda: f"partitions led by all three brokers: {leaders(seen_by, topic)}",
        timeout=60,
    )


def test_clients_follow_leaders_across_three_brokers(cluster):
    first, second, third = cluster
    topic, partitions, n = "py-cluster", 6, 600
    create_spread(first, third, topic, partitions)

    producer = KafkaProducer(bootstrap_servers=first.bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    futures = [producer.send(topic, key=b"k%d" % i, value=b"%d" % i, partition=i % partitions) for i in range(n)]
    producer.flush()
    acked = [f.get(timeout=30) for f in futures]
    producer.close()
    assert {(m.partition, m.offset) for m in acked} == {(p, o) for p in range(partitions) for o in range(n // partitions)}

    records = consume(second, topic, partitions, n)
    assert sorted(int(r.value) for r in records) == list(range(n)), "every acknowledged record, once"

    group = "py-cluster-workers"
    a = GroupMember(third, group, topic, "a")
    b = GroupMember(third, group, topic, "b")
    a.start()
    b.start()
    try:
        wait_for(
            lambda: len({r.value for r in a.records + b.records}) >= n,
            lambda: f"the group consumed {len(a.records)} + {len(b.records)} of {n}; assigned {a.assigned} {b.assigned}",
            timeout=90,
        )
        time.sleep(0.5)
    finally:
        a.stop()
        b.stop()
    assert sorted(int(r.value) for r in a.records + b.records) == list(range(n)), "each record once in the group"
    admin = KafkaAdminClient(bootstrap_servers=second.bootstrap)
    offsets = admin.list_group_offsets(group)[group]
    admin.close()
    assert {tp: om.offset for tp, om in offsets.items()} == {
        TopicPartition(topic, p): n // partitions for p in range(partitions)
    }


def test_transactions_span_brokers(cluster):
    """A transaction's partitions are led by three brokers: the coordinator's markers and each
    leader's verification (KIP-890) cross brokers, and read_committed sees exactly the
    committed transactions, through a broker that coordinates neither."""
    first, second, third = cluster
    topic, partitions = "py-cluster-txn", 6
    create_spread(first, second, topic, partitions)
    committed = commit_abort_commit(transactional_producer(third, "py-cluster-txn"), topic, partitions)
    records, positions = isolated_consume(first, topic, partitions, 60, "read_committed")
    assert sorted(r.value for r in records) == committed, "read_committed: exactly the committed records"
    # Each partition: 5 records per transaction and a marker after each.
    assert positions == {p: 18 for p in range(partitions)}, positions
