package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Comparator;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Online migration of a live group between the classic and the consumer protocol (KIP-848,
 * group.consumer.migration.policy=bidirectional), under produce load: 2 classic consumers over
 * 6 partitions are rolled one at a time to group.protocol=consumer (the group must become a
 * consumer group, with the classic member still in it), then rolled back to classic (the group
 * must become classic again). After each step every partition is owned by exactly one member;
 * at the end every produced record was consumed (at least once; duplicates are counted).
 * In the mixed phase the program prints "READY mixed" and waits (polling) for the file named by
 * its third argument, so the test can run kafka-consumer-groups.sh --describe meanwhile.
 * Args: bootstrap, name (topic and group), go-file.
 */
public final class MigrationCheck {
    static final long TIMEOUT_MS = 60_000;
    static final int PARTITIONS = 6;
    static String bootstrap;
    static Admin admin;
    static final Map<String, Integer> seen = new ConcurrentHashMap<>();

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        String name = args[1];
        Path go = Path.of(args[2]);
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        Checks c = new Checks();
        try (Admin a = Admin.create(ap)) {
            admin = a;
            c.section("migration-roll", () -> roll(name, go));
        }
        System.exit(c.exit());
    }

    static final class Member {
        final String protocol;
        final KafkaConsumer<byte[], byte[]> consumer;
        final Set<Integer> owned = new TreeSet<>();

        Member(String name, String protocol) {
            this.protocol = protocol;
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, name);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            p.put(ConsumerConfig.AUTO_COMMIT_INTERVAL_MS_CONFIG, "200");
            if (protocol.equals("classic")) {
                p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
                p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "300");
            }
            consumer = new KafkaConsumer<>(p);
            consumer.subscribe(List.of(name), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                    ps.forEach(tp -> owned.remove(tp.partition()));
                }
                public void onPartitionsLost(Collection<TopicPartition> ps) {
                    ps.forEach(tp -> owned.remove(tp.partition()));
                }
                public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                    ps.forEach(tp -> owned.add(tp.partition()));
                }
            });
        }

        void poll() {
            for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(20))) {
                seen.merge(new String(r.value(), StandardCharsets.UTF_8), 1, Integer::sum);
            }
        }

        void close() { consumer.close(Duration.ofSeconds(10)); }
    }

    /** Every partition owned by exactly one member, and every member owning some. */
    static boolean balanced(List<Member> members) {
        Set<Integer> all = new HashSet<>();
        int total = 0;
        for (Member m : members) {
            if (m.owned.isEmpty()) return false;
            all.addAll(m.owned);
            total += m.owned.size();
        }
        return all.size() == PARTITIONS && total == PARTITIONS;
    }

    static String owners(List<Member> members) {
        return members.stream().map(m -> m.protocol + m.owned).collect(Collectors.joining(" "));
    }

    static ConsumerGroupDescription describe(String name) throws Exception {
        return admin.describeConsumerGroups(List.of(name)).all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS).get(name);
    }

    /** Polls until the members own all partitions between them and the group is stable. */
    static ConsumerGroupDescription settle(List<Member> members, String what) throws Exception {
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        while (true) {
            for (Member m : members) m.poll();
            if (balanced(members)) {
                ConsumerGroupDescription d = describe(members.get(0).consumer.groupMetadata().groupId());
                if (d.groupState() == GroupState.STABLE && d.members().size() == members.size()) return d;
            }
            check(System.currentTimeMillis() < deadline, what + " never settled: " + owners(members));
        }
    }

    static void roll(String name, Path go) throws Exception {
        admin.createTopics(List.of(new NewTopic(name, PARTITIONS, (short) 1))).all()
                .get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
        AtomicBoolean producing = new AtomicBoolean(true);
        AtomicLong produced = new AtomicLong();
        Thread producer = new Thread(() -> {
            Properties pp = new Properties();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            pp.put(ProducerConfig.LINGER_MS_CONFIG, "5");
            try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
                long i = 0;
                while (producing.get()) {
                    String v = Long.toString(i++);
                    p.send(new ProducerRecord<>(name, v, v)).get();
                    produced.set(i);
                    if (i % 20 == 0) Thread.sleep(5);
                }
            } catch (Exception e) {
                throw new RuntimeException(e);
            }
        });
        producer.start();
        List<Member> members = new ArrayList<>();
        try {
            members.add(new Member(name, "classic"));
            members.add(new Member(name, "classic"));
            eq(GroupType.CLASSIC, settle(members, "2 classic members").type(), "group type at the start");

            // Upgrade: each classic member in turn leaves and a consumer-protocol member joins.
            for (int i = 0; i < 2; i++) {
                members.remove(0).close();
                settle(members, "upgrade step " + i + " (one member left)");
                members.add(new Member(name, "consumer"));
                ConsumerGroupDescription d = settle(members, "upgrade step " + i);
                eq(GroupType.CONSUMER, d.type(), "group type after upgrade step " + i);
                if (i == 0) {
                    // Mixed: one classic member inside the consumer group (KIP-1099's
                    // upgraded=false), one of the consumer protocol (upgraded=true).
                    List<Optional<Boolean>> types = d.members().stream().map(MemberDescription::upgraded)
                            .sorted(Comparator.comparing(Object::toString)).collect(Collectors.toList());
                    eq(List.of(Optional.of(false), Optional.of(true)), types, "member types in the mixed group");
                    System.out.println("READY mixed");
                    System.out.flush();
                    long deadline = System.currentTimeMillis() + TIMEOUT_MS;
                    while (!Files.exists(go)) {
                        check(System.currentTimeMillis() < deadline, "the test never went on");
                        for (Member m : members) m.poll();
                        check(balanced(members), "a partition lost its owner in the mixed group: " + owners(members));
                    }
                }
            }
            System.out.println("UPGRADED " + describe(name));

            // Downgrade: each consumer-protocol member in turn leaves and a classic member joins.
            for (int i = 0; i < 2; i++) {
                members.remove(0).close();
                settle(members, "downgrade step " + i + " (one member left)");
                members.add(new Member(name, "classic"));
                ConsumerGroupDescription d = settle(members, "downgrade step " + i);
                eq(i == 0 ? GroupType.CONSUMER : GroupType.CLASSIC, d.type(),
                        "group type after downgrade step " + i);
            }
            System.out.println("DOWNGRADED " + describe(name));

            producing.set(false);
            producer.join(TIMEOUT_MS);
            long total = produced.get();
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (true) {
                long missing = 0;
                for (long v = 0; v < total; v++) if (!seen.containsKey(Long.toString(v))) missing++;
                if (missing == 0) break;
                check(System.currentTimeMillis() < deadline, missing + " of " + total + " records never consumed");
                for (Member m : members) m.poll();
            }
            long duplicates = seen.values().stream().mapToLong(n -> n - 1).sum();
            System.out.printf("RECORDS produced=%d duplicates=%d%n", total, duplicates);
        } finally {
            producing.set(false);
            for (Member m : members) m.close();
        }
    }
}
