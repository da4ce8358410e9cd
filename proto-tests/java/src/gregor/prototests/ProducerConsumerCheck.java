package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java producer with its defaults (idempotence on, acks=all), then a consumer with assign()
 * and seek() reading every record back exactly.
 *
 * Usage: ProducerConsumerCheck BOOTSTRAP TOPIC  (TOPIC exists, with 2 partitions, and is empty)
 */
public final class ProducerConsumerCheck {
    static final int N0 = 500;      // records to partition 0 by the first producer
    static final int N0_ZSTD = 10;  // then by a second producer, zstd-compressed
    static final int N1 = 20;       // records to partition 1, null keys
    static final long BASE_TS = System.currentTimeMillis() - 60_000;

    static byte[] b(String s) { return s.getBytes(StandardCharsets.UTF_8); }
    static String s(byte[] b) { return b == null ? null : new String(b, StandardCharsets.UTF_8); }

    static KafkaProducer<byte[], byte[]> defaultProducer(String bootstrap, Map<String, Object> extra) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        TopicPartition p0 = new TopicPartition(topic, 0), p1 = new TopicPartition(topic, 1);
        Checks c = new Checks();

        c.section("producer-defaults", () -> {
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
            ProducerConfig cfg = new ProducerConfig(p);
            eq(true, cfg.getBoolean(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG), "default enable.idempotence");
            eq("-1", cfg.getString(ProducerConfig.ACKS_CONFIG), "default acks (all)");
        });

