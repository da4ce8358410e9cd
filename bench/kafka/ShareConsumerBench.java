// The SHARE workload's load generator (scripts/bench_share.py): share-group consumption of one
// partition by 1, 3 and 10 KafkaShareConsumers (KIP-932). Run as a single-file program:
//
//   java -cp '<kafka jars>/*' bench/kafka/ShareConsumerBench.java BOOTSTRAP TOPIC RECORDS SIZE COUNTS
//
// COUNTS is a comma-separated list of consumer counts, e.g. 1,3,10. TOPIC must exist, empty,
// with one partition. Steps:
//  1. every group (one per count) is primed: one consumer polls while marker records are
//     produced, until it has received one, so the group's share partition is initialised (a
//     share group's default `share.auto.offset.reset=latest` starts it at the end of the log)
//     before the measured records, and each group later reads every one of them;
//  2. RECORDS records of SIZE bytes are produced (acks=1, linger.ms=5, lz4, as W1);
//  3. for each count in turn, that many consumers (threads of this JVM, each its own
//     KafkaShareConsumer, implicit acknowledgement: a poll accepts the previous poll's records)
//     consume until RECORDS distinct offsets have been delivered; redeliveries are counted apart.
// Prints one line per count:
//   RESULT consumers=C records=N seconds=S deliveries=D
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Properties;
import java.util.Random;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class ShareConsumerBench {
    static final long TIMEOUT_NS = Duration.ofSeconds(300).toNanos();

    static KafkaShareConsumer<byte[], byte[]> consumer(String bootstrap, String group) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        return new KafkaShareConsumer<>(p);
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        int records = Integer.parseInt(args[2]);
        int size = Integer.parseInt(args[3]);
        List<Integer> counts = new ArrayList<>();
        for (String c : args[4].split(",")) counts.add(Integer.parseInt(c.trim()));
        String run = UUID.randomUUID().toString().substring(0, 8);

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "1");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        AtomicReference<Exception> failed = new AtomicReference<>();
        long first;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            // 1. prime every group: a consumer polls while markers are produced, until it has
            //    seen one, so its share partition is initialised before the records below
            AtomicBoolean primed = new AtomicBoolean();
            List<AtomicBoolean> seenMarker = new ArrayList<>();
            List<Thread> primers = new ArrayList<>();
            for (int c : counts) {
                String group = "share-bench-" + run + "-" + c;
                AtomicBoolean seen = new AtomicBoolean();
                seenMarker.add(seen);
                Thread t = new Thread(() -> {
                    try (KafkaShareConsumer<byte[], byte[]> k = consumer(bootstrap, group)) {
                        k.subscribe(List.of(topic));
                        while (!primed.get()) {
                            if (!k.poll(Duration.ofMillis(100)).isEmpty()) seen.set(true);
                        }
                        k.commitSync();
                    } catch (Exception e) {
                        failed.compareAndSet(null, e);
                    }
                });
                t.start();
                primers.add(t);
            }
            long until = System.nanoTime() + Duration.ofSeconds(120).toNanos();
            while (failed.get() == null && !seenMarker.stream().allMatch(AtomicBoolean::get)) {
                if (System.nanoTime() > until) throw new RuntimeException("groups not primed in 120 s");
                producer.send(new ProducerRecord<>(topic, "marker".getBytes())).get();
                Thread.sleep(300);
            }
            primed.set(true);
            for (Thread t : primers) t.join();
            if (failed.get() != null) throw failed.get();

            // 2. produce
            Random rnd = new Random(42);
            byte[][] payloads = new byte[16][size];
            for (byte[] b : payloads)
                for (int i = 0; i < size; i++) b[i] = (byte) ('a' + rnd.nextInt(26) / (i % 7 == 0 ? 1 : 2));
            first = producer.send(new ProducerRecord<>(topic, payloads[0])).get().offset();
            for (int i = 1; i < records; i++) {
                producer.send(new ProducerRecord<>(topic, payloads[i & 15]), (md, e) -> {
                    if (e != null) failed.compareAndSet(null, e);
                });
            }
            producer.flush();
        }
        if (failed.get() != null) throw failed.get();

        // 3. consume with each count
        for (int c : counts) {
            String group = "share-bench-" + run + "-" + c;
            BitSet seen = new BitSet(records);
            AtomicLong distinct = new AtomicLong();
            AtomicLong deliveries = new AtomicLong();
            AtomicBoolean done = new AtomicBoolean();
            List<Thread> threads = new ArrayList<>();
            long start = System.nanoTime();
            for (int i = 0; i < c; i++) {
                Thread t = new Thread(() -> {
                    try (KafkaShareConsumer<byte[], byte[]> k = consumer(bootstrap, group)) {
                        k.subscribe(List.of(topic));
                        while (!done.get() && System.nanoTime() - start < TIMEOUT_NS) {
                            ConsumerRecords<byte[], byte[]> got = k.poll(Duration.ofMillis(100));
                            for (ConsumerRecord<byte[], byte[]> r : got) {
                                deliveries.incrementAndGet();
                                long at = r.offset() - first;
                                if (at < 0 || at >= records) continue;  // a marker
                                synchronized (seen) {
                                    if (!seen.get((int) at)) {
                                        seen.set((int) at);
                                        if (distinct.incrementAndGet() == records) done.set(true);
                                    }
                                }
                            }
                        }
                        k.commitSync();
                    } catch (Exception e) {
                        failed.compareAndSet(null, e);
                        done.set(true);
                    }
                });
                t.start();
                threads.add(t);
            }
            while (!done.get() && System.nanoTime() - start < TIMEOUT_NS) Thread.sleep(5);
            double secs = (System.nanoTime() - start) / 1e9;
            done.set(true);
            for (Thread t : threads) t.join();
            if (failed.get() != null) throw failed.get();
            if (distinct.get() < records)
                throw new RuntimeException("consumers=" + c + " got " + distinct.get() + " of " + records);
            System.out.printf("RESULT consumers=%d records=%d seconds=%.3f deliveries=%d%n",
                    c, records, secs, deliveries.get());
        }
    }
}
