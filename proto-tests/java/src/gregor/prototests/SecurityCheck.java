package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;
import static gregor.prototests.Checks.eventually;
import static gregor.prototests.Checks.expectError;

import java.io.ByteArrayOutputStream;
import java.io.FileInputStream;
import java.io.InputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialsDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ClusterAuthorizationException;
import org.apache.kafka.common.errors.GroupAuthorizationException;
import org.apache.kafka.common.errors.ResourceNotFoundException;
import org.apache.kafka.common.errors.SaslAuthenticationException;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;
import org.apache.kafka.common.utils.Exit;

/**
 * The Java client and Kafka's CLI tools with security on (issue 12), in one JVM: kafka-configs
 * (kafka.admin.ConfigCommand) and kafka-acls (org.apache.kafka.tools.AclCommand) run in-process
 * through their main() with Kafka's Exit procedures trapped, exactly as bin/kafka-*.sh would run
 * them, and their output is checked; the Java producer and consumer then use what they made.
 *
 * Usage: SecurityCheck CHECK_PROPERTIES, a file with:
 *   bootstrap        the SASL_SSL listener
 *   admin.config     a client properties file for the super user (the tools' --command-config)
 *   user, password   a SCRAM user to create (does not exist yet)
 *   user256.config, user512.config   client properties for that user (SASL_SSL, SCRAM-SHA-*)
 *   topic, denied.topic   existing topics (1 partition); `user` gets ACLs on `topic` only
 *   group            the group `user` is granted READ on (and no other)
 *   ways             labels; way.LABEL.config and way.LABEL.topic: a client properties file
 *                    (alice over some listener) and a topic she may write and read
 */
public final class SecurityCheck {
    static Properties load(String path) throws Exception {
        Properties p = new Properties();
        try (InputStream in = new FileInputStream(path)) {
            p.load(in);
        }
        return p;
    }

    /** A tool's exit status and its stdout/stderr. */
    record Run(int status, String out, String err) {
        @Override public String toString() {
            return "exit " + status + "\nstdout: " + out + "\nstderr: " + err;
        }
    }

    static final class ExitCalled extends RuntimeException {
        final int status;
        ExitCalled(int status) { super("exit " + status); this.status = status; }
    }

    /** Runs a tool's main() in this JVM, capturing System.out/err and Scala's Console. */
    static Run tool(String mainClass, String... args) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream(), err = new ByteArrayOutputStream();
        PrintStream oldOut = System.out, oldErr = System.err;
        PrintStream po = new PrintStream(out, true, StandardCharsets.UTF_8);
        PrintStream pe = new PrintStream(err, true, StandardCharsets.UTF_8);
        int status = 0;
        Exit.setExitProcedure((s, m) -> { throw new ExitCalled(s); });
        Exit.setHaltProcedure((s, m) -> { throw new ExitCalled(s); });
        System.setOut(po);
        System.setErr(pe);
        try {
            java.lang.reflect.Method main = Class.forName(mainClass).getMethod("main", String[].class);
            Throwable[] thrown = new Throwable[1];
            scala.Console$.MODULE$.withOut(po, new scala.runtime.AbstractFunction0<Object>() {
                @Override public Object apply() {
                    return scala.Console$.MODULE$.withErr(pe, new scala.runtime.AbstractFunction0<Object>() {
                        @Override public Object apply() {
                            try {
                                main.invoke(null, (Object) args);
                            } catch (java.lang.reflect.InvocationTargetException e) {
                                thrown[0] = e.getCause();
                            } catch (Exception e) {
                                thrown[0] = e;
                            }
                            return null;
                        }
                    });
                }
            });
            if (thrown[0] instanceof ExitCalled ec) status = ec.status;
            else if (thrown[0] != null) {
                status = -1;
                thrown[0].printStackTrace(pe);
            }
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
            Exit.resetExitProcedure();
            Exit.resetHaltProcedure();
        }
        return new Run(status, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    static Run configs(String bootstrap, String adminConfig, String... args) throws Exception {
        List<String> a = new ArrayList<>(List.of("--bootstrap-server", bootstrap, "--command-config", adminConfig));
        a.addAll(List.of(args));
        return tool("kafka.admin.ConfigCommand", a.toArray(new String[0]));
    }

    static Run acls(String bootstrap, String adminConfig, String... args) throws Exception {
        List<String> a = new ArrayList<>(List.of("--bootstrap-server", bootstrap, "--command-config", adminConfig));
        a.addAll(List.of(args));
        return tool("org.apache.kafka.tools.AclCommand", a.toArray(new String[0]));
    }

    static Properties clientProps(String path, String group) throws Exception {
        Properties p = load(path);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "15000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "15000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "10000");
        p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
        if (group != null) p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        return p;
    }

