package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;
import static gregor.prototests.Checks.eventually;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.Future;
import java.util.function.Function;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.ListTransactionsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.DescribeProducersResult.PartitionProducerState;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.TransactionDescription;
import org.apache.kafka.clients.admin.TransactionListing;
import org.apache.kafka.clients.admin.TransactionState;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Transactions with the Java client (kafka-clients 4.x) against one broker (node id 1): every
 * section uses topics, groups and transactional ids of its own, so they do not depend on each
 * other.
 *
 * Sections:
 * - consume-transform-produce: a read_committed group consumer and a transactional producer
 *   copy 300 records from an input topic to an output topic, committing the consumed offsets
 *   with sendOffsetsToTransaction; every third transaction is aborted and the consumer rewinds
 *   to the committed offsets. Afterwards read_committed sees every input record exactly once
 *   (in the partition it came from), read_uncommitted also sees the aborted copies, and the
 *   group's committed offsets are the input's end offsets.
 * - zombie-fencing: producer A begins a transaction and writes a record; B with the same
 *   transactional id calls initTransactions, which fences A and aborts A's transaction. A's
 *   next send/commit fails with ProducerFencedException or InvalidProducerEpochException, and
 *   A writes nothing more; B's transaction commits. read_committed sees only B's record.
 * - lso-and-admin: while a transaction is open, ListOffsets READ_COMMITTED (the last stable
 *   offset) stays at the transaction's first offset, a read_committed consumer stops there,
 *   describeProducers shows the open transaction's start offset, describeTransactions shows
 *   it Ongoing with its partitions and coordinator, listTransactions lists it. After the
 *   commit the LSO reaches the high watermark (the commit marker included), and the
 *   transaction is CompleteCommit; after an abort, CompleteAbort with the aborted record
 *   invisible to read_committed.
 * - offsets-on-commit: offsets sent in a transaction (sendOffsetsToTransaction for a group
 *   with no members) are not the group's committed offsets while the transaction is open, nor
 *   after it aborts; they are once it commits.
 *
 * Usage: TxnCheck BOOTSTRAP PREFIX
 */
