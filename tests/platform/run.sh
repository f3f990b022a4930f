#!/usr/bin/env bash
# The Java platform, unchanged, on Sluice: Kafka Streams (word count, exactly_once_v2), Kafka Connect
# (a distributed worker with FileStreamSource and FileStreamSink), MirrorMaker 2 (topic and consumer
# group offsets between two brokers) and Kafka's command-line tools (topics, console producer and
# consumer, consumer groups, producer perf test), all Apache Kafka 4.1.1 from Maven Central.
# Each step prints `platform: STEP: passed (...)`; a failure prints the JVM's log tail and the broker log.
# JVM logs go to files only (src/main/resources/log4j2.properties); PLATFORM_KEEP_LOGS=1 keeps them.
# Usage: tests/platform/run.sh path/to/sluice [SHARDS...]   (default: 1 then 2 shards)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
sluice=$(realpath "$1")
shift
if [ $# -gt 0 ]; then shard_counts=("$@"); else shard_counts=(1 2); fi
source "$here/../broker.sh"

# (Debian's Maven prints colour resets even when quiet and in batch mode: dropped.)
mvn -q -B -f "$here/pom.xml" -DskipTests package dependency:copy-dependencies \
    -DoutputDirectory="$here/target/dependency" 2>&1 | sed 's/\x1b\[0m//g'

cp="$here/target/classes:$here/target/dependency/*"
all_logs=$(mktemp -d)
logs=$all_logs
# Kafka's advice for tests: no wait for more members before a new group's first rebalance.
broker_settings=(--set group.initial.rebalance.delay.ms=0)
background=()

cleanup() {
    for p in "${background[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [ "${PLATFORM_KEEP_LOGS:-0}" = 1 ] && echo "JVM logs kept in $all_logs" || rm -rf "$all_logs"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# jvm LOG CLASS ARGS...: runs a class from the platform's class path, its logging into $logs/LOG.log.
# The C1 compiler only: these JVMs are short-lived, and start faster without C2.
jvm() {
    local log=$1
    shift
    java -XX:TieredStopAtLevel=1 -Dplatform.log="$logs/$log.log" -cp "$cp" "$@"
}

# jvm_background LOG CLASS ARGS...: the same in the background (exec: $! is the JVM itself, so
# that killing it runs the JVM's shutdown hooks); its pid goes into $jvm_pid.
jvm_background() {
    (exec java -XX:TieredStopAtLevel=1 -Dplatform.log="$logs/$1.log" -cp "$cp" "${@:2}") &
    jvm_pid=$!
    background+=("$jvm_pid")
}

# stop_jvm PID: SIGTERM, then at most 20 s for the shutdown hooks.
stop_jvm() {
    kill "$1" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$1" 2>/dev/null || { wait "$1" || true; return 0; }
        sleep 0.2
    done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" || true
}

# failed MESSAGE [LOG]: the JVM log's tail, then the broker log (broker_failed exits).
failed() {
    if [ -n "${2:-}" ] && [ -f "$logs/$2.log" ]; then
        echo "--- last lines of the $2 JVM log:"
        grep -E 'WARN|ERROR|Exception' "$logs/$2.log" | tail -40 || true
    fi
    broker_failed "platform: $1"
}

# wait_for SECONDS COMMAND...: retries the command every 0.5 s until it succeeds or time runs out.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

streams_step() {
    local input=$logs/wordcount.txt
    cat > "$input" <<'TEXT'
The quick brown fox jumps over the lazy dog.
A stream is a table, and a table is a stream.
Exactly once means every word is counted once and only once.
The broker keeps the log; the log keeps the order; the order keeps the stream.
TEXT
    mkdir -p "$logs/streams-state"
    jvm streams sluice.platform.WordCount "127.0.0.1:$port" "$input" "$logs/streams-state" \
        || failed "streams: word count failed" streams
}

connect_step() {
    local rest_port rest n=1000 lines=$logs/connect-in.txt out=$logs/connect-out.txt
    rest_port=$(free_port)
    rest="http://127.0.0.1:$rest_port"
    for i in $(seq 1 $n); do echo "line $i: $((i * 7919 % 10007)) héllo wörld"; done > "$lines"
    cat > "$logs/connect.properties" <<PROPS
bootstrap.servers=127.0.0.1:$port
group.id=sluice-connect
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
config.storage.topic=connect-configs
offset.storage.topic=connect-offsets
status.storage.topic=connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=5
status.storage.partitions=1
offset.flush.interval.ms=500
scheduled.rebalance.max.delay.ms=0
listeners=http://127.0.0.1:$rest_port
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$rest_port
plugin.discovery=service_load
PROPS
    local started=$SECONDS
    jvm_background connect org.apache.kafka.connect.cli.ConnectDistributed "$logs/connect.properties"
    local worker=$jvm_pid
    wait_for 90 curl -sf "$rest/connectors" -o /dev/null || failed "connect: REST API did not come up" connect
    curl -sf -X PUT -H 'Content-Type: application/json' "$rest/connectors/file-source/config" -d "{
        \"connector.class\": \"org.apache.kafka.connect.file.FileStreamSourceConnector\",
        \"tasks.max\": \"1\", \"file\": \"$lines\", \"topic\": \"connect-lines\"}" >/dev/null \
        || failed "connect: creating file-source failed" connect
    curl -sf -X PUT -H 'Content-Type: application/json' "$rest/connectors/file-sink/config" -d "{
        \"connector.class\": \"org.apache.kafka.connect.file.FileStreamSinkConnector\",
        \"tasks.max\": \"1\", \"file\": \"$out\", \"topics\": \"connect-lines\"}" >/dev/null \
        || failed "connect: creating file-sink failed" connect
    wait_for 90 cmp -s "$lines" "$out" || failed "connect: $out is not $lines ($(wc -l < "$out" 2>/dev/null || echo 0) of $n lines)" connect
    # Connect reports statuses through its status topic, read back asynchronously: wait for them.
    task_running() { curl -sf "$rest/connectors/$1/status" | grep -q '"tasks":\[{"id":0,"state":"RUNNING"'; }
    for c in file-source file-sink; do
        wait_for 30 task_running "$c" \
            || failed "connect: $c task not RUNNING: $(curl -s "$rest/connectors/$c/status")" connect
    done
    jvm connect-check org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$port" --describe \
        --topic 'connect-(configs|offsets|status)' > "$logs/connect-topics.txt" || failed "connect: describing its topics failed"
    [ "$(grep -c 'cleanup.policy=compact' "$logs/connect-topics.txt")" -eq 3 ] \
        || failed "connect: its topics are not all compacted: $(cat "$logs/connect-topics.txt")" connect
    stop_jvm "$worker"
    echo "platform: connect: passed (distributed worker, compacted config/offset/status topics, $n lines file -> topic -> file identical, $((SECONDS - started)) s)"
}

tools_step() {
    local bs=127.0.0.1:$port t=tools-topic out=$logs/tools
    mkdir -p "$out"
    jvm tools org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --create --topic "$t" \
        --partitions 3 --replication-factor 1 --config retention.ms=3600000 > "$out/create.txt" 2>&1 \
        && grep -q "^Created topic $t.$" "$out/create.txt" || failed "tools: kafka-topics --create: $(cat "$out/create.txt")" tools
    jvm tools org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --list > "$out/list.txt" 2>&1 \
        && grep -qx "$t" "$out/list.txt" || failed "tools: kafka-topics --list: $(cat "$out/list.txt")" tools
    jvm tools org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --describe --topic "$t" > "$out/describe.txt" 2>&1 \
        && grep -q "PartitionCount: 3" "$out/describe.txt" && grep -q "retention.ms=3600000" "$out/describe.txt" \
        && [ "$(grep -cE "Topic: $t[[:space:]]+Partition: [0-2][[:space:]]+Leader: [0-9]+[[:space:]]+Replicas: [0-9]+[[:space:]]+Isr: [0-9]+" "$out/describe.txt")" -eq 3 ] \
        || failed "tools: kafka-topics --describe: $(cat "$out/describe.txt")" tools
    # One partition per DescribeTopicPartitions answer: the tool follows the cursor to all three.
    jvm tools org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --describe --topic "$t" \
        --partition-size-limit-per-response 1 > "$out/describe-paged.txt" 2>&1 \
        && [ "$(grep -cE "Topic: $t[[:space:]]+Partition: [0-2][[:space:]]" "$out/describe-paged.txt")" -eq 3 ] \
        || failed "tools: kafka-topics --describe, one partition per response: $(cat "$out/describe-paged.txt")" tools

    # A preferred election where the preferred replica leads already: nothing to do (ElectLeaders).
    jvm tools org.apache.kafka.tools.LeaderElectionCommand --bootstrap-server "$bs" --election-type PREFERRED \
        --topic "$t" --partition 0 > "$out/elect.txt" 2>&1 \
        && grep -q "^Valid replica already elected for partitions $t-0$" "$out/elect.txt" \
        || failed "tools: kafka-leader-election: $(cat "$out/elect.txt")" tools

    # Explicit replica assignments, as rebalancers and provisioning tools send them.
    local topics="jvm tools org.apache.kafka.tools.TopicCommand --bootstrap-server $bs"
    $topics --create --topic tools-assigned --replica-assignment 1,1,1 > "$out/assigned.txt" 2>&1 \
        && grep -q "^Created topic tools-assigned.$" "$out/assigned.txt" \
        || failed "tools: kafka-topics --create --replica-assignment: $(cat "$out/assigned.txt")" tools
    $topics --alter --topic tools-assigned --partitions 4 --replica-assignment 1,1,1,1 > "$out/assigned-alter.txt" 2>&1 \
        && $topics --describe --topic tools-assigned > "$out/assigned-describe.txt" 2>&1 \
        && grep -q "PartitionCount: 4" "$out/assigned-describe.txt" \
        || failed "tools: kafka-topics --alter --replica-assignment: $(cat "$out/assigned-alter.txt" "$out/assigned-describe.txt")" tools
    if $topics --create --topic tools-misassigned --replica-assignment 1,101 > "$out/misassigned.txt" 2>&1 \
        || ! grep -q "includes broker 101, but no such broker is registered" "$out/misassigned.txt"; then
        failed "tools: kafka-topics --replica-assignment naming broker 101 must fail: $(cat "$out/misassigned.txt")" tools
    fi

    local n=300
    for i in $(seq 1 $n); do echo "k$i:value $i"; done > "$out/produced.txt"
    jvm tools org.apache.kafka.tools.ConsoleProducer --bootstrap-server "$bs" --topic "$t" \
        --property parse.key=true --property key.separator=: < "$out/produced.txt" > "$out/producer.txt" 2>&1 \
        || failed "tools: console producer: $(cat "$out/producer.txt")" tools
    jvm tools org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server "$bs" --topic "$t" --from-beginning \
        --group tools-group --max-messages $n --timeout-ms 30000 --property print.key=true --property key.separator=: \
        > "$out/consumed.txt" 2> "$out/consumer.txt" || failed "tools: console consumer: $(cat "$out/consumer.txt")" tools
    diff <(sort "$out/produced.txt") <(sort "$out/consumed.txt") > /dev/null \
        || failed "tools: console consumer read $(wc -l < "$out/consumed.txt") lines, not the $n produced" tools

    local groups="jvm tools org.apache.kafka.tools.consumer.group.ConsumerGroupCommand --bootstrap-server $bs"
    $groups --list > "$out/groups.txt" 2>&1 && grep -qx tools-group "$out/groups.txt" \
        || failed "tools: kafka-consumer-groups --list: $(cat "$out/groups.txt")" tools
    # --describe: one row per partition, CURRENT-OFFSET == LOG-END-OFFSET, lags sum to 0, offsets to n.
    $groups --describe --group tools-group > "$out/describe-group.txt" 2>&1 \
        || failed "tools: kafka-consumer-groups --describe: $(cat "$out/describe-group.txt")" tools
    [ "$(awk -v t=$t '$2 == t { c += $4; l += $6; rows++ } END { print rows, c, l }' "$out/describe-group.txt")" = "3 $n 0" ] \
        || failed "tools: kafka-consumer-groups --describe: $(cat "$out/describe-group.txt")" tools
    $groups --reset-offsets --group tools-group --topic "$t" --to-earliest --execute > "$out/reset.txt" 2>&1 \
        && [ "$(awk -v t=$t '$2 == t { s += $4; rows++ } END { print rows, s }' "$out/reset.txt")" = "3 0" ] \
        || failed "tools: kafka-consumer-groups --reset-offsets: $(cat "$out/reset.txt")" tools
    $groups --describe --group tools-group > "$out/after-reset.txt" 2>&1 \
        && [ "$(awk -v t=$t '$2 == t { c += $4; l += $6 } END { print c, l }' "$out/after-reset.txt")" = "0 $n" ] \
        || failed "tools: lag after --reset-offsets: $(cat "$out/after-reset.txt")" tools

    jvm tools org.apache.kafka.tools.ProducerPerformance --topic perf-topic --num-records 20000 --record-size 100 \
        --throughput -1 --producer-props "bootstrap.servers=$bs" acks=all > "$out/perf.txt" 2>&1 \
        && grep -qE '^20000 records sent, .* records/sec' "$out/perf.txt" \
        || failed "tools: kafka-producer-perf-test: $(cat "$out/perf.txt")" tools
    local perf
    perf=$(grep -oE '^20000 records sent, [0-9.]+ records/sec' "$out/perf.txt")

    jvm tools org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --delete --topic "$t" > "$out/delete.txt" 2>&1 \
        || failed "tools: kafka-topics --delete: $(cat "$out/delete.txt")" tools
    jvm tools org.apache.kafka.tools.TopicCommand --bootstrap-server "$bs" --list > "$out/list-after.txt" 2>&1 \
        && ! grep -qx "$t" "$out/list-after.txt" || failed "tools: $t still listed after --delete" tools
    echo "platform: tools: passed (kafka-topics create/list/describe (also paged by 1 partition)/delete, --replica-assignment accepted and refused, console producer -> consumer $n records, consumer-groups list/describe/reset-offsets, perf test: $perf)"
}

# MirrorMaker 2 from the running broker (cluster a) to a second fresh one (cluster b): a topic is
# mirrored as a.TOPIC with the same offsets, and a consumer group's committed offsets on a are
# translated and committed on b, where a consumer of the group resumes right after them.
mm2_step() {
    local a_port=$port a_dir=$dir a_pid=$pid n=100 more=30 group=mm2-group started=$SECONDS
    start_broker "$sluice" "$cores" "${broker_settings[@]}" --set sluice.admin.listen=none
    local b_port=$port b_dir=$dir b_pid=$pid
    port=$a_port dir=$a_dir pid=$a_pid
    mm2_failed() {
        echo "--- cluster b's broker log:"; cat "$b_dir/broker.log"; kill -9 "$b_pid"
        failed "mirrormaker2: $1" "${2:-mm2}"
    }
    jvm mm2-clients sluice.platform.Mirror seed "127.0.0.1:$a_port" mirrored "$group" $n \
        || mm2_failed "seeding cluster a failed" mm2-clients
    cat > "$logs/mm2.properties" <<PROPS
clusters=a, b
a.bootstrap.servers=127.0.0.1:$a_port
b.bootstrap.servers=127.0.0.1:$b_port
a->b.enabled=true
a->b.topics=mirrored
b->a.enabled=false
replication.factor=1
checkpoints.topic.replication.factor=1
heartbeats.topic.replication.factor=1
offset-syncs.topic.replication.factor=1
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
sync.group.offsets.enabled=true
sync.group.offsets.interval.seconds=1
emit.checkpoints.interval.seconds=1
emit.heartbeats.interval.seconds=1
refresh.topics.interval.seconds=2
refresh.groups.interval.seconds=2
offset.lag.max=0
offset.flush.interval.ms=500
scheduled.rebalance.max.delay.ms=0
plugin.discovery=service_load
PROPS
    jvm_background mm2 org.apache.kafka.connect.mirror.MirrorMaker "$logs/mm2.properties"
    local mm2=$jvm_pid
    jvm mm2-clients sluice.platform.Mirror replicated "127.0.0.1:$b_port" a.mirrored $n \
        || mm2_failed "a.mirrored on cluster b is not the topic mirrored on a"
    jvm mm2-clients sluice.platform.Mirror synced "127.0.0.1:$b_port" "$group" a.mirrored $n \
        || mm2_failed "$group's offsets were not synced to cluster b"
    jvm mm2-clients sluice.platform.Mirror produce "127.0.0.1:$a_port" mirrored $n $((n + more)) \
        || mm2_failed "producing more to cluster a failed" mm2-clients
    jvm mm2-clients sluice.platform.Mirror resume "127.0.0.1:$b_port" "$group" a.mirrored $n $((n + more)) \
        || mm2_failed "$group did not resume at the translated offsets on cluster b"
    stop_jvm "$mm2"
    pid=$b_pid dir=$b_dir
    stop_broker
    port=$a_port dir=$a_dir pid=$a_pid
    echo "platform: mirrormaker2: passed (a.mirrored on b holds records 0-$((n - 1)) at the same offsets; $group's offsets translated to $n on b, where it resumed with exactly records $n-$((n + more - 1)); $((SECONDS - started)) s)"
}

all_logs=$logs
for cores in "${shard_counts[@]}"; do
    logs=$all_logs/$cores-shards
    mkdir -p "$logs"
    start_broker "$sluice" "$cores" "${broker_settings[@]}"
    streams_step
    connect_step
    mm2_step
    tools_step
    stop_broker
    echo "platform: all steps passed with $cores shard(s)"
done