    /** Produces n records "tag-i" to partition 0 with the default (idempotent, acks=all) producer. */
    static void produce(Properties props, String topic, String tag, int n) throws Exception {
        try (KafkaProducer<String, String> p = new KafkaProducer<>(props)) {
            List<java.util.concurrent.Future<org.apache.kafka.clients.producer.RecordMetadata>> fs = new ArrayList<>();
            for (int i = 0; i < n; i++) fs.add(p.send(new ProducerRecord<>(topic, 0, null, tag + "-" + i)));
            p.flush();
            for (var f : fs) f.get();
        }
    }

    /** Reads at least n values of partition 0 from its start: with subscribe() in the props'
     *  group (and a commit) when there is one, else assign(). */
    static List<String> consume(Properties props, String topic, int n) {
        List<String> got = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(props)) {
            boolean group = props.containsKey(ConsumerConfig.GROUP_ID_CONFIG);
            if (group) c.subscribe(List.of(topic));
            else c.assign(List.of(new TopicPartition(topic, 0)));
            long deadline = System.currentTimeMillis() + 30_000;
            while (got.size() < n && System.currentTimeMillis() < deadline)
                for (ConsumerRecord<String, String> r : c.poll(Duration.ofMillis(200))) got.add(r.value());
            if (group) c.commitSync();
        }
        return got;
    }

    static List<String> expected(String tag, int n) {
        List<String> l = new ArrayList<>();
        for (int i = 0; i < n; i++) l.add(tag + "-" + i);
        return l;
    }

    public static void main(String[] args) throws Exception {
        Properties cfg = load(args[0]);
        String bs = cfg.getProperty("bootstrap"), admin = cfg.getProperty("admin.config");
        String user = cfg.getProperty("user"), password = cfg.getProperty("password");
        String topic = cfg.getProperty("topic"), denied = cfg.getProperty("denied.topic");
        String group = cfg.getProperty("group");
        String principal = "User:" + user;
        Checks c = new Checks();

        c.section("kafka-configs-add-scram", () -> {
            Run r = configs(bs, admin, "--alter", "--add-config",
                    "SCRAM-SHA-256=[iterations=8192,password=" + password + "]",
                    "--entity-type", "users", "--entity-name", user);
            eq(0, r.status(), "kafka-configs SCRAM-SHA-256 " + r);
            check(r.out().contains("Completed updating config for user " + user), "output: " + r);
            r = configs(bs, admin, "--alter", "--add-config", "SCRAM-SHA-512=[password=" + password + "]",
                    "--entity-type", "users", "--entity-name", user);
            eq(0, r.status(), "kafka-configs SCRAM-SHA-512 " + r);
        });

        c.section("kafka-configs-describe-scram", () -> {
            Run r = configs(bs, admin, "--describe", "--entity-type", "users", "--entity-name", user);
            eq(0, r.status(), "kafka-configs --describe " + r);
            check(r.out().contains("SCRAM credential configs for user-principal '" + user + "' are "),
                    "output: " + r);
            check(r.out().contains("SCRAM-SHA-256=iterations=8192"), "SCRAM-SHA-256 iterations: " + r);
            check(r.out().contains("SCRAM-SHA-512=iterations=4096"), "SCRAM-SHA-512 default iterations: " + r);
            check(!r.out().contains(password), "the password is shown: " + r);
        });

        c.section("admin-describeUserScramCredentials", () -> {
            try (Admin a = Admin.create(load(admin))) {
                UserScramCredentialsDescription d = a.describeUserScramCredentials(List.of(user))
                        .description(user).get();
                Map<ScramMechanism, Integer> got = new java.util.TreeMap<>();
                d.credentialInfos().forEach(i -> got.put(i.mechanism(), i.iterations()));
                eq(Map.of(ScramMechanism.SCRAM_SHA_256, 8192, ScramMechanism.SCRAM_SHA_512, 4096),
                        got, "credentials of " + user);
                String nobody = "nobody-" + UUID.randomUUID();
                expectError(ResourceNotFoundException.class, "describe an unknown user",
                        () -> a.describeUserScramCredentials(List.of(nobody)).description(nobody).get());
            }
        });

        c.section("kafka-acls-add", () -> {
            Run r = acls(bs, admin, "--add", "--allow-principal", principal, "--operation", "Write",
                    "--operation", "Describe", "--topic", topic);
            eq(0, r.status(), "kafka-acls --add (topic) " + r);
            check(r.out().contains("Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name="
                    + topic + ", patternType=LITERAL)`"), "output: " + r);
            // the consumer's ACLs: READ on the topic and the group
            r = acls(bs, admin, "--add", "--allow-principal", principal, "--consumer", "--topic", topic,
                    "--group", group);
            eq(0, r.status(), "kafka-acls --add --consumer " + r);
        });

        c.section("kafka-acls-list", () -> {
            eventually(10_000, "kafka-acls --list shows the new ACLs", () -> {
                Run r = acls(bs, admin, "--list", "--topic", topic);
                return r.status() == 0
                        && r.out().contains("(principal=" + principal + ", host=*, operation=WRITE, permissionType=ALLOW)")
                        && r.out().contains("(principal=" + principal + ", host=*, operation=READ, permissionType=ALLOW)")
                        && r.out().contains("(principal=" + principal + ", host=*, operation=DESCRIBE, permissionType=ALLOW)");
            });
            Run r = acls(bs, admin, "--list", "--group", group);
            check(r.out().contains("(principal=" + principal + ", host=*, operation=READ, permissionType=ALLOW)"),
                    "group ACLs: " + r);
            r = acls(bs, admin, "--list", "--principal", principal);
            check(r.out().contains("name=" + topic) && r.out().contains("name=" + group), "by principal: " + r);
        });

        c.section("java-scram-sha-512-produce-consume", () -> {
            Properties p = clientProps(cfg.getProperty("user512.config"), group);
            eventually(15_000, "SCRAM login and ACLs in effect", () -> {
                try {
                    produce(p, topic, "s512", 50);
                    return true;
                } catch (Exception e) {
                    return false;
                }
            });
            eq(expected("s512", 50), consume(p, topic, 50).subList(0, 50), "records read back as " + user);
        });

        c.section("java-scram-sha-256-produce", () -> {
            Properties p = clientProps(cfg.getProperty("user256.config"), null);
            produce(p, topic, "s256", 10);
            List<String> got = consume(p, topic, 60);
            eq(expected("s256", 10), got.subList(50, 60), "SCRAM-SHA-256 records");
        });

        c.section("java-refused-without-acls", () -> {
            Properties p = clientProps(cfg.getProperty("user512.config"), null);
            expectError(TopicAuthorizationException.class, "produce to " + denied,
                    () -> produce(p, denied, "no", 1));
            Properties q = clientProps(cfg.getProperty("user512.config"), group + "-other");
            expectError(GroupAuthorizationException.class, "consume in a group without READ",
                    () -> consume(q, topic, 1));
        });

        c.section("kafka-acls-remove", () -> {
            Run r = acls(bs, admin, "--remove", "--force", "--allow-principal", principal,
                    "--operation", "Write", "--topic", topic);
            eq(0, r.status(), "kafka-acls --remove " + r);
            r = acls(bs, admin, "--list", "--topic", topic);
            check(!r.out().contains("operation=WRITE"), "WRITE still listed: " + r);
            check(r.out().contains("operation=READ"), "READ gone too: " + r);
            Properties p = clientProps(cfg.getProperty("user512.config"), null);
            p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "false");
            eventually(15_000, "produce refused once WRITE is removed", () -> {
                try {
                    produce(p, topic, "late", 1);
                    return false;
                } catch (Exception e) {
                    Throwable t = e;
                    while (t != null && !(t instanceof TopicAuthorizationException)) t = t.getCause();
                    return t != null;
                }
            });
            // With WRITE on no topic at all, the idempotent producer's InitProducerId needs
            // IDEMPOTENT_WRITE on the cluster (KIP-679): ClusterAuthorizationException.
            Properties idem = clientProps(cfg.getProperty("user512.config"), null);
            expectError(ClusterAuthorizationException.class, "idempotent producer without WRITE anywhere",
                    () -> produce(idem, topic, "late", 1));
        });

        c.section("kafka-configs-delete-scram", () -> {
            Run r = configs(bs, admin, "--alter", "--delete-config", "SCRAM-SHA-256",
                    "--entity-type", "users", "--entity-name", user);
            eq(0, r.status(), "kafka-configs --delete-config " + r);
            r = configs(bs, admin, "--describe", "--entity-type", "users", "--entity-name", user);
            check(!r.out().contains("SCRAM-SHA-256") && r.out().contains("SCRAM-SHA-512=iterations=4096"),
                    "after deleting SCRAM-SHA-256: " + r);
            Properties p = clientProps(cfg.getProperty("user256.config"), null);
            eventually(15_000, "SCRAM-SHA-256 login refused once deleted", () -> {
                try (Admin a = Admin.create(p)) {
                    a.describeCluster().clusterId().get();
                    return false;
                } catch (Exception e) {
                    Throwable t = e;
                    while (t != null && !(t instanceof SaslAuthenticationException)) t = t.getCause();
                    return t != null;
                }
            });
        });

        for (String label : cfg.getProperty("ways", "").split(",")) {
            if (label.isEmpty()) continue;
            c.section("java-" + label, () -> {
                String t = cfg.getProperty("way." + label + ".topic");
                Properties p = clientProps(cfg.getProperty("way." + label + ".config"), null);
                produce(p, t, label, 20);
                eq(expected(label, 20), consume(p, t, 20), "records read back over " + label);
            });
        }

        System.exit(c.exit());
    }
}
