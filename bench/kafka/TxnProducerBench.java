// The TXN workload's load generator (scripts/bench_txn.py): the Java producer sending
// `records` records of `size` bytes to `topic`, committing a transaction every `txnSize`
// records (0: no transactions, the idempotent producer alone). Run as a single-file program:
//
//   java -cp '<kafka jars>/*' bench/kafka/TxnProducerBench.java BOOTSTRAP TOPIC RECORDS SIZE TXN_SIZE
//
// acks=all (transactions require it), linger.ms=5 and lz4 as in W1. Prints one line:
//   RESULT records=N seconds=S transactions=T
import java.util.Properties;
import java.util.Random;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxnProducerBench {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], topic = args[1];
        long records = Long.parseLong(args[2]);
        int size = Integer.parseInt(args[3]);
        long txnSize = Long.parseLong(args[4]);

        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.ACKS_CONFIG, "all");
        p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "lz4");
        if (txnSize > 0) p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "bench-" + UUID.randomUUID());
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());

        // 16 distinct payloads of printable text (compressible as W1's are), cycled
        Random rnd = new Random(42);
        byte[][] payloads = new byte[16][size];
        for (byte[] b : payloads)
            for (int i = 0; i < size; i++) b[i] = (byte) ('a' + rnd.nextInt(26) / (i % 7 == 0 ? 1 : 2));

        AtomicReference<Exception> failed = new AtomicReference<>();
        long transactions = 0;
        long start;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
            if (txnSize > 0) producer.initTransactions();
            start = System.nanoTime();
            for (long i = 0; i < records; i++) {
                if (txnSize > 0 && i % txnSize == 0) producer.beginTransaction();
                producer.send(new ProducerRecord<>(topic, payloads[(int) (i & 15)]), (md, e) -> {
                    if (e != null) failed.compareAndSet(null, e);
                });
                if (txnSize > 0 && (i + 1) % txnSize == 0) {
                    producer.commitTransaction();
                    transactions++;
                }
            }
            if (txnSize > 0 && records % txnSize != 0) {
                producer.commitTransaction();
                transactions++;
            }
            producer.flush();
            if (failed.get() != null) throw failed.get();
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        System.out.printf("RESULT records=%d seconds=%.3f transactions=%d%n", records, seconds, transactions);
    }
}
