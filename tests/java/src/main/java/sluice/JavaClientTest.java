package sluice;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
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
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Apache Kafka Java client (idempotent by default) against a running Sluice: admin
 * operations, produce with keys, headers and timestamps, consume with assign and seek, offsets
 * by timestamp. Exits non-zero on the first mismatch.
 */
public final class JavaClientTest {
    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
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
}
