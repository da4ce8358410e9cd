package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;
import static gregor.prototests.Checks.expectError;

import java.nio.charset.StandardCharsets;
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
import java.util.function.BooleanSupplier;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ClassicGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListGroupsOptions;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.GroupIdNotFoundException;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.GroupSubscribedToTopicException;
import org.apache.kafka.common.errors.UnknownMemberIdException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java consumer in a group (classic protocol, Kafka 4's default group.protocol) and the
 * AdminClient's consumer-group operations, against one broker (node id 1) that runs with
 * group.initial.rebalance.delay.ms=0.
 *
 * Sections:
 * - default-assignors: two consumers with the default partition.assignment.strategy
 *   ([RangeAssignor, CooperativeStickyAssignor]) split 4 partitions 2+2, both in one
 *   generation; each reads exactly the records of its own partitions (produced after the split)
 *   and commits them; the group's protocol is "range".
 * - range-assignor: RangeAssignor only: the split is {0,1} and {2,3}.
 * - cooperative-sticky: CooperativeStickyAssignor: a second consumer joining takes two
 *   partitions from the first, which keeps the other two throughout (only the moved ones are
 *   revoked) and the generation moves on.
 * - admin-groups: listGroups / listConsumerGroups, describeConsumerGroups, describeClassicGroups,
 *   listConsumerGroupOffsets, alterConsumerGroupOffsets, deleteConsumerGroupOffsets and
 *   deleteConsumerGroups, on an active group (Kafka's errors) and on an empty one.
 *
 * Usage: GroupCheck BOOTSTRAP PREFIX   (topics and groups are named PREFIX-...)
 */
public final class GroupCheck {
    static final long TIMEOUT_MS = 30_000;
    static final int PER_PARTITION = 10;

    static String bootstrap;
    static Admin admin;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        String prefix = args[1];
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) TIMEOUT_MS);
        Checks c = new Checks();
        try (Admin a = Admin.create(ap)) {
            admin = a;
            c.section("default-assignors", () -> twoConsumersSplit(prefix + "-default", null, "range"));
            c.section("range-assignor", () -> {
                List<Set<Integer>> split = twoConsumersSplit(prefix + "-range", RangeAssignor.class.getName(), "range");
                Set<Set<Integer>> want = Set.of(Set.of(0, 1), Set.of(2, 3));
                eq(want, new HashSet<>(split), "range assignment of 4 partitions to 2 consumers");
            });
            c.section("cooperative-sticky", () -> cooperativeSticky(prefix + "-coop"));
            c.section("admin-groups", () -> adminGroups(prefix + "-admin"));
        }
        System.exit(c.exit());
    }

    // ---- helpers ------------------------------------------------------------------------------

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }

    static void createTopic(String topic, int partitions) throws Exception {
        admin.createTopics(List.of(new NewTopic(topic, partitions, (short) 1))).all().get(TIMEOUT_MS, TimeUnit.MILLISECONDS);
    }

    /** PER_PARTITION records to each partition; returns "partition/offset" -> value. */
    static Map<String, String> produce(String topic, int partitions, String tag) throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        Map<String, String> out = new HashMap<>();
        try (KafkaProducer<byte[], byte[]> prod = new KafkaProducer<>(p)) {
            for (int part = 0; part < partitions; part++)
                for (int i = 0; i < PER_PARTITION; i++) {
                    String v = tag + "-p" + part + "-" + i;
                    long off = prod.send(new ProducerRecord<>(topic, part, null, b(v))).get().offset();
                    out.put(part + "/" + off, v);
                }
        }
        return out;
    }

    static KafkaConsumer<byte[], byte[]> consumer(String group, String strategy) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "6000");
        p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        if (strategy != null) p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, strategy);
        return new KafkaConsumer<>(p);
    }

    /** A consumer with its rebalance callbacks recorded. */
    static final class Member {
        final String name;
        final KafkaConsumer<byte[], byte[]> consumer;
        final List<String> events = new ArrayList<>();   // "assigned [..]" / "revoked [..]" / "lost [..]"
        final Set<Integer> everRevoked = new TreeSet<>();
        final Map<String, String> records = new HashMap<>();
        int duplicates = 0;

        Member(String name, String group, String topic, String strategy) {
            this.name = name;
            this.consumer = consumer(group, strategy);
            consumer.subscribe(List.of(topic), new ConsumerRebalanceListener() {
                public void onPartitionsRevoked(Collection<TopicPartition> ps) {
                    if (ps.isEmpty()) return;
                    events.add("revoked " + parts(ps));
                    ps.forEach(tp -> everRevoked.add(tp.partition()));
                    // the usual pattern: commit what was read before giving partitions up, so
                    // the next owner resumes there (a commit in the middle of a rebalance)
                    Map<TopicPartition, OffsetAndMetadata> pos = new HashMap<>();
                    for (TopicPartition tp : ps) pos.put(tp, new OffsetAndMetadata(consumer.position(tp)));
                    consumer.commitSync(pos);
                }
                public void onPartitionsAssigned(Collection<TopicPartition> ps) { events.add("assigned " + parts(ps)); }
                public void onPartitionsLost(Collection<TopicPartition> ps) { events.add("lost " + parts(ps)); }
            });
        }

        void poll() {
            for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(50)))
                if (records.put(r.partition() + "/" + r.offset(), new String(r.value(), StandardCharsets.UTF_8)) != null)
                    duplicates++;
        }

        Set<Integer> assignment() { return parts(consumer.assignment()); }

        int generation() { return consumer.groupMetadata().generationId(); }

        @Override public String toString() {
            return name + "{assignment=" + assignment() + " events=" + events + " records=" + records.size() + "}";
        }
    }

    static Set<Integer> parts(Collection<TopicPartition> ps) {
        return ps.stream().map(TopicPartition::partition).collect(Collectors.toCollection(TreeSet::new));
    }

    static void pump(List<Member> members, BooleanSupplier until, String what) {
        long deadline = System.currentTimeMillis() + TIMEOUT_MS;
        while (!until.getAsBoolean()) {
            check(System.currentTimeMillis() < deadline, what + " not reached: " + members);
            for (Member m : members) m.poll();
        }
    }

    static void pumpFor(List<Member> members, long ms) {
        long end = System.currentTimeMillis() + ms;
        while (System.currentTimeMillis() < end) for (Member m : members) m.poll();
    }

    static ConsumerGroupDescription describe(String group) throws Exception {
        return admin.describeConsumerGroups(List.of(group)).all().get().get(group);
    }

    // ---- sections -----------------------------------------------------------------------------

    /** Two consumers, joining together, split 4 partitions; returns their partition sets. */
    static List<Set<Integer>> twoConsumersSplit(String name, String strategy, String protocol) throws Exception {
        String topic = name, group = name + "-group";
        createTopic(topic, 4);
        Member m1 = new Member("c1", group, topic, strategy), m2 = new Member("c2", group, topic, strategy);
        List<Member> ms = List.of(m1, m2);
        try {
            pump(ms, () -> m1.assignment().size() == 2 && m2.assignment().size() == 2, "a 2+2 split");
            pumpFor(ms, 500);
            // produced once the split is in place: each consumer reads its own partitions
            Map<String, String> expected = produce(topic, 4, "m");
            pump(ms, () -> m1.records.size() + m2.records.size() >= expected.size(), "the group reading every record");
            pumpFor(ms, 300);
            Set<Integer> a1 = m1.assignment(), a2 = m2.assignment();
            Set<Integer> all = new TreeSet<>(a1);
            all.addAll(a2);
            eq(Set.of(0, 1, 2, 3), all, "partitions owned by the two consumers " + ms);
            eq(m1.generation(), m2.generation(), "both consumers in one generation " + ms);
            System.err.println(name + ": generation " + m1.generation() + ", events " + m1.events + " / " + m2.events);
            eq(0, m1.duplicates + m2.duplicates, "records read twice");
            Map<String, String> got = new HashMap<>(m1.records);
            got.putAll(m2.records);
            eq(expected, got, "records read by the group");
            for (Member m : ms) {
                Set<Integer> read = m.records.keySet().stream().map(k -> Integer.parseInt(k.split("/")[0])).collect(Collectors.toSet());
                eq(m.assignment(), read, m.name + " read only its own partitions");
                m.consumer.commitSync();
                Map<TopicPartition, OffsetAndMetadata> committed = m.consumer.committed(m.consumer.assignment());
                for (TopicPartition tp : m.consumer.assignment())
                    eq((long) PER_PARTITION, committed.get(tp) == null ? null : committed.get(tp).offset(), m.name + " committed offset of " + tp);
            }
            ConsumerGroupDescription d = describe(group);
            eq(GroupState.STABLE, d.groupState(), "group state");
            eq(protocol, d.partitionAssignor(), "the group's protocol (assignor)");
            eq(2, d.members().size(), "members");
            return List.of(a1, a2);
        } finally {
            for (Member m : ms) m.consumer.close(Duration.ofSeconds(10));
        }
    }

    static void cooperativeSticky(String name) throws Exception {
        String topic = name, group = name + "-group", strategy = CooperativeStickyAssignor.class.getName();
        createTopic(topic, 4);
        produce(topic, 4, "m");
        Member m1 = new Member("c1", group, topic, strategy);
        Member m2 = null;
        try {
            pump(List.of(m1), () -> m1.assignment().size() == 4 && m1.records.size() >= 4 * PER_PARTITION, "c1 alone owning all 4 partitions");
            int gen1 = m1.generation();
            m1.consumer.commitSync();
            Member c2 = m2 = new Member("c2", group, topic, strategy);
            List<Member> ms = List.of(m1, c2);
            pump(ms, () -> m1.assignment().size() == 2 && c2.assignment().size() == 2, "a 2+2 split after c2 joined");
            pumpFor(ms, 1000);
            System.err.println(name + ": generations " + gen1 + " -> " + m1.generation() + ", events " + m1.events + " / " + c2.events);
            eq(2, m1.assignment().size(), "c1 keeps 2 partitions " + ms);
            eq(2, c2.assignment().size(), "c2 owns 2 partitions " + ms);
            Set<Integer> kept = m1.assignment(), moved = c2.assignment();
            // cooperative: c1 gave up only what moved to c2, never the partitions it kept
            eq(moved, m1.everRevoked, "partitions c1 revoked (only the ones that moved) " + m1.events);
            check(!m1.events.contains("lost " + kept), "c1 lost partitions: " + m1.events);
            check(m1.generation() > gen1, "the generation moved on: " + gen1 + " -> " + m1.generation());
            eq(m1.generation(), c2.generation(), "one generation for both");
            check(c2.events.stream().noneMatch(e -> e.startsWith("revoked")), "c2 had partitions revoked: " + c2.events);
            eq("cooperative-sticky", describe(group).partitionAssignor(), "the group's protocol");
            // c2 starts where c1 committed: nothing is read twice, nothing new to read
            pumpFor(ms, 500);
            eq(0, c2.records.size(), "c2 re-read records c1 had committed");
        } finally {
            m1.consumer.close(Duration.ofSeconds(10));
            if (m2 != null) m2.consumer.close(Duration.ofSeconds(10));
        }
    }

    static void adminGroups(String name) throws Exception {
        String topic = name, group = name + "-group", missing = name + "-missing";
        createTopic(topic, 2);
        produce(topic, 2, "a");
        TopicPartition p0 = new TopicPartition(topic, 0), p1 = new TopicPartition(topic, 1);
        Member m = new Member("m", group, topic, null);
        try {
            pump(List.of(m), () -> m.records.size() >= 2 * PER_PARTITION, "the member reading everything");
            m.consumer.commitSync(Map.of(p0, new OffsetAndMetadata(PER_PARTITION, "meta-0"), p1, new OffsetAndMetadata(PER_PARTITION)));

            // an active group
            Collection<GroupListing> listed = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get();
            GroupListing gl = listed.stream().filter(g -> g.groupId().equals(group)).findFirst().orElse(null);
            check(gl != null, "listGroups(forConsumerGroups) lacks " + group + ": " + listed);
            eq(java.util.Optional.of(GroupState.STABLE), gl.groupState(), "listGroups state");
            eq(java.util.Optional.of(GroupType.CLASSIC), gl.type(), "listGroups type");
            eq("consumer", gl.protocol(), "listGroups protocol type");
            @SuppressWarnings("deprecation")
            Set<String> consumerGroups = admin.listConsumerGroups().all().get().stream()
                    .map(org.apache.kafka.clients.admin.ConsumerGroupListing::groupId).collect(Collectors.toSet());
            check(consumerGroups.contains(group), "listConsumerGroups lacks " + group + ": " + consumerGroups);
            Set<String> stable = admin.listGroups(ListGroupsOptions.forConsumerGroups().inGroupStates(Set.of(GroupState.STABLE)))
                    .all().get().stream().map(GroupListing::groupId).collect(Collectors.toSet());
            check(stable.contains(group), "listGroups(STABLE) lacks " + group);
            Set<String> empty = admin.listGroups(ListGroupsOptions.forConsumerGroups().inGroupStates(Set.of(GroupState.EMPTY)))
                    .all().get().stream().map(GroupListing::groupId).collect(Collectors.toSet());
            check(!empty.contains(group), "listGroups(EMPTY) lists the stable group " + group);

            ConsumerGroupDescription d = describe(group);
            eq(GroupState.STABLE, d.groupState(), "describeConsumerGroups state");
            eq(GroupType.CLASSIC, d.type(), "describeConsumerGroups type");
            eq("range", d.partitionAssignor(), "describeConsumerGroups assignor");
            eq(false, d.isSimpleConsumerGroup(), "isSimpleConsumerGroup");
            eq(1, d.coordinator().id(), "coordinator");
            eq(1, d.members().size(), "members");
            MemberDescription md = d.members().iterator().next();
            eq(m.consumer.groupMetadata().memberId(), md.consumerId(), "member id");
            check(md.clientId() != null && !md.clientId().isEmpty(), "client id " + md.clientId());
            check(md.host() != null && md.host().contains("127.0.0.1"), "member host " + md.host());
            eq(Set.of(p0, p1), md.assignment().topicPartitions(), "member assignment");

            ClassicGroupDescription cd = admin.describeClassicGroups(List.of(group)).all().get().get(group);
            eq("consumer", cd.protocol(), "describeClassicGroups protocol type");
            eq("range", cd.protocolData(), "describeClassicGroups protocol");
            eq(1, cd.members().size(), "describeClassicGroups members");

            Map<TopicPartition, OffsetAndMetadata> offs = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
            eq((long) PER_PARTITION, offs.get(p0).offset(), "listConsumerGroupOffsets p0");
            eq("meta-0", offs.get(p0).metadata(), "listConsumerGroupOffsets p0 metadata");
            eq((long) PER_PARTITION, offs.get(p1).offset(), "listConsumerGroupOffsets p1");

            expectError(UnknownMemberIdException.class, "alterConsumerGroupOffsets on an active group",
                    () -> admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(1))).all().get());
            expectError(GroupSubscribedToTopicException.class, "deleteConsumerGroupOffsets of a subscribed topic",
                    () -> admin.deleteConsumerGroupOffsets(group, Set.of(p0)).all().get());
            expectError(GroupNotEmptyException.class, "deleteConsumerGroups of an active group",
                    () -> admin.deleteConsumerGroups(List.of(group)).all().get());
        } finally {
            m.consumer.close(Duration.ofSeconds(10));
        }

        // the member left: an empty group
        ConsumerGroupDescription d = describe(group);
        eq(GroupState.EMPTY, d.groupState(), "state after the member left");
        eq(0, d.members().size(), "members after the member left");

        admin.alterConsumerGroupOffsets(group, Map.of(p0, new OffsetAndMetadata(3, "reset"))).all().get();
        Map<TopicPartition, OffsetAndMetadata> offs = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        eq(3L, offs.get(p0).offset(), "p0 after alterConsumerGroupOffsets");
        eq("reset", offs.get(p0).metadata(), "p0 metadata after alterConsumerGroupOffsets");
        eq((long) PER_PARTITION, offs.get(p1).offset(), "p1 untouched by alterConsumerGroupOffsets");

        admin.deleteConsumerGroupOffsets(group, Set.of(p1)).all().get();
        offs = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        eq(Set.of(p0), offs.keySet(), "partitions with offsets after deleteConsumerGroupOffsets(p1)");

        admin.deleteConsumerGroups(List.of(group)).all().get();
        Set<String> after = admin.listGroups(ListGroupsOptions.forConsumerGroups()).all().get().stream()
                .map(GroupListing::groupId).collect(Collectors.toSet());
        check(!after.contains(group), "deleted group still listed: " + after);
        offs = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        eq(Map.of(), offs, "offsets of a deleted group");
        expectError(GroupIdNotFoundException.class, "deleteConsumerGroups of a missing group",
                () -> admin.deleteConsumerGroups(List.of(missing)).all().get());
    }
}
