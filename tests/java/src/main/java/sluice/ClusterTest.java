package sluice;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.Future;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Java client against a cluster of three Sluice brokers: the admin client sees three brokers
 * and a topic whose partitions are led by all of them (describeTopics goes through
 * DescribeTopicPartitions in Kafka 4's client); an idempotent acks=all producer bootstrapped from
 * the first broker writes every partition; a consumer bootstrapped from the second reads every
 * record once; a group of two bootstrapped from the third shares the partitions and commits; a
 * transactional producer writes every partition (so its markers and verifications cross brokers)
 * and commits offsets of a group in its transaction, then aborts a second transaction, and a
 * read_committed consumer sees exactly the committed one.
 * Usage: ClusterTest FIRST SECOND THIRD (host:port each). Exits non-zero on the first mismatch.
 */
public final class ClusterTest {
    private static final int PARTITIONS = 6;
    private static final int RECORDS = 1200;

    private static void check(boolean ok, String what) {
        if (!ok) {
            System.err.println("FAILED: " + what);
            System.exit(1);
        }
    }

    private static Properties bootstrap(String address) {
        Properties p = new Properties();
        p.put("bootstrap.servers", address);
        return p;
    }

    public static void main(String[] args) throws Exception {
        String topic = "java-cluster-" + System.nanoTime();
        try (Admin admin = Admin.create(bootstrap(args[0]))) {
            Set<Integer> ids = new HashSet<>();
            for (Node node : admin.describeCluster().nodes().get()) {
                ids.add(node.id());
            }
            check(ids.equals(Set.of(1, 2, 3)), "three brokers, got " + ids);
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get();
            Set<Integer> leaders = new HashSet<>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (leaders.size() < 3 && System.currentTimeMillis() < deadline) {
                leaders.clear();
                TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get().get(topic);
                for (TopicPartitionInfo p : d.partitions()) {
                    if (p.leader() != null) {
                        leaders.add(p.leader().id());
                        check(p.replicas().size() == 1 && p.replicas().get(0).id() == p.leader().id(),
                            "the leader is the one replica: " + p);
                    }
                }
                Thread.sleep(100);
            }
            check(leaders.equals(Set.of(1, 2, 3)), "partitions led by all three brokers, got " + leaders);
        }

        Properties p = bootstrap(args[0]);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("acks", "all");
        p.put("enable.idempotence", "true");
        p.put("linger.ms", "5");
        List<Future<RecordMetadata>> sent = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < RECORDS; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, i % PARTITIONS, "k" + i, "v" + i)));
            }
            producer.flush();
        }
        for (int i = 0; i < RECORDS; i++) {
            RecordMetadata md = sent.get(i).get();
            check(md.offset() == i / PARTITIONS, "consecutive offsets per partition: " + md);
        }

        Properties c = bootstrap(args[1]);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("enable.auto.commit", "false");
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < PARTITIONS; i++) {
            tps.add(new TopicPartition(topic, i));
        }
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            Set<String> seen = new HashSet<>();
            long deadline = System.currentTimeMillis() + 60_000;
            while (seen.size() < RECORDS && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    check(seen.add(r.value()), "read once: " + r.value());
                }
            }
            check(seen.size() == RECORDS, "read " + seen.size() + " of " + RECORDS);
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
            for (TopicPartition tp : tps) {
                check(ends.get(tp) == RECORDS / PARTITIONS, "end offset of " + tp + ": " + ends.get(tp));
            }
        }

        String group = "java-cluster-group-" + System.nanoTime();
        Properties g = bootstrap(args[2]);
        g.put("key.deserializer", StringDeserializer.class.getName());
        g.put("value.deserializer", StringDeserializer.class.getName());
        g.put("group.id", group);
        g.put("enable.auto.commit", "false");
        g.put("auto.offset.reset", "earliest");
        g.put("heartbeat.interval.ms", "500");
        List<KafkaConsumer<String, String>> members = List.of(new KafkaConsumer<>(g), new KafkaConsumer<>(g));
        try {
            for (KafkaConsumer<String, String> m : members) {
                m.subscribe(List.of(topic));
            }
            Set<String> seen = new HashSet<>();
            long deadline = System.currentTimeMillis() + 90_000;
            // Until every record is read and the group has settled with both members (the first
            // to join may read everything before the second arrives).
            while ((seen.size() < RECORDS || members.stream().anyMatch(m -> m.assignment().isEmpty()))
                    && System.currentTimeMillis() < deadline) {
                for (KafkaConsumer<String, String> m : members) {
                    for (ConsumerRecord<String, String> r : m.poll(Duration.ofMillis(100))) {
                        check(seen.add(r.value()), "read once in the group: " + r.value());
                    }
                    m.commitSync();
                }
            }
            check(seen.size() == RECORDS, "the group read " + seen.size() + " of " + RECORDS);
            int a = members.get(0).assignment().size();
            int b = members.get(1).assignment().size();
            check(a + b == PARTITIONS && a > 0 && b > 0, "both members own partitions: " + a + " + " + b);
        } finally {
            for (KafkaConsumer<String, String> m : members) {
                m.close();
            }
        }
        try (Admin admin = Admin.create(bootstrap(args[1]))) {
            Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            for (TopicPartition tp : tps) {
                check(offsets.get(tp) != null && offsets.get(tp).offset() == RECORDS / PARTITIONS,
                    "committed to the end of " + tp + ": " + offsets.get(tp));
            }
        }
        transactions(args, topic, tps);
        System.out.println("java client: all cluster checks passed");
    }

    /** One committed and one aborted transaction over every partition, across all brokers. */
    private static void transactions(String[] args, String topic, List<TopicPartition> tps)
            throws Exception {
        String group = "java-cluster-txn-group-" + System.nanoTime();
        Properties p = bootstrap(args[2]);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("transactional.id", "java-cluster-txn-" + System.nanoTime());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            producer.initTransactions();
            producer.beginTransaction();
            for (int i = 0; i < PARTITIONS; i++) {
                producer.send(new ProducerRecord<>(topic, i, "t", "committed-" + i));
            }
            Map<TopicPartition, OffsetAndMetadata> offsets = Map.of(tps.get(0), new OffsetAndMetadata(7));
            producer.sendOffsetsToTransaction(offsets, new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group));
            producer.commitTransaction();
            producer.beginTransaction();
            for (int i = 0; i < PARTITIONS; i++) {
                producer.send(new ProducerRecord<>(topic, i, "t", "aborted-" + i));
            }
            producer.flush();
            producer.abortTransaction();
        }
        Properties c = bootstrap(args[0]);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("isolation.level", "read_committed");
        c.put("enable.auto.commit", "false");
        Set<String> committed = new HashSet<>();
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + 60_000;
            // Past both transactions: the aborted one's records and markers included.
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    check(!r.value().startsWith("aborted"), "read_committed sees no aborted record: " + r);
                    if (r.value().startsWith("committed")) {
                        committed.add(r.value());
                    }
                }
                boolean past = true;
                Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
                for (TopicPartition tp : tps) {
                    past &= consumer.position(tp) >= ends.get(tp);
                }
                if (past && committed.size() == PARTITIONS) {
                    break;
                }
            }
        }
        check(committed.size() == PARTITIONS, "the committed transaction on every partition: " + committed);
        try (Admin admin = Admin.create(bootstrap(args[1]))) {
            OffsetAndMetadata o = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().get(tps.get(0));
            check(o != null && o.offset() == 7, "offsets committed in the transaction: " + o);
        }
    }
}
