// The Java pieces of scripts/compare-kafka-cluster.sh, compiled there at run time against the
// kafka-clients jar (scripts/kafka/target/lib) and run against either broker:
//
//   wait-cluster BOOTSTRAP BROKERS TIMEOUT_S       until DescribeCluster lists BROKERS brokers
//   wait-isr BOOTSTRAP TOPIC REPLICAS TIMEOUT_S    until every partition of TOPIC has a leader
//                                                  and REPLICAS in-sync replicas
//   quorum-leader BOOTSTRAP                        the metadata quorum's leader (DescribeQuorum;
//                                                  -1 where the broker does not answer it)
//   failover BOOTSTRAP TOPIC PARTITION PID_DIR WARMUP_S TIMEOUT_S
//       An idempotent acks=all producer sends a 1 KiB record to PARTITION every millisecond.
//       After WARMUP_S seconds (acknowledgements flowing), it looks up the partition's leader
//       (Metadata through an Admin client), reads that broker's process id from
//       PID_DIR/node-<id>.pid and kills it (SIGKILL), then waits for the first successful
//       acknowledgement of a record sent after the kill. Prints one JSON object: the node
//       killed, failover_ms (kill to that acknowledgement) and errors (records that failed
//       after the client's retries, counted once everything queued has been sent). Sends stay
//       on their timetable through the outage (they queue in the client), so the figure's
//       resolution is 1 ms.
//
// Client settings that bound the figure: retry and reconnect back-off 50-100 ms (the client's
// defaults grow to 1 s), request.timeout.ms 10 s, linger.ms 0. A killed broker's sockets are
// closed by the kernel at once on loopback, so the client learns of the death immediately;
// what remains is the cluster fencing the dead broker and electing a new leader.
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ClusterBench {
    public static void main(String[] args) throws Exception {
        switch (args[0]) {
            case "wait-cluster" -> waitCluster(args[1], Integer.parseInt(args[2]), Integer.parseInt(args[3]));
            case "wait-isr" -> waitIsr(args[1], args[2], Integer.parseInt(args[3]), Integer.parseInt(args[4]));
            case "quorum-leader" -> System.out.println(quorumLeader(args[1]));
            case "failover" -> failover(args[1], args[2], Integer.parseInt(args[3]), Path.of(args[4]),
                    Integer.parseInt(args[5]), Integer.parseInt(args[6]));
            default -> throw new IllegalArgumentException("unknown command " + args[0]);
        }
    }

    static Admin admin(String bootstrap) {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("request.timeout.ms", "5000");
        props.put("default.api.timeout.ms", "5000");
        props.put("retry.backoff.ms", "50");
        props.put("retry.backoff.max.ms", "100");
        props.put("reconnect.backoff.ms", "50");
        props.put("reconnect.backoff.max.ms", "100");
        return Admin.create(props);
    }

    static void waitCluster(String bootstrap, int brokers, int timeoutS) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        String last = "no answer";
        try (Admin admin = admin(bootstrap)) {
            while (System.nanoTime() < deadline) {
                try {
                    int n = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
                    if (n >= brokers) return;
                    last = n + " brokers";
                } catch (Exception e) {
                    last = e.toString();
                }
                Thread.sleep(200);
            }
        }
        throw new IllegalStateException("the cluster never listed " + brokers + " brokers (last: " + last + ")");
    }

    static void waitIsr(String bootstrap, String topic, int replicas, int timeoutS) throws Exception {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutS);
        String last = "no answer";
        try (Admin admin = admin(bootstrap)) {
            while (System.nanoTime() < deadline) {
                try {
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames()
                            .get(5, TimeUnit.SECONDS).get(topic);
                    boolean ready = true;
                    for (TopicPartitionInfo p : d.partitions()) {
                        if (p.leader() == null || p.leader().id() < 0 || p.isr().size() < replicas) {
                            ready = false;
                            last = "partition " + p.partition() + " leader " + p.leader() + " isr " + p.isr();
                            break;
                        }
                    }
                    if (ready) return;
                } catch (Exception e) {
                    last = e.toString();
                }
                Thread.sleep(200);
            }
        }
        throw new IllegalStateException(topic + " not fully in sync in " + timeoutS + " s (last: " + last + ")");
    }

    static int quorumLeader(String bootstrap) {
        try (Admin admin = admin(bootstrap)) {
            return admin.describeMetadataQuorum().quorumInfo().get(5, TimeUnit.SECONDS).leaderId();
        } catch (Exception e) {
            return -1;
        }
    }

    static int partitionLeader(Admin admin, String topic, int partition) throws Exception {
        TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(5, TimeUnit.SECONDS).get(topic);
        return d.partitions().get(partition).leader().id();
    }

    static void failover(String bootstrap, String topic, int partition, Path pidDir, int warmupS, int timeoutS)
            throws Exception {
        Properties props = new Properties();
        props.put("bootstrap.servers", bootstrap);
        props.put("acks", "all");
        props.put("enable.idempotence", "true");
        props.put("linger.ms", "0");
        props.put("request.timeout.ms", "10000");
        props.put("delivery.timeout.ms", String.valueOf(Math.max(120_000, (timeoutS + 30) * 1000)));
        props.put("retry.backoff.ms", "50");
        props.put("retry.backoff.max.ms", "100");
        props.put("reconnect.backoff.ms", "50");
        props.put("reconnect.backoff.max.ms", "100");
        byte[] value = new byte[1024];
        AtomicLong acked = new AtomicLong();
        AtomicLong errors = new AtomicLong();
        AtomicLong killedAt = new AtomicLong(Long.MAX_VALUE); // System.nanoTime() of the kill
        AtomicLong firstAfter = new AtomicLong(Long.MAX_VALUE); // first ack of a record sent after it
        StringBuilder firstError = new StringBuilder();
        try (Admin admin = admin(bootstrap);
             KafkaProducer<byte[], byte[]> producer =
                     new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer())) {
            long start = System.nanoTime();
            long warmupEnd = start + TimeUnit.SECONDS.toNanos(warmupS);
            long deadline = Long.MAX_VALUE;
            int killed = -1;
            for (long i = 0; ; i++) {
                long due = start + TimeUnit.MILLISECONDS.toNanos(i);
                long now;
                while ((now = System.nanoTime()) < due) LockSupport.parkNanos(due - now);
                if (killed < 0 && now >= warmupEnd && acked.get() > 0) {
                    killed = partitionLeader(admin, topic, partition);
                    long pid = Long.parseLong(Files.readString(pidDir.resolve("node-" + killed + ".pid")).trim());
                    ProcessHandle process = ProcessHandle.of(pid).orElseThrow(
                            () -> new IllegalStateException("broker " + pid + " is not running"));
                    killedAt.set(System.nanoTime());
                    process.destroyForcibly(); // SIGKILL
                    deadline = killedAt.get() + TimeUnit.SECONDS.toNanos(timeoutS);
                    now = System.nanoTime();
                }
                if (firstAfter.get() != Long.MAX_VALUE || now > deadline) break;
                if (killed < 0 && now > warmupEnd + TimeUnit.SECONDS.toNanos(timeoutS)) {
                    throw new IllegalStateException("no acknowledgement in " + timeoutS + " s after the warm-up");
                }
                long sentAt = System.nanoTime();
                producer.send(new ProducerRecord<>(topic, partition, null, value), (metadata, e) -> {
                    if (e == null) {
                        acked.incrementAndGet();
                        if (sentAt > killedAt.get()) {
                            long at = System.nanoTime();
                            firstAfter.compareAndSet(Long.MAX_VALUE, at);
                        }
                    } else if (errors.incrementAndGet() == 1) {
                        synchronized (firstError) { firstError.append(e); }
                    }
                });
            }
            // Everything queued during the outage is delivered (or given up on) before counting
            // errors: a record that failed was given up on after the client's own retries.
            if (firstAfter.get() != Long.MAX_VALUE) producer.flush();
            producer.close(Duration.ofSeconds(1));
            String error;
            synchronized (firstError) { error = firstError.toString().replace("\\", "\\\\").replace("\"", "'"); }
            if (firstAfter.get() == Long.MAX_VALUE) {
                System.out.printf("{\"node\": %d, \"failover_ms\": null, \"errors\": %d, \"first_error\": \"%s\"}%n",
                        killed, errors.get(), error);
                System.exit(1);
            }
            System.out.printf("{\"node\": %d, \"failover_ms\": %.1f, \"errors\": %d, \"first_error\": \"%s\"}%n",
                    killed, (firstAfter.get() - killedAt.get()) / 1e6, errors.get(), error);
        }
    }
}