        c.section("default-producer-sends", () -> {
            List<Future<RecordMetadata>> f0 = new ArrayList<>(), f1 = new ArrayList<>();
            try (KafkaProducer<byte[], byte[]> prod = defaultProducer(bootstrap, Map.of())) {
                for (int i = 0; i < N0; i++) {
                    ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, 0, BASE_TS + i, b("k" + i), b("v" + i));
                    r.headers().add("h", b(Integer.toString(i)));
                    f0.add(prod.send(r));
                }
                for (int i = 0; i < N1; i++)
                    f1.add(prod.send(new ProducerRecord<>(topic, 1, BASE_TS + i, null, b("p1-" + i))));
                prod.flush();
                for (int i = 0; i < N0; i++) {
                    RecordMetadata m = f0.get(i).get();
                    eq(0, m.partition(), "partition of record " + i);
                    eq((long) i, m.offset(), "offset of record " + i + " to partition 0");
                    eq(BASE_TS + i, m.timestamp(), "timestamp of record " + i + " (CreateTime)");
                }
                for (int i = 0; i < N1; i++) eq((long) i, f1.get(i).get().offset(), "offset of record " + i + " to partition 1");
            }
            // A second producer (a new producer id) appends after the first one's records.
            List<Future<RecordMetadata>> fz = new ArrayList<>();
            try (KafkaProducer<byte[], byte[]> prod = defaultProducer(bootstrap,
                    Map.of(ProducerConfig.COMPRESSION_TYPE_CONFIG, "zstd", ProducerConfig.LINGER_MS_CONFIG, 50))) {
                for (int i = N0; i < N0 + N0_ZSTD; i++)
                    fz.add(prod.send(new ProducerRecord<>(topic, 0, BASE_TS + i, b("k" + i), b("v" + i))));
                prod.flush();
                for (int i = 0; i < N0_ZSTD; i++)
                    eq((long) (N0 + i), fz.get(i).get().offset(), "offset of zstd record " + (N0 + i));
            }
        });

        c.section("assign-seek-consumer", () -> {
            Properties p = new Properties();
            p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
            p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");  // every position comes from a seek
            p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 100);
            try (KafkaConsumer<byte[], byte[]> con = new KafkaConsumer<>(p)) {
                con.assign(List.of(p0, p1));
                eq(Map.of(p0, 0L, p1, 0L), con.beginningOffsets(List.of(p0, p1)), "beginningOffsets");
                eq(Map.of(p0, (long) (N0 + N0_ZSTD), p1, (long) N1), con.endOffsets(List.of(p0, p1)), "endOffsets");

                con.seek(p0, 0);
                con.seek(p1, 0);
                Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> got = readUntil(con,
                        Map.of(p0, (long) (N0 + N0_ZSTD), p1, (long) N1));
                List<ConsumerRecord<byte[], byte[]>> r0 = got.get(p0), r1 = got.get(p1);
                eq(N0 + N0_ZSTD, r0.size(), "records read from partition 0");
                eq(N1, r1.size(), "records read from partition 1");
                for (int i = 0; i < N0 + N0_ZSTD; i++) {
                    ConsumerRecord<byte[], byte[]> r = r0.get(i);
                    eq((long) i, r.offset(), "offset of record " + i);
                    eq("k" + i, s(r.key()), "key at offset " + i);
                    eq("v" + i, s(r.value()), "value at offset " + i);
                    eq(BASE_TS + i, r.timestamp(), "timestamp at offset " + i);
                    eq("CreateTime", r.timestampType().name, "timestamp type at offset " + i);
                    Header[] hs = r.headers().toArray();
                    if (i < N0) {
                        eq(1, hs.length, "header count at offset " + i);
                        eq("h", hs[0].key(), "header key at offset " + i);
                        eq(Integer.toString(i), s(hs[0].value()), "header value at offset " + i);
                    } else {
                        eq(0, hs.length, "header count at offset " + i);
                    }
                }
                for (int i = 0; i < N1; i++) {
                    eq((long) i, r1.get(i).offset(), "partition 1 offset " + i);
                    eq(null, r1.get(i).key(), "partition 1 key " + i);
                    eq("p1-" + i, s(r1.get(i).value()), "partition 1 value " + i);
                }

                // seek into the middle of a batch: the first record returned is exactly that offset
                con.assign(List.of(p0));
                for (long off : new long[] {250, 7, N0 + 3}) {
                    con.seek(p0, off);
                    List<ConsumerRecord<byte[], byte[]>> rs = readUntil(con, Map.of(p0, off + 1)).get(p0);
                    eq(off, rs.get(0).offset(), "first offset after seek(" + off + ")");
                    eq("v" + off, s(rs.get(0).value()), "first value after seek(" + off + ")");
                }
                con.seekToEnd(List.of(p0));
                eq((long) (N0 + N0_ZSTD), con.position(p0), "position after seekToEnd");
                con.seekToBeginning(List.of(p0));
                eq(0L, con.position(p0), "position after seekToBeginning");

                Map<TopicPartition, OffsetAndTimestamp> byTime = con.offsetsForTimes(Map.of(p0, BASE_TS + 100));
                eq(100L, byTime.get(p0).offset(), "offsetsForTimes(BASE_TS + 100).offset");
                eq(BASE_TS + 100, byTime.get(p0).timestamp(), "offsetsForTimes(BASE_TS + 100).timestamp");
            }
        });

        System.exit(c.exit());
    }

    /** Polls until, for each partition, a record at offset >= end - 1 has been read (30 s at most). */
    static Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> readUntil(
            KafkaConsumer<byte[], byte[]> con, Map<TopicPartition, Long> end) {
        Map<TopicPartition, List<ConsumerRecord<byte[], byte[]>>> out = new HashMap<>();
        for (TopicPartition tp : end.keySet()) out.put(tp, new ArrayList<>());
        long deadline = System.currentTimeMillis() + 30_000;
        while (true) {
            boolean done = true;
            for (Map.Entry<TopicPartition, Long> e : end.entrySet()) {
                List<ConsumerRecord<byte[], byte[]>> l = out.get(e.getKey());
                if (l.isEmpty() || l.get(l.size() - 1).offset() < e.getValue() - 1) done = false;
            }
            if (done) return out;
            check(System.currentTimeMillis() < deadline, "timed out reading up to " + end + "; got "
                    + out.entrySet().stream().map(e -> e.getKey() + "=" + e.getValue().size()).toList());
            for (ConsumerRecord<byte[], byte[]> r : con.poll(Duration.ofMillis(200))) {
                List<ConsumerRecord<byte[], byte[]>> l = out.get(new TopicPartition(r.topic(), r.partition()));
                if (l != null) l.add(r);
            }
        }
    }
}