public final class TxnCheck {
    static final long TIMEOUT_MS = 60_000;
    static String bootstrap;
    static Admin admin;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        String prefix = args[1];
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        admin = Admin.create(ap);
        Checks c = new Checks();
        c.section("consume-transform-produce", () -> consumeTransformProduce(prefix + "-ctp"));
        c.section("zombie-fencing", () -> zombieFencing(prefix + "-zombie"));
        c.section("lso-and-admin", () -> lsoAndAdmin(prefix + "-lso"));
        c.section("offsets-on-commit", () -> offsetsOnCommit(prefix + "-offs"));
        admin.close(Duration.ofSeconds(5));
        System.exit(c.exit());
    }

    // --- clients -------------------------------------------------------------------------------

    static KafkaProducer<String, String> producer(Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30_000);
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    static KafkaProducer<String, String> txnProducer(String txnId) {
        return producer(Map.of(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId,
                ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, 45_000));
    }

    static KafkaConsumer<String, String> consumer(String isolation, Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.putAll(extra);
        return new KafkaConsumer<>(p);
    }

    static void createTopic(String name, int partitions) throws Exception {
        admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1))).all().get();
        List<TopicPartition> tps = tps(name, partitions);
        eventually(30_000, "topic " + name + " has leaders", () -> {
            try {
                return offsets(tps, IsolationLevel.READ_UNCOMMITTED).size() == partitions;
            } catch (Exception e) {
                return false;
            }
        });
    }

    static List<TopicPartition> tps(String topic, int partitions) {
        List<TopicPartition> out = new ArrayList<>();
        for (int p = 0; p < partitions; p++) out.add(new TopicPartition(topic, p));
        return out;
    }

    /** ListOffsets(latest) at an isolation level: READ_COMMITTED gives the last stable offset. */
    static Map<TopicPartition, Long> offsets(Collection<TopicPartition> tps, IsolationLevel level) throws Exception {
        Map<TopicPartition, OffsetSpec> req = tps.stream().collect(Collectors.toMap(Function.identity(), tp -> OffsetSpec.latest()));
        return admin.listOffsets(req, new ListOffsetsOptions(level)).all().get().entrySet().stream()
                .collect(Collectors.toMap(Map.Entry::getKey, e -> e.getValue().offset()));
    }

    static void waitStable(List<TopicPartition> tps) throws Exception {
        eventually(30_000, "the last stable offset reaches the high watermark on " + tps, () ->
                offsets(tps, IsolationLevel.READ_COMMITTED).equals(offsets(tps, IsolationLevel.READ_UNCOMMITTED)));
    }

    /** Every record of the partitions from offset 0 to the consumer's end offsets (for
     *  read_committed: the LSO) at `isolation`, once no transaction is open on them. */
    static Map<Integer, List<ConsumerRecord<String, String>>> readAll(List<TopicPartition> tps, String isolation) throws Exception {
        waitStable(tps);
        Map<Integer, List<ConsumerRecord<String, String>>> out = new TreeMap<>();
        try (KafkaConsumer<String, String> con = consumer(isolation, Map.of())) {
            con.assign(tps);
            con.seekToBeginning(tps);
            Map<TopicPartition, Long> end = con.endOffsets(tps);
            for (TopicPartition tp : tps) out.put(tp.partition(), new ArrayList<>());
            long deadline = System.currentTimeMillis() + TIMEOUT_MS;
            while (tps.stream().anyMatch(tp -> con.position(tp) < end.get(tp))) {
                check(System.currentTimeMillis() < deadline, "read " + isolation + " up to " + end);
                for (ConsumerRecord<String, String> r : con.poll(Duration.ofMillis(200)))
                    out.get(r.partition()).add(r);
            }
        }
        return out;
    }

    static List<String> values(Map<Integer, List<ConsumerRecord<String, String>>> byPartition) {
        return byPartition.values().stream().flatMap(List::stream).map(ConsumerRecord::value).collect(Collectors.toList());
    }

    static Throwable fencingCause(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause())
            if (c instanceof ProducerFencedException || c instanceof InvalidProducerEpochException) return c;
        return null;
    }

    // --- sections ------------------------------------------------------------------------------

    static void consumeTransformProduce(String name) throws Exception {
        final int partitions = 3, n = 300;
        String in = name + "-in", out = name + "-out", group = name + "-group";
        createTopic(in, partitions);
        createTopic(out, partitions);
        try (KafkaProducer<String, String> p = producer(Map.of())) {
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) fs.add(p.send(new ProducerRecord<>(in, i % partitions, "k" + i, "v" + i)));
            for (Future<RecordMetadata> f : fs) f.get();
        }
        int txns = 0, aborted = 0, processed = 0;
        try (KafkaConsumer<String, String> con = consumer("read_committed", Map.of(
                ConsumerConfig.GROUP_ID_CONFIG, group, ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 25));
             KafkaProducer<String, String> prod = txnProducer(name + "-txn")) {
            prod.initTransactions();
            con.subscribe(List.of(in));
            long deadline = System.currentTimeMillis() + 120_000;
            while (processed < n) {
                check(System.currentTimeMillis() < deadline, "processed only " + processed + " of " + n + " records in 120 s");
                ConsumerRecords<String, String> records = con.poll(Duration.ofMillis(200));
                if (records.isEmpty()) continue;
                txns++;
                prod.beginTransaction();
                Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                for (ConsumerRecord<String, String> r : records) {
                    prod.send(new ProducerRecord<>(out, r.partition(), r.key(), "out-" + r.value()));
                    next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                }
                prod.sendOffsetsToTransaction(next, con.groupMetadata());
                if (txns % 3 == 2) {
                    // flush first: records still in the accumulator when the abort starts are
                    // dropped unsent, and the check below wants the aborted copies in the log
                    prod.flush();
                    prod.abortTransaction();
                    aborted++;
                    // process the same records again: back to the committed offsets
                    Set<TopicPartition> assigned = con.assignment();
                    Map<TopicPartition, OffsetAndMetadata> committed = con.committed(assigned);
                    for (TopicPartition tp : assigned) {
                        OffsetAndMetadata c = committed.get(tp);
                        if (c == null) con.seekToBeginning(List.of(tp));
                        else con.seek(tp, c.offset());
                    }
                } else {
                    prod.commitTransaction();
                    processed += records.count();
                }
            }
        }
        check(aborted >= 2, "at least two transactions aborted (" + aborted + " of " + txns + ")");
        eq(n, processed, "records processed in committed transactions");

        List<TopicPartition> inTps = tps(in, partitions), outTps = tps(out, partitions);
        Map<TopicPartition, OffsetAndMetadata> groupOffsets =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        Map<TopicPartition, Long> committed = new HashMap<>();
        groupOffsets.forEach((tp, o) -> committed.put(tp, o.offset()));
        eq(offsets(inTps, IsolationLevel.READ_UNCOMMITTED), committed, "the group's committed offsets = the input's end offsets");

        Map<Integer, List<ConsumerRecord<String, String>>> rc = readAll(outTps, "read_committed");
        List<String> got = values(rc);
        List<String> want = new ArrayList<>();
        for (int i = 0; i < n; i++) want.add("out-v" + i);
        eq(new HashSet<>(want), new HashSet<>(got), "values read_committed");
        eq(n, got.size(), "records read_committed (each input record exactly once)");
        for (Map.Entry<Integer, List<ConsumerRecord<String, String>>> e : rc.entrySet())
            for (ConsumerRecord<String, String> r : e.getValue()) {
                int i = Integer.parseInt(r.value().substring("out-v".length()));
                eq(i % partitions, e.getKey(), "partition of " + r.value());
            }
        List<String> all = values(readAll(outTps, "read_uncommitted"));
        check(all.size() > n, "read_uncommitted sees the aborted copies too: " + all.size() + " records");
        check(new HashSet<>(all).containsAll(want), "read_uncommitted has every value");
    }

    static void zombieFencing(String name) throws Exception {
        String topic = name + "-out", txnId = name + "-txn";
        createTopic(topic, 1);
        List<TopicPartition> tps = tps(topic, 1);
        KafkaProducer<String, String> a = txnProducer(txnId);
        String fencedBy;
        try {
            a.initTransactions();
            a.beginTransaction();
            a.send(new ProducerRecord<>(topic, 0, null, "a1")).get();
            try (KafkaProducer<String, String> b = txnProducer(txnId)) {
                b.initTransactions();  // fences a, aborts a's transaction
                Throwable fenced = null;
                try {
                    a.send(new ProducerRecord<>(topic, 0, null, "a2")).get();
                    a.commitTransaction();
                } catch (Exception e) {
                    fenced = e;
                }
                check(fenced != null, "the zombie's send and commit both succeeded");
                Throwable cause = fencingCause(fenced);
                check(cause != null, "the zombie failed with " + fenced + ", not ProducerFenced/InvalidProducerEpoch");
                fencedBy = cause.getClass().getSimpleName();
                b.beginTransaction();
                b.send(new ProducerRecord<>(topic, 0, null, "b1")).get();
                b.commitTransaction();
            }
        } finally {
            a.close(Duration.ZERO);
        }
        System.out.println("INFO zombie-fencing: the zombie got " + fencedBy);
        eq(List.of("b1"), values(readAll(tps, "read_committed")), "read_committed");
        eq(List.of("a1", "b1"), values(readAll(tps, "read_uncommitted")), "read_uncommitted (the zombie wrote nothing after it was fenced)");
    }

    static void lsoAndAdmin(String name) throws Exception {
        String topic = name + "-t", txnId = name + "-txn";
        createTopic(topic, 2);
        TopicPartition p0 = new TopicPartition(topic, 0), p1 = new TopicPartition(topic, 1);
        List<TopicPartition> tps = List.of(p0, p1);
        try (KafkaProducer<String, String> plain = producer(Map.of())) {
            for (int i = 0; i < 3; i++) plain.send(new ProducerRecord<>(topic, 0, null, "plain" + i)).get();
        }
        try (KafkaProducer<String, String> prod = txnProducer(txnId)) {
            prod.initTransactions();
            prod.beginTransaction();
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < 5; i++) fs.add(prod.send(new ProducerRecord<>(topic, 0, null, "t" + i)));
            for (int i = 0; i < 2; i++) fs.add(prod.send(new ProducerRecord<>(topic, 1, null, "u" + i)));
            prod.flush();
            for (Future<RecordMetadata> f : fs) f.get();

            eq(Map.of(p0, 3L, p1, 0L), offsets(tps, IsolationLevel.READ_COMMITTED), "LSO while the transaction is open");
            eq(Map.of(p0, 8L, p1, 2L), offsets(tps, IsolationLevel.READ_UNCOMMITTED), "high watermark while the transaction is open");
            try (KafkaConsumer<String, String> con = consumer("read_committed", Map.of())) {
                con.assign(tps);
                con.seekToBeginning(tps);
                eq(Map.of(p0, 3L, p1, 0L), con.endOffsets(tps), "a read_committed consumer's endOffsets");
                List<String> seen = new ArrayList<>();
                long until = System.currentTimeMillis() + 1500;
                while (System.currentTimeMillis() < until)
                    for (ConsumerRecord<String, String> r : con.poll(Duration.ofMillis(100))) seen.add(r.value());
                eq(List.of("plain0", "plain1", "plain2"), seen, "read_committed stops at the LSO");
                eq(3L, con.position(p0), "read_committed position on partition 0");
            }

            PartitionProducerState ps = admin.describeProducers(List.of(p0)).partitionResult(p0).get();
            List<ProducerState> open = ps.activeProducers().stream()
                    .filter(s -> s.currentTransactionStartOffset().isPresent()).collect(Collectors.toList());
            eq(1, open.size(), "producers with an open transaction on partition 0: " + ps.activeProducers());
            eq(3L, open.get(0).currentTransactionStartOffset().getAsLong(), "the open transaction's start offset");
            long pid = open.get(0).producerId();

            TransactionDescription d = admin.describeTransactions(List.of(txnId)).description(txnId).get();
            eq(TransactionState.ONGOING, d.state(), "describeTransactions state while open");
            eq(Set.of(p0, p1), d.topicPartitions(), "the transaction's partitions");
            eq(pid, d.producerId(), "describeTransactions producerId = describeProducers producerId");
            eq(1, d.coordinatorId(), "the transaction coordinator (node 1)");
            eq(45_000L, d.transactionTimeoutMs(), "transactionTimeoutMs");
            check(d.transactionStartTimeMs().isPresent(), "an ongoing transaction has a start time");

            Collection<TransactionListing> all = admin.listTransactions().all().get();
            check(all.stream().anyMatch(l -> l.transactionalId().equals(txnId) && l.state() == TransactionState.ONGOING
                            && l.producerId() == pid), "listTransactions lists " + txnId + " Ongoing: " + all);
            Collection<TransactionListing> ongoing = admin.listTransactions(new ListTransactionsOptions()
                    .filterStates(List.of(TransactionState.ONGOING))).all().get();
            check(ongoing.stream().anyMatch(l -> l.transactionalId().equals(txnId)), "listTransactions filtered by Ongoing: " + ongoing);
            Collection<TransactionListing> byPid = admin.listTransactions(new ListTransactionsOptions()
                    .filterProducerIds(List.of(pid))).all().get();
            eq(List.of(txnId), byPid.stream().map(TransactionListing::transactionalId).collect(Collectors.toList()),
                    "listTransactions filtered by producer id");

            prod.commitTransaction();
            eventually(30_000, "the LSO reaches the high watermark after the commit (marker included)", () ->
                    offsets(tps, IsolationLevel.READ_COMMITTED).equals(Map.of(p0, 9L, p1, 3L)));
            eq(Map.of(p0, 9L, p1, 3L), offsets(tps, IsolationLevel.READ_UNCOMMITTED), "high watermark after the commit");
            eventually(30_000, "CompleteCommit", () ->
                    admin.describeTransactions(List.of(txnId)).description(txnId).get().state() == TransactionState.COMPLETE_COMMIT);
            TransactionDescription after = admin.describeTransactions(List.of(txnId)).description(txnId).get();
            eq(Set.of(), after.topicPartitions(), "a completed transaction's partitions");
            PartitionProducerState ps2 = admin.describeProducers(List.of(p0)).partitionResult(p0).get();
            check(ps2.activeProducers().stream().noneMatch(s -> s.currentTransactionStartOffset().isPresent()),
                    "no open transaction on partition 0 after the commit: " + ps2.activeProducers());

            prod.beginTransaction();
            prod.send(new ProducerRecord<>(topic, 0, null, "aborted")).get();
            prod.abortTransaction();
            eventually(30_000, "the LSO reaches the high watermark after the abort", () ->
                    offsets(tps, IsolationLevel.READ_COMMITTED).equals(Map.of(p0, 11L, p1, 3L)));
            eventually(30_000, "CompleteAbort", () ->
                    admin.describeTransactions(List.of(txnId)).description(txnId).get().state() == TransactionState.COMPLETE_ABORT);
        }
        Map<Integer, List<ConsumerRecord<String, String>>> rc = readAll(tps, "read_committed");
        eq(List.of("plain0", "plain1", "plain2", "t0", "t1", "t2", "t3", "t4"),
                rc.get(0).stream().map(ConsumerRecord::value).collect(Collectors.toList()), "partition 0 read_committed");
        eq(List.of(0L, 1L, 2L, 3L, 4L, 5L, 6L, 7L), rc.get(0).stream().map(ConsumerRecord::offset).collect(Collectors.toList()),
                "partition 0 offsets read_committed");
        eq(List.of("u0", "u1"), rc.get(1).stream().map(ConsumerRecord::value).collect(Collectors.toList()), "partition 1 read_committed");
        Map<Integer, List<ConsumerRecord<String, String>>> ru = readAll(tps, "read_uncommitted");
        eq(List.of(0L, 1L, 2L, 3L, 4L, 5L, 6L, 7L, 9L), ru.get(0).stream().map(ConsumerRecord::offset).collect(Collectors.toList()),
                "partition 0 offsets read_uncommitted (8 is the commit marker, 10 the abort marker)");
        eq("aborted", ru.get(0).get(8).value(), "the aborted record, read_uncommitted");
    }

    static void offsetsOnCommit(String name) throws Exception {
        String topic = name + "-t", group = name + "-group", txnId = name + "-txn";
        createTopic(topic, 1);
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<String, String> prod = txnProducer(txnId)) {
            prod.initTransactions();
            ConsumerGroupMetadata meta = new ConsumerGroupMetadata(group);

            prod.beginTransaction();
            prod.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(4)), meta);
            eq(null, committedOffset(group, tp), "offset while the first transaction is open");
            prod.abortTransaction();
            eq(null, committedOffset(group, tp), "offset after the abort");

            prod.beginTransaction();
            prod.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(7)), meta);
            prod.commitTransaction();
            eventually(30_000, "offset 7 committed", () -> Long.valueOf(7).equals(committedOffset(group, tp)));

            prod.beginTransaction();
            prod.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(9)), meta);
            eq(7L, committedOffset(group, tp), "offset while the third transaction is open");
            prod.commitTransaction();
            eventually(30_000, "offset 9 committed", () -> Long.valueOf(9).equals(committedOffset(group, tp)));
        }
        // a read_committed consumer asks with require_stable
        try (KafkaConsumer<String, String> con = consumer("read_committed", Map.of(ConsumerConfig.GROUP_ID_CONFIG, group))) {
            OffsetAndMetadata c = con.committed(Set.of(tp), Duration.ofSeconds(30)).get(tp);
            check(c != null, "the consumer sees no committed offset");
            eq(9L, c.offset(), "the consumer's committed offset");
        }
    }

    static Long committedOffset(String group, TopicPartition tp) throws Exception {
        OffsetAndMetadata o = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().get(tp);
        return o == null ? null : o.offset();
    }
}
