package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * The Java consumer with group.protocol=consumer (KIP-848) against the classic protocol: 4
 * consumers over 12 partitions, three in this JVM and one in a child JVM ("victim" mode), which
 * is killed (SIGKILL: its session times out on the coordinator) and replaced; then a rolling
 * restart of all 4 (each closed, leaving the group, and replaced). A partition counts as paused
 * from its revocation (or loss, or its owner's death) until some member is assigned it; each
 * run prints "PAUSE protocol=... paused_partitions=... total_pause_ms=...".
 * Args: bootstrap, name prefix; or: victim, bootstrap, group (= topic), protocol.
 */
public final class ConsumerProtocolCheck {
    static final long TIMEOUT_MS = 60_000;
    static final int PARTITIONS = 12;
    static final int MEMBERS = 4;
    static String bootstrap;
    static Admin admin;

    public static void main(String[] args) throws Exception {
        if (args[0].equals("victim")) {
            bootstrap = args[1];
            Member m = new Member(args[2], args[2], args[3], new Pauses());
            while (true) m.poll();
        }
        bootstrap = args[0];
        String prefix = args[1];
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        Checks c = new Checks();
        try (Admin a = Admin.create(ap)) {
            admin = a;
            c.section("classic-rolling", () -> scenario(prefix + "-classic", "classic"));
            c.section("consumer-rolling", () -> scenario(prefix + "-consumer", "consumer"));
        }
        System.exit(c.exit());
    }

    /** Pauses over all members: when each revoked partition went away, and the totals. */
    static final class Pauses {
        final Map<Integer, Long> since = new HashMap<>();
        int paused = 0;
        long totalMs = 0;
        boolean counting = false;

        void revoked(Collection<TopicPartition> ps) {
            long now = System.currentTimeMillis();
            for (TopicPartition tp : ps) {
                if (since.putIfAbsent(tp.partition(), now) == null && counting) paused++;
            }
        }

        void assigned(Collection<TopicPartition> ps) {
            long now = System.currentTimeMillis();
            for (TopicPartition tp : ps) {
                Long t = since.remove(tp.partition());
                if (t != null && counting) totalMs += now - t;
            }
        }
    }

    static final class Member {
        final KafkaConsumer<byte[], byte[]> consumer;
        final Set<Integer> owned = new TreeSet<>();

        Member(String group, String topic, String protocol, Pauses pauses) {
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            if (protocol.equals("classic")) {
                p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
                p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
            }
            consumer = new KafkaConsumer<>(p);
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                    ps.forEach(tp -> owned.remove(tp.partition()));
                    pauses.revoked(ps);
                }
                public void onPartitionsLost(Collection<TopicPartition> ps) {
                    ps.forEach(tp -> owned.remove(tp.partition()));
                    pauses.revoked(ps);
                }
                public void onPartitionsAssigned(Collection<TopicPartition> ps) {
                    ps.forEach(tp -> owned.add(tp.partition()));
                    pauses.assigned(ps);
                }
            });
        }

        void poll() { consumer.poll(Duration.ofMillis(20)); }
    }

    /** Every member with its share, no partition owned twice (all of them, with 4 members). */
    static boolean balanced(List<Member> members) {
        Set<Integer> all = new HashSet<>();
        int total = 0;
        for (Member m : members) {
            if (m.owned.size() != PARTITIONS / MEMBERS) return false;
            all.addAll(m.owned);
            total += m.owned.size();
        }
        return all.size() == total && total == members.size() * (PARTITIONS / MEMBERS);
    }

    static void pumpUntilBalanced(List<Member> members, String what) {
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        while (!balanced(members)) {
            check(System.currentTimeMillis() < deadline, what + " never balanced: "
                    + members.stream().map(m -> m.owned.toString()).collect(Collectors.joining(" ")));
            for (Member m : members) m.poll();
        }
    }

    static void scenario(String name, String protocol) throws Exception {
        admin.createTopics(List.of(new NewTopic(name, PARTITIONS, (short) 1))).all()
                .get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
        Pauses pauses = new Pauses();
        List<Member> members = new ArrayList<>();
        for (int i = 0; i < MEMBERS - 1; i++) members.add(new Member(name, name, protocol, pauses));
        Process victim = new ProcessBuilder(System.getProperty("java.home") + "/bin/java", "-cp",
                System.getProperty("java.class.path"), ConsumerProtocolCheck.class.getName(),
                "victim", bootstrap, name, protocol)
                .redirectOutput(ProcessBuilder.Redirect.DISCARD)
                .redirectError(ProcessBuilder.Redirect.DISCARD).start();
        Set<Integer> victimParts = new TreeSet<>();
        try {
            // Balanced: each local member has its share, the victim the rest.
            pumpUntilBalanced(members, "the first assignment");
            for (int p = 0; p < PARTITIONS; p++) victimParts.add(p);
            for (Member m : members) victimParts.removeAll(m.owned);
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (true) {
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(name)).all().get().get(name);
                eq(protocol.equals("consumer") ? GroupType.CONSUMER : GroupType.CLASSIC, d.type(), "group type");
                int described = 0;
                for (MemberDescription m : d.members()) described += m.assignment().topicPartitions().size();
                if (d.groupState() == GroupState.STABLE && d.members().size() == MEMBERS && described == PARTITIONS) break;
                check(System.currentTimeMillis() < deadline, "described group never stable with 4 members: " + d);
                for (Member m : members) m.poll();
            }
        } catch (Throwable e) {
            victim.destroyForcibly();
            throw e;
        }
        pauses.counting = true;
        long t0 = System.currentTimeMillis();

        // The victim dies (SIGKILL); a new member replaces it.
        victim.destroyForcibly().waitFor();
        pauses.revoked(victimParts.stream().map(p -> new TopicPartition(name, p)).collect(Collectors.toList()));
        members.add(new Member(name, name, protocol, pauses));
        pumpUntilBalanced(members, "after a member was killed and restarted");
        long killMs = System.currentTimeMillis() - t0;

        // Rolling restart: each member leaves and a new one takes its place.
        long t1 = System.currentTimeMillis();
        for (int i = 0; i < MEMBERS; i++) {
            Member old = members.remove(0);
            old.consumer.close(Duration.ofSeconds(10));
            members.add(new Member(name, name, protocol, pauses));
            pumpUntilBalanced(members, "rolling restart step " + i);
        }
        long rollMs = System.currentTimeMillis() - t1;
        System.out.printf("PAUSE protocol=%s paused_partitions=%d total_pause_ms=%d kill_restart_ms=%d rolling_restart_ms=%d%n",
                protocol, pauses.paused, pauses.totalMs, killMs, rollMs);
        for (Member m : members) m.consumer.close(Duration.ofSeconds(10));
    }
}
