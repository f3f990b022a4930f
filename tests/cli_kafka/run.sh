#!/usr/bin/env bash
# The admin CLI against Apache Kafka 4.4 (single node, KRaft, loopback): the same commands and
# checks as against Sluice (tests/cli_tools.rs), proving the CLI needs nothing Sluice-specific.
# Apache Kafka comes from Maven Central into scripts/kafka/target/lib (as for the benchmarks).
# Usage: tests/cli_kafka/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/kafka/kafka.sh
fetch_kafka
start_kafka 512m num.partitions=1 offsets.topic.num.partitions=1 group.initial.rebalance.delay.ms=0
trap stop_kafka EXIT
SLUICE_TEST_KAFKA_BOOTSTRAP="127.0.0.1:$kafka_port" cargo test -q --locked --all-features --test cli_tools -- --ignored \
    || { echo "the admin CLI failed against Apache Kafka"; exit 1; }
echo "admin CLI: every command passes against Apache Kafka 4.4.0"
