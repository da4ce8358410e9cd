package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListShareGroupOffsetsSpec;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.SharePartitionOffsetInfo;
import org.apache.kafka.clients.admin.ShareGroupDescription;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Share groups (KIP-932) with the Java KafkaShareConsumer and Admin, in one JVM (consumers as
 * threads). Args: bootstrap, name prefix, phase. Phase "main" runs the sections below and
 * leaves state for phase "after-restart", which the test runs after restarting the broker
 * (the broker runs with group.share.record.lock.duration.ms=2000 and
 * group.share.delivery.count.limit=3).
 *
 * - split: 3 share consumers on one partition (share.auto.offset.reset=latest: the records
 *   are produced once the group's share-partition started) divide 300 records, each getting
 *   some, no delivery of a record twice.
 * - redelivery: a consumer that stops polling with records acquired (it "died") has them
 *   delivered to another after the acquisition lock expires, with delivery count 2.
 * - reject-release: REJECTed records are never delivered again, a RELEASEd one is at once.
 * - delivery-limit: a record released at every delivery is archived after the third one.
 * - describe: describeShareGroups and listShareGroupOffsets.
 * - restart-before / restart-after: 5 of 10 records accepted and 5 released before a broker
 *   restart; afterwards the group gets exactly the 5 released ones, with delivery count 2.
 */
public final class ShareCheck {
    static String bootstrap;
    static String prefix;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        prefix = args[1];
        String phase = args[2];
        Checks c = new Checks();
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            if (phase.equals("main")) {
                c.section("split", () -> split(admin));
                c.section("redelivery", () -> redelivery(admin));
                c.section("reject-release", () -> rejectRelease(admin));
                c.section("delivery-limit", () -> deliveryLimit(admin));
                c.section("describe", () -> describe(admin));
                c.section("restart-before", () -> restartBefore(admin));
                c.section("console-setup", () -> consoleSetup(admin));
            } else {
                c.section("restart-after", () -> restartAfter(admin));
            }
        }
        System.exit(c.exit());
    }

    static KafkaShareConsumer<String, String> consumer(String group, boolean explicit, int maxPollRecords) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("group.id", group);
        p.put("max.poll.records", String.valueOf(maxPollRecords));
        p.put("share.acknowledgement.mode", explicit ? "explicit" : "implicit");
        return new KafkaShareConsumer<>(p, new StringDeserializer(), new StringDeserializer());
    }

    static KafkaProducer<String, String> producer() {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.LINGER_MS_CONFIG, "0");
        return new KafkaProducer<>(p, new StringSerializer(), new StringSerializer());
    }

    static String topic(Admin admin, String name) throws Exception {
        String t = prefix + "-" + name;
        admin.createTopics(List.of(new NewTopic(t, 1, (short) 1))).all().get();
        return t;
    }

    /** Produces values name-0..name-(n-1), flushing every `per` records (so several batches). */
    static void produce(String topic, String name, int n, int per) throws Exception {
        try (KafkaProducer<String, String> p = producer()) {
            for (int i = 0; i < n; i++) {
                p.send(new ProducerRecord<>(topic, name + "-" + i));
                if ((i + 1) % per == 0) p.flush();
            }
            p.flush();
        }
    }

    /** The group's start offset of partition 0 of `topic`, or -1 before it has one. */
    static long startOffset(Admin admin, String group, String topic) throws Exception {
        TopicPartition tp = new TopicPartition(topic, 0);
        Map<TopicPartition, SharePartitionOffsetInfo> m = admin
                .listShareGroupOffsets(Map.of(group, new ListShareGroupOffsetsSpec().topicPartitions(List.of(tp))))
                .partitionsToOffsetInfo(group).get();
        SharePartitionOffsetInfo info = m.get(tp);
        return info == null ? -1 : info.startOffset();
    }

    /** startOffset, or -1 while the broker answers a retriable error (the state topic of a
     *  new cluster may take a moment to be led). */
    static long startedOrRetriable(Admin admin, String group, String topic) throws Exception {
        try {
            return startOffset(admin, group, topic);
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof org.apache.kafka.common.errors.RetriableException) return -1;
            throw e;
        }
    }

    /** Starts `group` at offset 0 of `topic` (AlterShareGroupOffsets; the group is empty). */
    static void fromStart(Admin admin, String group, String topic) throws Exception {
        admin.alterShareGroupOffsets(group, Map.of(new TopicPartition(topic, 0), 0L)).partitionResult(
                new TopicPartition(topic, 0)).get();
    }

    static void split(Admin admin) throws Exception {
        String t = topic(admin, "split");
        String g = prefix + "-split";
        int n = 300;
        AtomicBoolean stop = new AtomicBoolean();
        AtomicBoolean dup = new AtomicBoolean(); // a record delivered twice in one delivery
        List<Map<String, Integer>> seen = new ArrayList<>();
        List<Thread> threads = new ArrayList<>();
        List<Throwable> errors = Collections.synchronizedList(new ArrayList<>());
        for (int i = 0; i < 3; i++) {
            Map<String, Integer> mine = new ConcurrentHashMap<>();
            seen.add(mine);
            Thread th = new Thread(() -> {
                try (KafkaShareConsumer<String, String> cons = consumer(g, false, 10)) {
                    cons.subscribe(List.of(t));
                    while (!stop.get()) {
                        for (ConsumerRecord<String, String> r : cons.poll(Duration.ofMillis(200))) {
                            // value -> the delivery counts it was seen with, as bits
                            mine.merge(r.value(), 1 << r.deliveryCount().orElse((short) 0), (a, b) -> {
                                dup.set(dup.get() || (a & b) != 0);
                                return a | b;
                            });
                        }
                        Thread.sleep(20); // work on the records, so the others get turns
                    }
                } catch (Throwable e) {
                    errors.add(e);
                }
            });
            th.start();
            threads.add(th);
        }
        long deadline = System.currentTimeMillis() + 60_000;
        while (startedOrRetriable(admin, g, t) < 0) {
            check(System.currentTimeMillis() < deadline && errors.isEmpty(),
                    "the share-partition never started; consumer errors: " + errors);
            Thread.sleep(100);
        }
        produce(t, "split", n, 10);
        while (seen.stream().mapToInt(Map::size).sum() < n && System.currentTimeMillis() < deadline && errors.isEmpty()) {
            Thread.sleep(100);
        }
        stop.set(true);
        for (Thread th : threads) th.join(30_000);
        check(errors.isEmpty(), "consumer failed: " + errors);
        // A record is delivered again only when its 2 s acquisition lock expired before the
        // consumer's acknowledgement arrived (a stalled JVM on a loaded machine): then with a
        // higher delivery count. The same delivery twice would be a broker bug.
        check(!dup.get(), "a record was delivered twice with the same delivery count");
        Map<String, Integer> counts = new HashMap<>();
        for (Map<String, Integer> m : seen) {
            check(!m.isEmpty(), "a consumer got no records: " + sizes(seen));
            m.forEach((k, v) -> counts.merge(k, v, (a, b) -> {
                if ((a & b) != 0) dup.set(true);
                return a | b;
            }));
        }
        check(!dup.get(), "two consumers got the same delivery of a record");
        eq(n, counts.size(), "distinct records delivered " + sizes(seen));
        long redelivered = counts.values().stream().filter(v -> Integer.bitCount(v) > 1).count();
        System.out.println("split: " + sizes(seen) + ", redelivered after a lock expired: " + redelivered);
    }

    static String sizes(List<Map<String, Integer>> seen) {
        List<Integer> s = new ArrayList<>();
        for (Map<String, Integer> m : seen) s.add(m.size());
        return s.toString();
    }

    /** Polls until `want` records arrived or `ms` passed, acknowledging them as `ack` says. */
    static List<ConsumerRecord<String, String>> pollFor(KafkaShareConsumer<String, String> cons, int want, long ms,
                                                        AcknowledgeType ack) {
        List<ConsumerRecord<String, String>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + ms;
        while (got.size() < want && System.currentTimeMillis() < deadline) {
            for (ConsumerRecord<String, String> r : cons.poll(Duration.ofMillis(200))) {
                got.add(r);
                if (ack != null) cons.acknowledge(r, ack);
            }
            if (ack != null) cons.commitSync();
        }
        return got;
    }

    static void redelivery(Admin admin) throws Exception {
        String t = topic(admin, "redeliver");
        String g = prefix + "-redeliver";
        fromStart(admin, g, t);
        produce(t, "redeliver", 10, 10);
        KafkaShareConsumer<String, String> dying = consumer(g, true, 100);
        dying.subscribe(List.of(t));
        List<ConsumerRecord<String, String>> first = pollFor(dying, 10, 30_000, null);
        eq(10, first.size(), "records acquired by the consumer that dies");
        for (ConsumerRecord<String, String> r : first) eq(Short.valueOf((short) 1), r.deliveryCount().orElse((short) -1), "first delivery count");
        // It "dies": it never polls, acknowledges or closes again (its session stays open).
        long died = System.currentTimeMillis();
        try (KafkaShareConsumer<String, String> other = consumer(g, true, 100)) {
            other.subscribe(List.of(t));
            List<ConsumerRecord<String, String>> again = pollFor(other, 10, 30_000, AcknowledgeType.ACCEPT);
            long after = System.currentTimeMillis() - died;
            eq(10, again.size(), "records redelivered");
            for (ConsumerRecord<String, String> r : again) eq(Short.valueOf((short) 2), r.deliveryCount().orElse((short) -1), "redelivered count");
            check(after >= 1500, "redelivered after " + after + " ms, before the 2000 ms lock expired");
            System.out.println("redelivery: after " + after + " ms");
        }
        dying.close(Duration.ofSeconds(5));
    }

    static void rejectRelease(Admin admin) throws Exception {
        String t = topic(admin, "reject");
        String g = prefix + "-reject";
        fromStart(admin, g, t);
        produce(t, "reject", 10, 10);
        try (KafkaShareConsumer<String, String> cons = consumer(g, true, 100)) {
            cons.subscribe(List.of(t));
            List<ConsumerRecord<String, String>> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 30_000;
            while (got.size() < 10 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : cons.poll(Duration.ofMillis(200))) {
                    got.add(r);
                    // evens accepted, odds rejected, except 9, released
                    AcknowledgeType a = r.offset() == 9 ? AcknowledgeType.RELEASE
                            : r.offset() % 2 == 0 ? AcknowledgeType.ACCEPT : AcknowledgeType.REJECT;
                    cons.acknowledge(r, a);
                }
                cons.commitSync();
            }
            eq(10, got.size(), "first deliveries");
            // Only the released record comes back, and nothing else within two lock durations.
            List<ConsumerRecord<String, String>> again = pollFor(cons, 2, 4_500, AcknowledgeType.ACCEPT);
            List<Long> offsets = new ArrayList<>();
            for (ConsumerRecord<String, String> r : again) offsets.add(r.offset());
            eq(List.of(9L), offsets, "redelivered offsets");
            eq(Short.valueOf((short) 2), again.get(0).deliveryCount().orElse((short) -1), "released record's count");
        }
        eq(10L, startOffset(admin, g, t), "start offset after every record was settled");
    }

    static void deliveryLimit(Admin admin) throws Exception {
        String t = topic(admin, "limit");
        String g = prefix + "-limit";
        fromStart(admin, g, t);
        produce(t, "limit", 1, 1);
        List<Short> counts = new ArrayList<>();
        try (KafkaShareConsumer<String, String> cons = consumer(g, true, 100)) {
            cons.subscribe(List.of(t));
            long deadline = System.currentTimeMillis() + 8_000;
            while (System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : cons.poll(Duration.ofMillis(200))) {
                    counts.add(r.deliveryCount().orElse((short) -1));
                    cons.acknowledge(r, AcknowledgeType.RELEASE);
                }
                cons.commitSync();
                if (counts.size() >= 3) break;
            }
            // Nothing more: the record was archived at the limit of 3.
            List<ConsumerRecord<String, String>> more = pollFor(cons, 1, 2_500, AcknowledgeType.ACCEPT);
            eq(0, more.size(), "deliveries after the limit");
        }
        eq(List.of((short) 1, (short) 2, (short) 3), counts, "delivery counts");
        eq(1L, startOffset(admin, g, t), "start offset past the archived record");
    }

    static void describe(Admin admin) throws Exception {
        String t = topic(admin, "describe");
        String g = prefix + "-describe";
        try (KafkaShareConsumer<String, String> cons = consumer(g, false, 100)) {
            cons.subscribe(List.of(t));
            long deadline = System.currentTimeMillis() + 30_000;
            ShareGroupDescription d;
            while (true) {
                cons.poll(Duration.ofMillis(100));
                d = admin.describeShareGroups(List.of(g)).describedGroups().get(g).get();
                if (d.members().size() == 1 && !d.members().iterator().next().assignment().topicPartitions().isEmpty()) break;
                check(System.currentTimeMillis() < deadline, "member never assigned: " + d);
            }
            eq("STABLE", d.groupState().name(), "state");
            eq(Set.of(new TopicPartition(t, 0)), d.members().iterator().next().assignment().topicPartitions(), "assignment");
            while (startOffset(admin, g, t) < 0) {
                cons.poll(Duration.ofMillis(100));
                check(System.currentTimeMillis() < deadline, "no start offset");
            }
            eq(0L, startOffset(admin, g, t), "start offset of an empty partition (latest)");
        }
    }

    static void restartBefore(Admin admin) throws Exception {
        String t = prefix + "-restart";
        admin.createTopics(List.of(new NewTopic(t, 1, (short) 1))).all().get();
        String g = prefix + "-restart";
        fromStart(admin, g, t);
        produce(t, "restart", 10, 10);
        try (KafkaShareConsumer<String, String> cons = consumer(g, true, 100)) {
            cons.subscribe(List.of(t));
            List<ConsumerRecord<String, String>> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + 30_000;
            while (got.size() < 10 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : cons.poll(Duration.ofMillis(200))) {
                    got.add(r);
                    cons.acknowledge(r, r.offset() < 5 ? AcknowledgeType.ACCEPT : AcknowledgeType.RELEASE);
                }
                cons.commitSync();
            }
            eq(10, got.size(), "records before the restart");
        }
        eq(5L, startOffset(admin, g, t), "start offset before the restart");
    }

    static void restartAfter(Admin admin) throws Exception {
        String t = prefix + "-restart";
        String g = prefix + "-restart";
        eq(5L, startOffset(admin, g, t), "start offset after the restart");
        try (KafkaShareConsumer<String, String> cons = consumer(g, true, 100)) {
            cons.subscribe(List.of(t));
            List<ConsumerRecord<String, String>> got = pollFor(cons, 5, 30_000, AcknowledgeType.ACCEPT);
            List<Long> offsets = new ArrayList<>();
            for (ConsumerRecord<String, String> r : got) {
                offsets.add(r.offset());
                eq(Short.valueOf((short) 2), r.deliveryCount().orElse((short) -1), "delivery count kept across the restart");
            }
            eq(List.of(5L, 6L, 7L, 8L, 9L), offsets, "offsets after the restart");
            List<ConsumerRecord<String, String>> more = pollFor(cons, 1, 1_000, AcknowledgeType.ACCEPT);
            eq(0, more.size(), "nothing else");
        }
        eq(10L, startOffset(admin, g, t), "start offset at the end");
    }

    /** A topic with 5 records and a group started at offset 0, for kafka-console-share-consumer. */
    static void consoleSetup(Admin admin) throws Exception {
        String t = topic(admin, "console");
        fromStart(admin, prefix + "-console", t);
        produce(t, "console", 5, 5);
    }
}
