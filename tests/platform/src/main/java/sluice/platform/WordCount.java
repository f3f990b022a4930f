package sluice.platform;

import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;

/**
 * Kafka Streams word count with exactly_once_v2 against Sluice. The text is split into words,
 * re-keyed by word (groupBy: a repartition topic) and counted (a compacted changelog topic). The
 * output topic, read with a read_committed consumer, must end with exactly the counts a plain Java
 * loop computes from the same text; the internal topics must exist with the configs Streams asked for.
 * Usage: WordCount BOOTSTRAP INPUT_FILE STATE_DIR
 */
public final class WordCount {
    private static final String APP = "wordcount";
    private static final String INPUT = "wordcount-input";
    private static final String OUTPUT = "wordcount-output";
    private static final String STORE = "counts";
    private static final long DEADLINE_MS = 90_000;

    private static void check(boolean ok, String what) {
        if (!ok) {
            throw new AssertionError(what);
        }
    }

    static List<String> words(String line) {
        return List.of(line.toLowerCase(Locale.ROOT).split("\\W+")).stream().filter(w -> !w.isEmpty()).toList();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        List<String> lines = Files.readAllLines(Path.of(args[1]));
        Map<String, Long> expected = new TreeMap<>();
        lines.forEach(line -> words(line).forEach(w -> expected.merge(w, 1L, Long::sum)));

        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);
        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(INPUT, 3, (short) 1), new NewTopic(OUTPUT, 3, (short) 1))).all().get();
        }
        produce(common, lines);

        KafkaStreams streams = new KafkaStreams(topology(), streamsConfig(bootstrap, args[2]));
        streams.setUncaughtExceptionHandler(e -> {
            e.printStackTrace();
            return org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        long start = System.nanoTime();
        streams.start();
        Map<String, Long> counts;
        try {
            counts = readCounts(common, expected, streams);
            checkInternalTopics(common);
        } finally {
            streams.close(Duration.ofSeconds(20));
        }
        check(counts.equals(expected), "final counts " + counts + " != expected " + expected);
        long total = expected.values().stream().mapToLong(Long::longValue).sum();
        System.out.printf("platform: streams: passed (exactly_once_v2, %d lines, %d words, %d distinct, counts exact after %.1f s)%n",
                lines.size(), total, expected.size(), (System.nanoTime() - start) / 1e9);
    }

    private static org.apache.kafka.streams.Topology topology() {
        StreamsBuilder builder = new StreamsBuilder();
        builder.stream(INPUT, org.apache.kafka.streams.kstream.Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(WordCount::words)
                .groupBy((key, word) -> word, Grouped.with("by-word", Serdes.String(), Serdes.String()))
                .count(Materialized.as(STORE))
                .toStream()
                .to(OUTPUT, Produced.with(Serdes.String(), Serdes.Long()));
        return builder.build();
    }

    private static Properties streamsConfig(String bootstrap, String stateDir) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, APP);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, "200");
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, "2");
        // Single-node broker: internal topics with one replica, as Sluice's default.
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, "1");
        p.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
        return p;
    }

    private static void produce(Properties common, List<String> lines) throws Exception {
        Properties p = new Properties();
        p.putAll(common);
        p.put("key.serializer", StringSerializer.class.getName());
        p.put("value.serializer", StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int i = 0; i < lines.size(); i++) {
                producer.send(new ProducerRecord<>(INPUT, "line-" + i, lines.get(i)));
            }
            producer.flush();
        }
    }

    /** Reads the output topic (read_committed) until the latest count of every word is the expected one. */
    private static Map<String, Long> readCounts(Properties common, Map<String, Long> expected, KafkaStreams streams) {
        Properties c = new Properties();
        c.putAll(common);
        c.put("group.id", "wordcount-verifier");
        c.put("isolation.level", "read_committed");
        c.put("auto.offset.reset", "earliest");
        c.put("key.deserializer", StringDeserializer.class.getName());
        c.put("value.deserializer", LongDeserializer.class.getName());
        Map<String, Long> latest = new TreeMap<>();
        long deadline = System.currentTimeMillis() + DEADLINE_MS;
        try (KafkaConsumer<String, Long> consumer = new KafkaConsumer<>(c)) {
            consumer.subscribe(List.of(OUTPUT));
            while (!latest.equals(expected) && System.currentTimeMillis() < deadline) {
                check(streams.state() != KafkaStreams.State.ERROR && streams.state() != KafkaStreams.State.PENDING_ERROR,
                        "streams failed: " + streams.state());
                for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(200))) {
                    Long before = latest.put(r.key(), r.value());
                    // Counts only grow: a smaller one would be an uncommitted (aborted) result.
                    check(before == null || r.value() > before, "count of " + r.key() + " went from " + before + " to " + r.value());
                }
            }
            // A little longer: anything after the exact counts would be a duplicate.
            for (ConsumerRecord<String, Long> r : consumer.poll(Duration.ofMillis(1500))) {
                latest.put(r.key(), r.value());
            }
        }
        return latest;
    }

    /** The repartition and changelog topics Streams created, with the configs it asked for. */
    private static void checkInternalTopics(Properties common) throws Exception {
        String repartition = APP + "-by-word-repartition";
        String changelog = APP + "-" + STORE + "-changelog";
        try (Admin admin = Admin.create(common)) {
            Set<String> names = admin.listTopics().names().get();
            check(names.contains(repartition) && names.contains(changelog), "internal topics in " + names);
            Map<ConfigResource, Config> configs = admin.describeConfigs(List.of(
                    new ConfigResource(ConfigResource.Type.TOPIC, repartition),
                    new ConfigResource(ConfigResource.Type.TOPIC, changelog))).all().get(30, TimeUnit.SECONDS);
            String changelogPolicy = configs.get(new ConfigResource(ConfigResource.Type.TOPIC, changelog)).get("cleanup.policy").value();
            check(changelogPolicy.equals("compact"), "changelog cleanup.policy " + changelogPolicy);
            String repartitionPolicy = configs.get(new ConfigResource(ConfigResource.Type.TOPIC, repartition)).get("cleanup.policy").value();
            check(repartitionPolicy.equals("delete"), "repartition cleanup.policy " + repartitionPolicy);
        }
    }
}
