package sluice.platform;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The clients' side of the MirrorMaker 2 check (tests/platform/run.sh runs MirrorMaker between two
 * Sluice brokers). Records are keyed "key-I" with value "record-I", I counting from 0.
 * Usage:
 *   Mirror seed SOURCE TOPIC GROUP N      create TOPIC (2 partitions), produce records 0..N-1, consume
 *                                        them all in GROUP and commit
 *   Mirror produce SOURCE TOPIC FROM TO   produce records FROM..TO-1
 *   Mirror replicated TARGET TOPIC N      wait until TOPIC on the target holds records 0..N-1 exactly
 *   Mirror synced TARGET GROUP TOPIC N    wait until GROUP's committed offsets on TOPIC sum to N
 *   Mirror resume TARGET GROUP TOPIC FROM TO  consume in GROUP: exactly records FROM..TO-1 arrive
 */
public final class Mirror {
    private static final long DEADLINE_MS = 90_000;

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    public static void main(String[] args) throws Exception {
        Properties common = new Properties();
        common.put("bootstrap.servers", args[1]);
        switch (args[0]) {
            case "seed" -> seed(common, args[2], args[3], Integer.parseInt(args[4]));
            case "produce" -> produce(common, args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]));
            case "replicated" -> replicated(common, args[2], Integer.parseInt(args[3]));
            case "synced" -> synced(common, args[2], args[3], Integer.parseInt(args[4]));
            case "resume" -> resume(common, args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]));
            default -> throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    private static void seed(Properties common, String topic, String group, int n) throws Exception {
        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all().get();
        }
        produce(common, topic, 0, n);
        List<String> seen = consume(common, group, topic, n, true);
        check(seen.size() == n, "seed consumed " + seen.size() + " of " + n);
    }

    private static void produce(Properties common, String topic, int from, int to) throws Exception {
        Properties p = new Properties();
        p.putAll(common);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = from; i < to; i++) {
                producer.send(new ProducerRecord<>(topic, "key-" + i, "record-" + i)).get();
            }
        }
    }

    /** Consumes in the group until `n` records arrived (or the deadline), committing when asked. */
    private static List<String> consume(Properties common, String group, String topic, int n, boolean commit) {
        Properties c = consumerConfig(common);
        c.put("group.id", group);
        List<String> seen = new ArrayList<>();
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            consumer.subscribe(List.of(topic));
            while (seen.size() < n && System.currentTimeMillis() < deadline) {
                consumer.poll(Duration.ofMillis(200)).forEach(r -> seen.add(r.value()));
            }
            // Anything more than n would be a record from before the group's committed offsets.
            consumer.poll(Duration.ofMillis(1000)).forEach(r -> seen.add(r.value()));
            if (commit) {
                consumer.commitSync();
            }
        }
        return seen;
    }

    private static Properties consumerConfig(Properties common) {
        Properties c = new Properties();
        c.putAll(common);
        c.put("auto.offset.reset", "earliest");
        c.put("enable.auto.commit", "false");
        // MirrorMaker creates the mirrored topic with the source's partition count; asking for
        // its metadata must not create it first.
        c.put("allow.auto.create.topics", "false");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        return c;
    }

    private static void replicated(Properties common, String topic, int n) throws Exception {
        Properties c = consumerConfig(common);
        Map<Integer, List<ConsumerRecord<String, String>>> byPartition = new TreeMap<>();
        int count = 0;
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(c)) {
            while (consumer.partitionsFor(topic, Duration.ofSeconds(5)).isEmpty() && System.currentTimeMillis() < deadline) {
                Thread.sleep(200);
            }
            List<TopicPartition> partitions = consumer.partitionsFor(topic).stream()
                    .map(p -> new TopicPartition(topic, p.partition())).toList();
            check(partitions.size() == 2, topic + " has " + partitions.size() + " partitions, not 2");
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            while (count < n && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    byPartition.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
                    count++;
                }
            }
        }
        check(count == n, topic + " holds " + count + " records, not " + n);
        List<Integer> numbers = new ArrayList<>();
        for (List<ConsumerRecord<String, String>> records : byPartition.values()) {
            long offset = 0;
            for (ConsumerRecord<String, String> r : records) {
                // A fresh target: the mirrored partition has the source's offsets.
                check(r.offset() == offset++, "offset " + r.offset() + " in partition " + r.partition());
                int i = Integer.parseInt(r.value().substring("record-".length()));
                check(r.key().equals("key-" + i), "key " + r.key() + " for " + r.value());
                numbers.add(i);
            }
        }
        numbers.sort(null);
        for (int i = 0; i < n; i++) {
            check(numbers.get(i) == i, "record-" + i + " missing from " + topic);
        }
    }

    private static void synced(Properties common, String group, String topic, int n) throws Exception {
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        long sum = -1;
        Map<TopicPartition, OffsetAndMetadata> offsets = Map.of();
        try (Admin admin = Admin.create(common)) {
            while (sum != n && System.currentTimeMillis() < deadline) {
                offsets = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
                sum = offsets.entrySet().stream().filter(e -> e.getKey().topic().equals(topic))
                        .mapToLong(e -> e.getValue().offset()).sum();
                if (sum != n) {
                    Thread.sleep(250);
                }
            }
        }
        check(sum == n, "group " + group + " offsets on " + topic + " sum to " + sum + ", not " + n + ": " + offsets);
    }

    private static void resume(Properties common, String group, String topic, int from, int to) {
        List<String> seen = consume(common, group, topic, to - from, false);
        List<String> expected = new ArrayList<>();
        for (int i = from; i < to; i++) {
            expected.add("record-" + i);
        }
        List<String> sorted = new ArrayList<>(seen);
        sorted.sort(java.util.Comparator.comparingInt(v -> Integer.parseInt(v.substring("record-".length()))));
        check(sorted.equals(expected), "group " + group + " resumed with " + seen + ", expected " + expected);
    }
}
