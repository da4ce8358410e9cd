package gregor.prototests;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.errors.AuthorizationException;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.OutOfOrderSequenceException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.errors.TimeoutException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * A transactional producer driven step by step over stdin, for the failure tests: a test kills
 * a broker between two steps of a transaction, or right after a commit started. One command a
 * line; each is answered with one line on stdout (more lines may come before it: RETRY, FATAL).
 *
 *   begin N    beginTransaction, then PER records to each of the topic's PARTITIONS partitions
 *              with values "N:partition:index", flush and wait for every ack
 *              -> "SENT N", or "SEND_FAILED N Class: message" (the transaction must then be
 *              aborted)
 *   commit N   "COMMITTING N", then commitTransaction -> "COMMITTED N"; a TimeoutException is
 *              retried ("RETRY N ...", as the client allows) for up to 180 s, then
 *              "UNKNOWN N timeout"; an abortable error -> abortTransaction -> "ABORTED N Class";
 *              a fatal one (fenced, ...) -> "FATAL N Class: message", a new producer with the
 *              same transactional id -> "REINIT" (its initTransactions completes or aborts
 *              the transaction the old one left)
 *   abort N    abortTransaction -> "ABORTED N" (a fatal error: "FATAL ..." and "REINIT")
 *   quit       close -> "BYE"
 *
 * At start: initTransactions (retried for up to 120 s) -> "READY".
 *
 * Usage: TxnWorker BOOTSTRAP TOPIC PARTITIONS TRANSACTIONAL_ID PER TRANSACTION_TIMEOUT_MS
 */
public final class TxnWorker {
    static String bootstrap, topic, txnId;
    static int partitions, per, txnTimeoutMs;
    static KafkaProducer<String, String> producer;

    public static void main(String[] args) throws Exception {
        bootstrap = args[0];
        topic = args[1];
        partitions = Integer.parseInt(args[2]);
        txnId = args[3];
        per = Integer.parseInt(args[4]);
        txnTimeoutMs = Integer.parseInt(args[5]);
        init();
        say("READY");
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            String[] w = line.trim().split(" ");
            switch (w[0]) {
                case "begin": begin(w[1]); break;
                case "commit": commit(w[1]); break;
                case "abort": abort(w[1]); break;
                case "quit":
                    producer.close(Duration.ofSeconds(5));
                    say("BYE");
                    System.exit(0);
                    break;
                default: say("UNKNOWN_COMMAND " + line);
            }
        }
        producer.close(Duration.ZERO);
    }

    static void say(String s) {
        System.out.println(s);
        System.out.flush();
    }

    static String describe(Throwable e) {
        Throwable c = e;
        while (c.getCause() != null && (c instanceof java.util.concurrent.ExecutionException
                || (c instanceof KafkaException && c.getClass() == KafkaException.class)))
            c = c.getCause();
        return c.getClass().getSimpleName() + ": " + String.valueOf(c.getMessage()).replace('\n', ' ');
    }

    static void init() {
        long deadline = System.currentTimeMillis() + 120_000;
        while (true) {
            Properties p = new Properties();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
            p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, txnId);
            p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, txnTimeoutMs);
            p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30_000);
            p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
            p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 120_000);
            p.put(ProducerConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 1000);
            p.put(ProducerConfig.RETRY_BACKOFF_MAX_MS_CONFIG, 1000);
            p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            producer = new KafkaProducer<>(p);
            try {
                producer.initTransactions();
                return;
            } catch (KafkaException e) {
                producer.close(Duration.ZERO);
                if (System.currentTimeMillis() > deadline) throw e;
                say("RETRY init " + describe(e));
            }
        }
    }

    static boolean fatal(Throwable e) {
        for (Throwable c = e; c != null; c = c.getCause())
            if (c instanceof ProducerFencedException || c instanceof InvalidProducerEpochException
                    || c instanceof OutOfOrderSequenceException || c instanceof AuthorizationException
                    || c instanceof UnsupportedVersionException || c instanceof IllegalStateException)
                return true;
        return false;
    }

    static void reinit(String n, Throwable e) {
        say("FATAL " + n + " " + describe(e));
        producer.close(Duration.ZERO);
        init();
        say("REINIT");
    }

    static void begin(String n) {
        try {
            producer.beginTransaction();
            List<Future<RecordMetadata>> fs = new ArrayList<>();
            for (int p = 0; p < partitions; p++)
                for (int i = 0; i < per; i++)
                    fs.add(producer.send(new ProducerRecord<>(topic, p, null, n + ":" + p + ":" + i)));
            producer.flush();
            for (Future<RecordMetadata> f : fs) f.get();
            say("SENT " + n);
        } catch (Exception e) {
            say("SEND_FAILED " + n + " " + describe(e));
        }
    }

    static void commit(String n) {
        say("COMMITTING " + n);
        long deadline = System.currentTimeMillis() + 180_000;
        while (true) {
            try {
                producer.commitTransaction();
                say("COMMITTED " + n);
                return;
            } catch (TimeoutException e) {
                if (System.currentTimeMillis() > deadline) {
                    say("UNKNOWN " + n + " timeout");
                    return;
                }
                say("RETRY " + n + " " + describe(e));
            } catch (Exception e) {
                if (fatal(e)) {
                    reinit(n, e);
                    return;
                }
                say("COMMIT_FAILED " + n + " " + describe(e));
                abort(n);
                return;
            }
        }
    }

    static void abort(String n) {
        long deadline = System.currentTimeMillis() + 180_000;
        while (true) {
            try {
                producer.abortTransaction();
                say("ABORTED " + n);
                return;
            } catch (TimeoutException e) {
                if (System.currentTimeMillis() > deadline) {
                    say("UNKNOWN " + n + " abort timeout");
                    return;
                }
                say("RETRY " + n + " " + describe(e));
            } catch (Exception e) {
                reinit(n, e);
                return;
            }
        }
    }
}
