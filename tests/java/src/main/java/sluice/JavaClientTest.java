package sluice;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.InvalidRecordException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.InvalidReplicaAssignmentException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Apache Kafka Java client (idempotent by default) against a running Sluice: admin
 * operations, produce with keys, headers and timestamps, consume with assign and seek, offsets
 * by timestamp, consumer groups, transactions. Exits non-zero on the first mismatch.
 */
public final class JavaClientTest {
    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    /** Explicit replica assignments: accepted on the broker that exists, refused as Kafka refuses them. */
    private static void replicaAssignments(Properties common) throws Exception {
        String topic = "java-assigned-" + System.nanoTime();
        try (Admin admin = Admin.create(common)) {
            int broker = admin.describeCluster().nodes().get().iterator().next().id();
            admin.createTopics(List.of(new NewTopic(topic, Map.of(0, List.of(broker), 1, List.of(broker))))).all().get();
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3, List.of(List.of(broker))))).all().get();
            int partitions = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
            check(partitions == 3, "3 partitions after assigned CreateTopics and CreatePartitions, got " + partitions);
            expectInvalidAssignment(() -> admin.createTopics(List.of(new NewTopic(topic + "-unknown",
                    Map.of(0, List.of(broker + 100))))).all().get(), "no such broker is registered");
            expectInvalidAssignment(() -> admin.createTopics(List.of(new NewTopic(topic + "-twice",
                    Map.of(0, List.of(broker, broker))))).all().get(), "more than once");
            expectInvalidAssignment(() -> admin.createPartitions(Map.of(topic,
                    NewPartitions.increaseTo(4, List.of(List.of(broker + 100))))).all().get(), "no such broker is registered");
            expectInvalidAssignment(() -> admin.createPartitions(Map.of(topic,
                    NewPartitions.increaseTo(5, List.of(List.of(broker))))).all().get(),
                    "Attempted to add 2 additional partition(s), but only 1 assignment(s) were specified.");
            check(!admin.listTopics().names().get().contains(topic + "-unknown"), "a refused topic is not created");
        }
    }

    private interface AdminCall {
        void run() throws Exception;
    }

    private static void expectInvalidAssignment(AdminCall call, String message) throws Exception {
        try {
            call.run();
            check(false, "an invalid replica assignment must fail (" + message + ")");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof InvalidReplicaAssignmentException, "InvalidReplicaAssignmentException, got " + e.getCause());
            check(e.getCause().getMessage().contains(message), "message with '" + message + "', got " + e.getCause().getMessage());
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = "java-" + System.nanoTime();
        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);

        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all().get();
            try {
                admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all().get();
                check(false, "creating an existing topic must fail");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof TopicExistsException, "TopicExistsException, got " + e.getCause());
            }
            admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(4))).all().get();
            int partitions = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic).partitions().size();
            check(partitions == 4, "4 partitions after CreatePartitions, got " + partitions);
            check(admin.describeCluster().nodes().get().size() == 1, "one broker");
            check(admin.listTopics().names().get().contains(topic), "listed");
        }
        replicaAssignments(common);

        Properties p = new Properties();
        p.putAll(common);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("linger.ms", "5");
        int n = 2000;
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < n; i++) {
                ProducerRecord<String, String> r = new ProducerRecord<>(topic, i % 4, 1_700_000_000_000L + i, "k" + i, "v" + i);
                r.headers().add("h", ("hv" + i).getBytes());
                sent.add(producer.send(r));
            }
            producer.flush();
        }
        Map<Integer, Long> nextOffset = new HashMap<>();
        for (int i = 0; i < n; i++) {
            RecordMetadata md = sent.get(i).get();
            long expected = nextOffset.getOrDefault(md.partition(), 0L);
            check(md.offset() == expected, "consecutive offsets per partition");
            nextOffset.put(md.partition(), expected + 1);
        }

        Properties c = new Properties();
        c.putAll(common);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("enable.auto.commit", "false");
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < 4; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Set<String> seen = new java.util.HashSet<>();
            long deadline = System.currentTimeMillis() + 30_000;
            while (seen.size() < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    int i = Integer.parseInt(r.value().substring(1));
                    check(r.key().equals("k" + i), "key");
                    check(r.timestamp() == 1_700_000_000_000L + i, "timestamp");
                    check(new String(r.headers().lastHeader("h").value()).equals("hv" + i), "header");
                    check(r.partition() == i % 4, "partition");
                    check(seen.add(r.value()), "no duplicates: " + r.value());
                }
            }
            check(seen.size() == n, "consumed " + seen.size() + " of " + n);

            TopicPartition p0 = new TopicPartition(topic, 0);
            Map<TopicPartition, OffsetAndTimestamp> found = consumer.offsetsForTimes(Map.of(p0, 1_700_000_000_000L + 41));
            check(found.get(p0).offset() == 11, "record 44 (the first at or after 41 on partition 0) is offset 11, got " + found.get(p0));
            check(found.get(p0).timestamp() == 1_700_000_000_000L + 44, "the record's own timestamp, not its batch's largest, got " + found.get(p0));
            check(consumer.endOffsets(List.of(p0)).get(p0) == n / 4, "end offset");
            consumer.seek(p0, 400);
            ConsumerRecord<String, String> first = null;
            while (first == null) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    if (r.partition() == 0 && first == null) {
                        first = r;
                    }
                }
            }
            check(first.offset() == 400 && first.value().equals("v1600"), "seek to 400 gives v1600, got " + first.value());

            // A position that carries a leader epoch is checked with OffsetForLeaderEpoch before
            // the consumer fetches from it (KIP-320). Every record was written under one epoch,
            // which ends at the log end: a position inside the log stands; one past the end is
            // taken for a truncated log and moved back to where the epoch ends (with a reset
            // policy; auto.offset.reset=none would throw LogTruncationException instead).
            int epoch = first.leaderEpoch().orElse(-1);
            check(epoch >= 0, "records carry their leader epoch, got " + first.leaderEpoch());
            consumer.seek(p0, new OffsetAndMetadata(300, Optional.of(epoch), ""));
            check(consumer.position(p0) == 300, "a position inside the epoch stands, got " + consumer.position(p0));
            consumer.seek(p0, new OffsetAndMetadata(n / 4 + 10, Optional.of(epoch), ""));
            long moved = consumer.position(p0);
            check(moved == n / 4, "a position past the epoch's end moves back to it (" + n / 4 + "), got " + moved);
        }

        try (Admin admin = Admin.create(common)) {
            ConfigResource resource = new ConfigResource(ConfigResource.Type.TOPIC, topic);
            admin.incrementalAlterConfigs(Map.of(resource, List.of(
                new AlterConfigOp(new ConfigEntry("retention.ms", "3600000"), AlterConfigOp.OpType.SET),
                new AlterConfigOp(new ConfigEntry("cleanup.policy", "compact"), AlterConfigOp.OpType.APPEND)))).all().get();
            Config described = admin.describeConfigs(List.of(resource)).all().get().get(resource);
            check(described.get("retention.ms").value().equals("3600000"), "retention.ms altered, got " + described.get("retention.ms"));
            check(described.get("cleanup.policy").value().equals("delete,compact"), "cleanup.policy appended, got " + described.get("cleanup.policy"));
            try {
                admin.incrementalAlterConfigs(Map.of(resource, List.of(
                    new AlterConfigOp(new ConfigEntry("retention.ms", "soon"), AlterConfigOp.OpType.SET)))).all().get();
                check(false, "an invalid value must be refused");
            } catch (ExecutionException e) {
                check(e.getCause() instanceof InvalidConfigurationException, "InvalidConfigurationException, got " + e.getCause());
            }
            TopicPartition p1 = new TopicPartition(topic, 1);
            long reported = admin.deleteRecords(Map.of(p1, RecordsToDelete.beforeOffset(100))).lowWatermarks().get(p1).get().lowWatermark();
            check(reported == 100, "DeleteRecords low watermark 100, got " + reported);
            long low = admin.listOffsets(Map.of(p1, OffsetSpec.earliest())).all().get().get(p1).offset();
            check(low == 100, "DeleteRecords moved the log start to 100, got " + low);
        }
        consumerGroup(common, topic, n);
        recordErrors(common);
        transactions(common);
        fetchSizing(common);
        try (Admin admin = Admin.create(common)) {
            admin.deleteTopics(List.of(topic)).all().get();
            check(!admin.listTopics().names().get().contains(topic), "deleted");
        }
        System.out.println("java client: all checks passed against " + bootstrap);
    }

    /**
     * Two consumers in one classic group share the topic's partitions and together read every
     * record once (commitSync after each batch); then the admin client lists, describes and
     * deletes the group and reads its committed offsets.
     */
    private static void consumerGroup(Properties common, String topic, int n) throws Exception {
        String group = "java-group-" + System.nanoTime();
        Properties c = new Properties();
        c.putAll(common);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("group.id", group);
        c.put("enable.auto.commit", "false");
        c.put("auto.offset.reset", "earliest");
        c.put("heartbeat.interval.ms", "500");
        List<KafkaConsumer<String, String>> members = List.of(new KafkaConsumer<>(c), new KafkaConsumer<>(c));
        try {
            for (KafkaConsumer<String, String> m : members) {
                m.subscribe(List.of(topic));
            }
            Set<String> seen = new java.util.HashSet<>();
            long deadline = System.currentTimeMillis() + 60_000;
            // Partition 1 lost its first 100 records to DeleteRecords.
            int expected = n - 100;
            while (seen.size() < expected && System.currentTimeMillis() < deadline) {
                for (KafkaConsumer<String, String> m : members) {
                    for (ConsumerRecord<String, String> r : m.poll(Duration.ofMillis(100))) {
                        check(seen.add(r.value()), "read once in the group: " + r.value());
                    }
                    m.commitSync();
                }
            }
            check(seen.size() == expected, "the group read " + seen.size() + " of " + expected);
            int a = members.get(0).assignment().size();
            int b = members.get(1).assignment().size();
            check(a + b == 4 && a > 0 && b > 0, "both members own partitions: " + a + " + " + b);

            try (Admin admin = Admin.create(common)) {
                List<String> listed = new ArrayList<>();
                for (ConsumerGroupListing l : admin.listConsumerGroups().all().get()) {
                    listed.add(l.groupId());
                }
                check(listed.contains(group), "group listed: " + listed);
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).all().get().get(group);
                check(d.groupState() == GroupState.STABLE, "Stable, got " + d.groupState());
                check(d.members().size() == 2, "2 members, got " + d.members());
                check(d.partitionAssignor().equals("range") || d.partitionAssignor().equals("cooperative-sticky"),
                    "assignor " + d.partitionAssignor());
                Map<TopicPartition, OffsetAndMetadata> offsets = admin.listConsumerGroupOffsets(group)
                    .partitionsToOffsetAndMetadata().get();
                check(offsets.size() == 4, "4 committed offsets, got " + offsets);
                check(offsets.get(new TopicPartition(topic, 0)).offset() == n / 4, "partition 0 committed to its end");
                try {
                    admin.deleteConsumerGroups(List.of(group)).all().get();
                    check(false, "deleting a group with members must fail");
                } catch (ExecutionException e) {
                    check(e.getCause() instanceof GroupNotEmptyException, "GroupNotEmptyException, got " + e.getCause());
                }
            }
        } finally {
            for (KafkaConsumer<String, String> m : members) {
                m.close();
            }
        }
        try (Admin admin = Admin.create(common)) {
            admin.deleteConsumerGroups(List.of(group)).all().get();
            check(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().isEmpty(),
                "a deleted group has no offsets");
        }
    }

    /**
     * KIP-467 per-record errors: one batch of 100 records to a compacted topic, every tenth
     * without a key (the idempotent producer's default). The ten keyless records fail with
     * InvalidRecordException and the broker's reason for them, the other ninety for sharing their
     * batch; nothing is stored. Then each record sent on its own: the ninety keyed ones are
     * stored, and the idempotent producer goes on after the refusals.
     */
    private static void recordErrors(Properties common) throws Exception {
        String topic = "java-compacted-" + System.nanoTime();
        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)
                .configs(Map.of("cleanup.policy", "compact")))).all().get();
        }
        for (boolean oneBatch : new boolean[] {true, false}) {
            Properties p = new Properties();
            p.putAll(common);
            p.put("key.serializer", StringSerializer.class.getName());
            p.put("value.serializer", StringSerializer.class.getName());
            p.put("linger.ms", oneBatch ? "1000" : "0");
            p.put("batch.size", oneBatch ? "1048576" : "1");
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
                for (int i = 0; i < 100; i++) {
                    String key = i % 10 == 0 ? null : "k" + i;
                    sent.add(producer.send(new ProducerRecord<>(topic, 0, key, "v" + i)));
                    if (!oneBatch) {
                        producer.flush();
                    }
                }
                producer.flush();
            }
            for (int i = 0; i < 100; i++) {
                String what = (oneBatch ? "one batch" : "alone") + ", record " + i;
                try {
                    sent.get(i).get();
                    check(!oneBatch && i % 10 != 0, what + ": must be refused");
                } catch (ExecutionException e) {
                    String message = String.valueOf(e.getCause().getMessage());
                    if (i % 10 == 0) {
                        check(e.getCause() instanceof InvalidRecordException, what + ": InvalidRecordException, got " + e.getCause());
                        check(message.contains("Compacted topic cannot accept message without key"), what + ": the broker's reason, got " + message);
                    } else {
                        check(oneBatch, what + ": a keyed record alone is stored, got " + e.getCause());
                        check(message.contains("part of a batch which had one more more invalid records"), what + ": refused for another record, got " + message);
                    }
                }
            }
        }
        try (KafkaConsumer<String, String> consumer = reader(common, topic, 1, "read_uncommitted")) {
            TopicPartition tp = new TopicPartition(topic, 0);
            long end = consumer.endOffsets(List.of(tp)).get(tp);
            check(end == 90, "only the ninety keyed records sent alone are stored, end offset " + end);
        }
    }

    private static Properties txnProducerProps(Properties common, String transactionalId) {
        Properties p = new Properties();
        p.putAll(common);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("transactional.id", transactionalId);
        p.put("linger.ms", "5");
        return p;
    }

    /** Record `i` of a fetch sizing case: its index, then `size` bytes in all. */
    private static String sized(int i, int size) {
        String head = String.format("%08d", i);
        return head + String.valueOf((char) ('a' + i % 26)).repeat(size - head.length());
    }

    /**
     * Fetch sizing (KIP-74): a consumer whose limits are smaller than a record batch still reads
     * it (the first batch goes out whole), and one whose per-partition limit is above the total
     * gets answers cut to the total and still reads everything, in order, byte-exact.
     */
    private static void fetchSizing(Properties common) throws Exception {
        // (partitions, records per partition, record size, fetch.max.bytes, max.partition.fetch.bytes)
        int[][] cases = {
            {2, 4, 300_000, 100_000, 50_000},
            {3, 4, 900_000, 1_000_000, 20_000_000},
        };
        for (int[] c : cases) {
            int partitions = c[0], perPartition = c[1], size = c[2];
            String topic = "java-sizing-" + System.nanoTime();
            try (Admin admin = Admin.create(common)) {
                admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get();
            }
            Properties p = new Properties();
            p.putAll(common);
            p.put("key.serializer", StringSerializer.class.getName());
            p.put("value.serializer", StringSerializer.class.getName());
            p.put("max.request.size", "2000000");
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
                List<Future<RecordMetadata>> sent = new ArrayList<>();
                for (int i = 0; i < partitions * perPartition; i++) {
                    sent.add(producer.send(new ProducerRecord<>(topic, i % partitions, null, sized(i, size))));
                }
                for (Future<RecordMetadata> f : sent) {
                    f.get();
                }
            }
            Properties limits = new Properties();
            limits.putAll(common);
            limits.put("fetch.max.bytes", Integer.toString(c[3]));
            limits.put("max.partition.fetch.bytes", Integer.toString(c[4]));
            String what = "fetch.max.bytes=" + c[3] + " max.partition.fetch.bytes=" + c[4];
            try (KafkaConsumer<String, String> consumer = reader(limits, topic, partitions, "read_uncommitted")) {
                List<String> values = readValues(consumer, partitions * perPartition);
                check(values.size() == partitions * perPartition,
                    what + ": read " + values.size() + " of " + partitions * perPartition);
                Map<Integer, Integer> lastPerPartition = new HashMap<>();
                for (String v : values) {
                    int i = Integer.parseInt(v.substring(0, 8));
                    check(v.equals(sized(i, size)), what + ": record " + i + " byte-exact");
                    int before = lastPerPartition.getOrDefault(i % partitions, i % partitions - partitions);
                    check(i == before + partitions, what + ": record " + i + " in order after " + before);
                    lastPerPartition.put(i % partitions, i);
                }
            }
            try (Admin admin = Admin.create(common)) {
                admin.deleteTopics(List.of(topic)).all().get();
            }
        }
    }

    /** A consumer assigned every partition of the topic from the beginning. */
    private static KafkaConsumer<String, String> reader(Properties common, String topic, int partitions, String isolation) {
        Properties c = new Properties();
        c.putAll(common);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("enable.auto.commit", "false");
        c.put("isolation.level", isolation);
        c.put("fetch.max.wait.ms", "100");
        KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c);
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < partitions; i++) {
            tps.add(new TopicPartition(topic, i));
        }
        consumer.assign(tps);
        consumer.seekToBeginning(tps);
        return consumer;
    }

    /** Polls until `expected` values arrived (or 20 s), then 500 ms more for anything extra. */
    private static List<String> readValues(KafkaConsumer<String, String> consumer, int expected) {
        List<String> values = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 20_000;
        while (values.size() < expected && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                values.add(r.value());
            }
        }
        long extra = System.currentTimeMillis() + 500;
        while (System.currentTimeMillis() < extra) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                values.add(r.value());
            }
        }
        return values;
    }

    private static Set<String> named(String prefix, int n) {
        Set<String> out = new java.util.TreeSet<>();
        for (int i = 0; i < n; i++) {
            out.add(prefix + "-" + i);
        }
        return out;
    }

    /** A transactional producer, initialized, with an open transaction holding PREFIX-0 on partition 0 and PREFIX-1 on partition 1. */
    private static KafkaProducer<String, String> openTransaction(Properties common, String id, String topic, String prefix) {
        KafkaProducer<String, String> producer = new KafkaProducer<>(txnProducerProps(common, id));
        producer.initTransactions();
        producer.beginTransaction();
        producer.send(new ProducerRecord<>(topic, 0, null, prefix + "-0"));
        producer.send(new ProducerRecord<>(topic, 1, null, prefix + "-1"));
        producer.flush();
        return producer;
    }

    /** Whether the exception or one of its causes says the producer was fenced. */
    private static boolean fenced(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof ProducerFencedException || t instanceof InvalidProducerEpochException) {
                return true;
            }
        }
        return false;
    }

    /**
     * The transactional producer: a committed, an aborted and another committed transaction
     * across 3 partitions; read_committed sees exactly the committed records, read_uncommitted
     * every data record. Each new producer with the same transactional.id fences the one
     * before, whose commit, writes and abort are refused and whose records never become
     * visible. Consume-transform-produce with the consumed offsets in the transaction
     * (sendOffsetsToTransaction with the subscribed consumer's group metadata), committed and
     * aborted; the subscription pays the broker's default 3 s initial rebalance delay.
     */
    private static void transactions(Properties common) throws Exception {
        String topic = "java-txn-" + System.nanoTime();
        String zombieTopic = "java-zombie-" + System.nanoTime();
        String in = "java-ctp-in-" + System.nanoTime();
        String out = "java-ctp-out-" + System.nanoTime();
        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1), new NewTopic(zombieTopic, 2, (short) 1),
                new NewTopic(in, 3, (short) 1), new NewTopic(out, 3, (short) 1))).all().get();
        }

        // Commit, abort, commit: 10 records per partition each.
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(txnProducerProps(common, "java-tx-" + System.nanoTime()))) {
            producer.initTransactions();
            for (String prefix : List.of("c0", "a", "c1")) {
                producer.beginTransaction();
                for (int i = 0; i < 30; i++) {
                    producer.send(new ProducerRecord<>(topic, i % 3, "k" + i, prefix + "-" + i));
                }
                if (prefix.equals("a")) {
                    producer.flush();
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                }
            }
        }
        Set<String> committed = new java.util.TreeSet<>(named("c0", 30));
        committed.addAll(named("c1", 30));
        Set<String> everything = new java.util.TreeSet<>(committed);
        everything.addAll(named("a", 30));
        try (KafkaConsumer<String, String> rc = reader(common, topic, 3, "read_committed")) {
            List<String> got = readValues(rc, 60);
            check(new java.util.TreeSet<>(got).equals(committed) && got.size() == 60,
                "read_committed reads exactly the 60 committed records once, got " + got.size() + ": " + got);
            for (int p = 0; p < 3; p++) {
                TopicPartition tp = new TopicPartition(topic, p);
                // 30 data records and 3 markers per partition; no transaction is open, so the
                // last stable offset is the end of the log and the reader's position reached it.
                long end = rc.endOffsets(List.of(tp)).get(tp);
                check(end == 33, "partition " + p + ": 30 records and 3 control records end at 33, got " + end);
                check(rc.position(tp) == 33, "partition " + p + ": read_committed position at the end, got " + rc.position(tp));
            }
        }
        try (KafkaConsumer<String, String> ru = reader(common, topic, 3, "read_uncommitted")) {
            List<String> got = readValues(ru, 90);
            check(new java.util.TreeSet<>(got).equals(everything) && got.size() == 90,
                "read_uncommitted reads all 90 data records once, got " + got.size() + ": " + got);
        }

        // Zombie fencing, two generations of one transactional.id. Each new producer's
        // initTransactions bumps the epoch and aborts the open transaction of the one before:
        // the first zombie's commit is then refused by the coordinator (EndTxn with an old
        // epoch); the second zombie's write is refused by the partition (Produce with an old
        // epoch) and its abort by the coordinator.
        String id = "java-zombie-" + System.nanoTime();
        KafkaProducer<String, String> first = openTransaction(common, id, zombieTopic, "zombie-a");
        KafkaProducer<String, String> second = null;
        try {
            second = openTransaction(common, id, zombieTopic, "zombie-b");
            try {
                first.commitTransaction();
                check(false, "the fenced producer's commit must fail");
            } catch (org.apache.kafka.common.KafkaException e) {
                check(fenced(e), "the fenced producer's commit fails with ProducerFencedException, got " + e);
            }
            try (KafkaProducer<String, String> successor = new KafkaProducer<>(txnProducerProps(common, id))) {
                successor.initTransactions();
                successor.beginTransaction();
                successor.send(new ProducerRecord<>(zombieTopic, 0, null, "successor-0"));
                successor.commitTransaction();
            }
            Future<RecordMetadata> late = second.send(new ProducerRecord<>(zombieTopic, 1, null, "zombie-late"));
            try {
                RecordMetadata md = late.get();
                check(false, "the fenced producer's late write must fail, it was written at offset " + md.offset());
            } catch (ExecutionException e) {
                check(fenced(e), "the fenced producer's late write fails with InvalidProducerEpochException, got " + e.getCause());
            }
            try {
                second.commitTransaction();
                check(false, "a commit after a refused write must fail");
            } catch (org.apache.kafka.common.KafkaException e) {
                check(fenced(e), "the commit fails with the refused write's error, got " + e);
            }
            try {
                second.abortTransaction();
                check(false, "the fenced producer's abort must fail");
            } catch (org.apache.kafka.common.KafkaException e) {
                check(fenced(e), "the fenced producer's abort fails with ProducerFencedException, got " + e);
            }
        } finally {
            first.close(Duration.ZERO);
            if (second != null) {
                second.close(Duration.ZERO);
            }
        }
        try (KafkaConsumer<String, String> rc = reader(common, zombieTopic, 2, "read_committed")) {
            List<String> got = readValues(rc, 1);
            check(got.equals(List.of("successor-0")), "read_committed sees only the successor's record, got " + got);
        }
        try (KafkaConsumer<String, String> ru = reader(common, zombieTopic, 2, "read_uncommitted")) {
            List<String> got = readValues(ru, 5);
            Set<String> logged = Set.of("zombie-a-0", "zombie-a-1", "zombie-b-0", "zombie-b-1", "successor-0");
            check(new java.util.TreeSet<>(got).equals(logged) && got.size() == 5,
                "the log holds the zombies' flushed (aborted) records and the successor's, not the refused write; got " + got);
        }

        consumeTransformProduce(common, in, out);
    }

    private static void consumeTransformProduce(Properties common, String in, String out) throws Exception {
        String group = "java-ctp-" + System.nanoTime();
        Properties p = new Properties();
        p.putAll(common);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> plain = new KafkaProducer<>(p)) {
            for (int i = 0; i < 30; i++) {
                plain.send(new ProducerRecord<>(in, i % 3, null, "v" + i));
            }
            plain.flush();
        }
        Properties c = new Properties();
        c.putAll(common);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("group.id", group);
        c.put("enable.auto.commit", "false");
        c.put("auto.offset.reset", "earliest");
        c.put("isolation.level", "read_committed");
        c.put("fetch.max.wait.ms", "100");
        Map<TopicPartition, Long> expectedOffsets = new HashMap<>();
        for (int i = 0; i < 3; i++) {
            expectedOffsets.put(new TopicPartition(in, i), 10L);
        }
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c);
             KafkaProducer<String, String> producer = new KafkaProducer<>(txnProducerProps(common, "java-ctp-" + System.nanoTime()));
             Admin admin = Admin.create(common)) {
            producer.initTransactions();
            consumer.subscribe(List.of(in));
            // Round 1, committed: all 30 input records, transformed, with their offsets.
            transformRound(consumer, producer, out, 30, true);
            Map<TopicPartition, Long> offsets = new HashMap<>();
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                .forEach((tp, om) -> offsets.put(tp, om.offset()));
            check(offsets.equals(expectedOffsets), "the transaction committed the group's offsets: " + offsets);

            // Round 2, aborted: 3 more input records; neither their output nor their offsets stay.
            try (KafkaProducer<String, String> plain = new KafkaProducer<>(p)) {
                for (int i = 30; i < 33; i++) {
                    plain.send(new ProducerRecord<>(in, i % 3, null, "v" + i));
                }
                plain.flush();
            }
            transformRound(consumer, producer, out, 3, false);
            offsets.clear();
            admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get()
                .forEach((tp, om) -> offsets.put(tp, om.offset()));
            check(offsets.equals(expectedOffsets), "an aborted transaction leaves the group's offsets alone: " + offsets);
        }
        Set<String> expected = new java.util.TreeSet<>();
        for (int i = 0; i < 30; i++) {
            expected.add("out-v" + i);
        }
        try (KafkaConsumer<String, String> rc = reader(common, out, 3, "read_committed")) {
            List<String> got = readValues(rc, 30);
            check(new java.util.TreeSet<>(got).equals(expected) && got.size() == 30,
                "read_committed output: each committed transformation once, no aborted one, got " + got.size() + ": " + got);
        }
    }

    /** Reads `n` records from the group consumer and writes their transformation in one transaction with their offsets. */
    private static void transformRound(KafkaConsumer<String, String> consumer, KafkaProducer<String, String> producer,
                                       String out, int n, boolean commit) {
        List<ConsumerRecord<String, String>> read = new ArrayList<>();
        long deadline = System.currentTimeMillis() + 30_000;
        while (read.size() < n && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                read.add(r);
            }
        }
        check(read.size() == n, "the group consumer read " + read.size() + " of " + n);
        producer.beginTransaction();
        Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
        for (ConsumerRecord<String, String> r : read) {
            producer.send(new ProducerRecord<>(out, r.partition(), null, "out-" + r.value()));
            next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
        }
        producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
        if (commit) {
            producer.commitTransaction();
        } else {
            producer.flush();
            producer.abortTransaction();
        }
    }
}
