package sluice;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * The Apache Kafka Java consumer across a batch damaged on disk while the broker was down, in
 * three steps that tests/java/run.sh runs around a stop and a restart of the broker:
 * {@code produce BOOTSTRAP} writes RECORDS records to one partition in small segments;
 * {@code damage DATA_DIR} flips a byte in the second batch of a sealed segment and prints its
 * offsets (first, and the offset after it); {@code consume BOOTSTRAP FIRST NEXT} checks what
 * the consumer gets: every record before the damaged batch, then a KafkaException from
 * {@code poll} at its offset, again on every poll, until it seeks past it; and, after
 * DeleteRecords moves the log start past it, a consumer left at the damaged offsets resets to
 * the new log start by {@code auto.offset.reset}. Exits non-zero on the first mismatch.
 */
public final class DamagedBatchTest {
    private static final String TOPIC = "java-damaged";
    private static final int RECORDS = 600;
    /** Small segments, so that the partition has several sealed ones. */
    private static final String SEGMENT_BYTES = "16384";

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    private static String value(long offset) {
        return String.format("record-%05d-%s", offset, "x".repeat(80));
    }

    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "produce" -> produce(args[1]);
            case "damage" -> damage(Path.of(args[1]));
            case "consume" -> consume(args[1], Long.parseLong(args[2]), Long.parseLong(args[3]));
            default -> throw new IllegalArgumentException("unknown step " + args[0]);
        }
    }

    private static Properties common(String bootstrap) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        return p;
    }

    /** RECORDS records at offsets 0.., sent ten at a time so that batches are small and many. */
    private static void produce(String bootstrap) throws Exception {
        try (Admin admin = Admin.create(common(bootstrap))) {
            admin.createTopics(List.of(new NewTopic(TOPIC, 1, (short) 1)
                .configs(Map.of("segment.bytes", SEGMENT_BYTES)))).all().get();
        }
        Properties p = common(bootstrap);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        p.put("linger.ms", "0");
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < RECORDS; i++) {
                producer.send(new ProducerRecord<>(TOPIC, 0, null, value(i)));
                if (i % 10 == 9) {
                    producer.flush();
                }
            }
            producer.flush();
        }
    }

    /** Flips a byte of the second batch's records (the CRC covers them) in the second segment. */
    private static void damage(Path dataDir) throws IOException {
        List<Path> segments;
        try (Stream<Path> files = Files.list(dataDir.resolve(TOPIC + "-0"))) {
            segments = files.filter(f -> f.toString().endsWith(".log")).sorted().toList();
        }
        check(segments.size() >= 3, "several segments: " + segments);
        Path sealed = segments.get(1);
        byte[] bytes = Files.readAllBytes(sealed);
        ByteBuffer buf = ByteBuffer.wrap(bytes);
        int second = 12 + buf.getInt(8);
        long first = buf.getLong(second);
        int length = 12 + buf.getInt(second + 8);
        int lastOffsetDelta = buf.getInt(second + 23);
        bytes[second + length - 2] ^= 0x04;
        Files.write(sealed, bytes);
        System.out.println(first + " " + (first + lastOffsetDelta + 1));
    }

    private static KafkaConsumer<String, String> consumer(String bootstrap, String reset) {
        Properties c = common(bootstrap);
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", StringDeserializer.class.getName());
        c.put("enable.auto.commit", "false");
        c.put("auto.offset.reset", reset);
        c.put("fetch.max.wait.ms", "100");
        return new KafkaConsumer<>(c);
    }

    /** Polls until `end` is reached or a poll throws; what was read, and what was thrown. */
    private static KafkaException readUntil(KafkaConsumer<String, String> consumer, long end,
                                            List<ConsumerRecord<String, String>> read) {
        long deadline = System.currentTimeMillis() + 30_000;
        while (System.currentTimeMillis() < deadline) {
            try {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(100))) {
                    read.add(r);
                }
            } catch (KafkaException e) {
                return e;
            }
            TopicPartition tp = new TopicPartition(TOPIC, 0);
            if (consumer.position(tp) >= end) {
                return null;
            }
        }
        throw new AssertionError("neither an error nor offset " + end + " within 30 s; read " + read.size());
    }

    /** The records read are exactly offsets from..to-1, with their values. */
    private static void checkRecords(List<ConsumerRecord<String, String>> read, long from, long to, String what) {
        check(read.size() == to - from, what + ": " + read.size() + " records, expected " + (to - from));
        for (int i = 0; i < read.size(); i++) {
            ConsumerRecord<String, String> r = read.get(i);
            check(r.offset() == from + i && r.value().equals(value(from + i)),
                what + ": offset " + r.offset() + " at " + i + ", expected " + (from + i));
        }
    }

    private static void consume(String bootstrap, long first, long next) throws Exception {
        TopicPartition tp = new TopicPartition(TOPIC, 0);
        String corrupt = "Encountered corrupt message when fetching offset " + first + " for topic-partition " + tp;
        try (KafkaConsumer<String, String> consumer = consumer(bootstrap, "earliest")) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> read = new ArrayList<>();
            KafkaException error = readUntil(consumer, RECORDS, read);
            check(error != null && corrupt.equals(error.getMessage()),
                "poll throws at the damaged batch: " + error);
            checkRecords(read, 0, first, "before the damaged batch");
            // The consumer stays at the damaged offset: every poll throws again.
            check(consumer.position(tp) == first, "position stays at " + first + ": " + consumer.position(tp));
            error = readUntil(consumer, RECORDS, read);
            check(error != null && corrupt.equals(error.getMessage()), "the next poll throws again: " + error);
            // The application moves on by seeking past the damaged range.
            consumer.seek(tp, next);
            read.clear();
            error = readUntil(consumer, RECORDS, read);
            check(error == null, "after the seek: " + error);
            checkRecords(read, next, RECORDS, "after the seek");
        }
        System.out.println("damaged batch: poll throws \"" + corrupt + "\"; a seek to " + next + " reads on");

        // The operator moves the log start past it: a consumer at the damaged offset gets
        // OFFSET_OUT_OF_RANGE and resets to the new log start (auto.offset.reset=earliest).
        try (Admin admin = Admin.create(common(bootstrap))) {
            long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(next)))
                .lowWatermarks().get(tp).get().lowWatermark();
            check(low == next, "DeleteRecords moves the log start to " + next + ": " + low);
        }
        try (KafkaConsumer<String, String> consumer = consumer(bootstrap, "earliest")) {
            consumer.assign(List.of(tp));
            check(consumer.beginningOffsets(List.of(tp)).get(tp) == next, "the log start is " + next);
            consumer.seek(tp, first);
            List<ConsumerRecord<String, String>> read = new ArrayList<>();
            KafkaException error = readUntil(consumer, RECORDS, read);
            check(error == null, "after DeleteRecords: " + error);
            checkRecords(read, next, RECORDS, "after DeleteRecords, reset to the log start");
        }
        System.out.println("damaged batch: after DeleteRecords to " + next + " the consumer resets there and reads on");
    }
}
