package gregor.prototests;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;

/**
 * Share consumers through a leader failover (proto-tests/test_share_cluster.py). Args:
 * bootstrap, topic (one partition, `n` records already produced), group, n, consumers,
 * timeout seconds. The group is started at offset 0 (AlterShareGroupOffsets), then
 * `consumers` KafkaShareConsumers (threads, explicit acknowledgement) ACCEPT every record
 * they get, committing each poll's acknowledgements with commitSync. The test kills the
 * partition's leader while they run.
 *
 * Prints one line per event, in the order they happened (stdout is synchronized):
 * "D offset deliveryCount consumer" a delivery, "A offset consumer" an acknowledgement the
 * broker confirmed, "E offset consumer message" one that failed or went unanswered, "ERR
 * message" a consumer failure, and "DONE accepted" at the end: when all n are accepted, or
 * all are accepted or unanswered and nothing came for 2 s, or the time is up.
 */
public final class ShareFailoverCheck {
    static synchronized void emit(String line) {
        System.out.println(line);
        System.out.flush();
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = args[1];
        String group = args[2];
        int n = Integer.parseInt(args[3]);
        int consumers = Integer.parseInt(args[4]);
        long deadline = System.currentTimeMillis() + Long.parseLong(args[5]) * 1000;
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            TopicPartition tp = new TopicPartition(topic, 0);
            while (true) {
                try {
                    admin.alterShareGroupOffsets(group, Map.of(tp, 0L)).partitionResult(tp).get();
                    break;
                } catch (java.util.concurrent.ExecutionException e) {
                    // a state topic that is still being created answers a retriable error
                    if (!(e.getCause() instanceof org.apache.kafka.common.errors.RetriableException)
                            || System.currentTimeMillis() > deadline) throw e;
                    Thread.sleep(200);
                }
            }
        }
        emit("STARTED");
        Set<Long> accepted = ConcurrentHashMap.newKeySet();
        // accepted, or acknowledged without an answer (the leader died meanwhile)
        Set<Long> settled = ConcurrentHashMap.newKeySet();
        java.util.concurrent.atomic.AtomicLong lastDelivery = new java.util.concurrent.atomic.AtomicLong();
        AtomicBoolean stop = new AtomicBoolean();
        Thread[] threads = new Thread[consumers];
        for (int i = 0; i < consumers; i++) {
            final int id = i;
            threads[i] = new Thread(() -> {
                Properties p = new Properties();
                p.put("bootstrap.servers", bootstrap);
                p.put("group.id", group);
                p.put("max.poll.records", "10");
                p.put("share.acknowledgement.mode", "explicit");
                p.put("request.timeout.ms", "10000");
                try (KafkaShareConsumer<String, String> cons =
                        new KafkaShareConsumer<>(p, new StringDeserializer(), new StringDeserializer())) {
                    cons.subscribe(List.of(topic));
                    while (!stop.get()) {
                        ConsumerRecords<String, String> records;
                        try {
                            records = cons.poll(Duration.ofMillis(200));
                        } catch (KafkaException e) {
                            emit("ERR poll " + id + " " + e);
                            continue;
                        }
                        if (records.isEmpty()) continue;
                        lastDelivery.set(System.currentTimeMillis());
                        for (ConsumerRecord<String, String> r : records) {
                            emit("D " + r.offset() + " " + r.deliveryCount().orElse((short) -1) + " " + id);
                        }
                        // work on the records (holding them acquired), so that consumption
                        // lasts a while and the kill finds records acquired but not acknowledged
                        Thread.sleep(40);
                        for (ConsumerRecord<String, String> r : records) cons.acknowledge(r, AcknowledgeType.ACCEPT);
                        Map<TopicIdPartition, Optional<KafkaException>> result;
                        try {
                            result = cons.commitSync(Duration.ofSeconds(15));
                        } catch (KafkaException e) {
                            for (ConsumerRecord<String, String> r : records) {
                                settled.add(r.offset());
                                emit("E " + r.offset() + " " + id + " " + e);
                            }
                            continue;
                        }
                        Optional<KafkaException> outcome = result.values().stream().findFirst().orElse(Optional.empty());
                        for (ConsumerRecord<String, String> r : records) {
                            settled.add(r.offset());
                            if (result.isEmpty()) {
                                emit("E " + r.offset() + " " + id + " no acknowledgement result");
                            } else if (outcome.isPresent()) {
                                emit("E " + r.offset() + " " + id + " " + outcome.get());
                            } else {
                                accepted.add(r.offset());
                                emit("A " + r.offset() + " " + id);
                            }
                        }
                    }
                } catch (Throwable e) {
                    emit("ERR " + id + " " + e);
                }
            });
            threads[i].start();
        }
        // Until every record is accepted, or settled and nothing was delivered for 2 s (a
        // record whose acknowledgement went unanswered comes again unless the old leader
        // stored it).
        while (accepted.size() < n && System.currentTimeMillis() < deadline
                && !(settled.size() >= n && System.currentTimeMillis() - lastDelivery.get() > 2000)) {
            Thread.sleep(50);
        }
        stop.set(true);
        for (Thread th : threads) th.join(30_000);
        emit("DONE " + accepted.size());
        System.exit(0);
    }
}
