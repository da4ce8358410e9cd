package gregor.prototests;

import static gregor.prototests.Checks.check;
import static gregor.prototests.Checks.eq;
import static gregor.prototests.Checks.eventually;
import static gregor.prototests.Checks.expectError;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AlterConfigsOptions;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.CreatePartitionsOptions;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.OffsetOutOfRangeException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicIdException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * AdminClient against one broker (node id 1, default broker settings): describeCluster,
 * createTopics (with configs, validateOnly, errors), describeTopics, describeConfigs (topic and
 * broker), incrementalAlterConfigs (SET, DELETE, errors, validateOnly), createPartitions,
 * deleteRecords, describeLogDirs, deleteTopics (by name and by id).
 *
 * Usage: AdminCheck BOOTSTRAP PREFIX   (topics are named PREFIX-a, PREFIX-b, ...)
 */
public final class AdminCheck {
    static final long TIMEOUT_S = 30;

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0], prefix = args[1];
        String a = prefix + "-a", b = prefix + "-b", cBad = prefix + "-c", d = prefix + "-d", e = prefix + "-e";
        ConfigResource topicA = new ConfigResource(ConfigResource.Type.TOPIC, a);
        AtomicReference<Uuid> idA = new AtomicReference<>(), idE = new AtomicReference<>();

        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, (int) (TIMEOUT_S * 1000));
        Checks c = new Checks();
        try (Admin admin = Admin.create(p)) {

            c.section("describeCluster", () -> {
                DescribeClusterResult r = admin.describeCluster();
                String clusterId = r.clusterId().get();
                check(clusterId != null && !clusterId.isEmpty(), "clusterId is empty: " + clusterId);
                Collection<Node> nodes = r.nodes().get();
                eq(1, nodes.size(), "number of nodes " + nodes);
                Node n = nodes.iterator().next();
                eq(1, n.id(), "node id");
                eq(bootstrap, n.host() + ":" + n.port(), "node address");
                Node ctl = r.controller().get();
                check(ctl != null && ctl.id() == 1, "controller should be node 1: " + ctl);
            });

            c.section("createTopics", () -> {
                NewTopic ta = new NewTopic(a, 2, (short) 1).configs(Map.of(
                        "retention.ms", "3600000", "segment.bytes", "1048576", "cleanup.policy", "delete"));
                NewTopic te = new NewTopic(e, Optional.empty(), Optional.empty());  // broker defaults
                CreateTopicsResult r = admin.createTopics(List.of(ta, te));
                r.all().get();
                eq(2, r.numPartitions(a).get(), "numPartitions(" + a + ")");
                eq(1, r.replicationFactor(a).get(), "replicationFactor(" + a + ")");
                eq(1, r.numPartitions(e).get(), "numPartitions of a topic created with the broker default (num.partitions=1)");
                eq(1, r.replicationFactor(e).get(), "replicationFactor with the broker default");
                idA.set(r.topicId(a).get());
                idE.set(r.topicId(e).get());
                check(!Uuid.ZERO_UUID.equals(idA.get()) && !idA.get().equals(idE.get()), "topic ids " + idA + " " + idE);
                Config cfg = r.config(a).get();
                eq("3600000", cfg.get("retention.ms").value(), "retention.ms in the CreateTopics response");
                eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, cfg.get("retention.ms").source(), "retention.ms source in the CreateTopics response");
                eq("1073741824".equals(cfg.get("segment.bytes").value()), false, "segment.bytes in the CreateTopics response is the topic's");

                // validateOnly: succeeds, creates nothing
                admin.createTopics(List.of(new NewTopic(b, 3, (short) 1)), new CreateTopicsOptions().validateOnly(true)).all().get();
                expectError(TopicExistsException.class, "creating an existing topic",
                        () -> admin.createTopics(List.of(new NewTopic(a, 1, (short) 1))).all().get());
                expectError(InvalidConfigurationException.class, "retention.ms=abc",
                        () -> admin.createTopics(List.of(new NewTopic(cBad, 1, (short) 1).configs(Map.of("retention.ms", "abc")))).all().get());
                expectError(InvalidReplicationFactorException.class, "replication factor 3 on one broker",
                        () -> admin.createTopics(List.of(new NewTopic(d, 1, (short) 3))).all().get());
                Set<String> names = admin.listTopics().names().get();
                check(names.contains(a) && names.contains(e), "listTopics lacks the new topics: " + names);
                check(!names.contains(b), "validateOnly created " + b);
                check(!names.contains(cBad), "a topic with an invalid config was created: " + cBad);
                check(!names.contains(d), "a topic with an impossible replication factor was created: " + d);
            });

            c.section("describeTopics", () -> {
                TopicDescription td = admin.describeTopics(List.of(a)).allTopicNames().get().get(a);
                eq(a, td.name(), "name");
                eq(false, td.isInternal(), "isInternal");
                eq(idA.get(), td.topicId(), "topicId matches CreateTopics");
                List<TopicPartitionInfo> ps = td.partitions();
                eq(2, ps.size(), "partition count");
                for (int i = 0; i < ps.size(); i++) {
                    TopicPartitionInfo pi = ps.get(i);
                    eq(i, pi.partition(), "partition index");
                    eq(1, pi.leader() == null ? -1 : pi.leader().id(), "leader of partition " + i);
                    eq(List.of(1), pi.replicas().stream().map(Node::id).toList(), "replicas of partition " + i);
                    eq(List.of(1), pi.isr().stream().map(Node::id).toList(), "isr of partition " + i);
                }
                TopicDescription byId = admin.describeTopics(TopicCollection.ofTopicIds(List.of(idA.get())))
                        .allTopicIds().get().get(idA.get());
                eq(a, byId.name(), "describeTopics by id: name");
                eq(2, byId.partitions().size(), "describeTopics by id: partitions");
                expectError(UnknownTopicOrPartitionException.class, "describing a missing topic",
                        () -> admin.describeTopics(List.of(prefix + "-missing")).allTopicNames().get());
            });

            c.section("describeConfigs-topic", () -> {
                Config cfg = admin.describeConfigs(List.of(topicA), new DescribeConfigsOptions().includeSynonyms(true)
                        .includeDocumentation(true)).all().get().get(topicA);
                Checks.Soft soft = new Checks.Soft();
                ConfigEntry rms = entry(cfg, "retention.ms");
                soft.eq("3600000", rms.value(), "retention.ms");
                soft.eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, rms.source(), "retention.ms source");
                soft.eq(false, rms.isDefault(), "retention.ms isDefault");
                soft.eq(false, rms.isSensitive(), "retention.ms isSensitive");
                soft.eq(false, rms.isReadOnly(), "retention.ms isReadOnly");
                soft.eq(ConfigEntry.ConfigType.LONG, rms.type(), "retention.ms type");
                soft.check(!rms.synonyms().isEmpty(), "retention.ms has no synonyms");
                if (!rms.synonyms().isEmpty()) {
                    soft.eq("retention.ms", rms.synonyms().get(0).name(), "retention.ms first synonym name");
                    soft.eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, rms.synonyms().get(0).source(), "retention.ms first synonym source");
                }
                soft.run(() -> {
                    soft.eq("1048576", entry(cfg, "segment.bytes").value(), "segment.bytes");
                    soft.eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, entry(cfg, "segment.bytes").source(), "segment.bytes source");
                    soft.eq(ConfigEntry.ConfigType.INT, entry(cfg, "segment.bytes").type(), "segment.bytes type");
                });
                // untouched configs: Kafka's defaults, from the broker's defaults
                String[][] defaults = {
                    {"max.message.bytes", "1048588", "message.max.bytes"},
                    {"message.timestamp.type", "CreateTime", "log.message.timestamp.type"},
                    {"retention.bytes", "-1", "log.retention.bytes"},
                    {"compression.type", "producer", "compression.type"},
                    {"flush.messages", "9223372036854775807", "log.flush.interval.messages"},
                    {"segment.ms", "604800000", null},
                    {"min.insync.replicas", "1", "min.insync.replicas"},
                };
                for (String[] dflt : defaults) soft.run(() -> {
                    ConfigEntry ce = entry(cfg, dflt[0]);
                    soft.eq(dflt[1], ce.value(), dflt[0] + " default value");
                    soft.check(ce.source() != ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, dflt[0] + " source " + ce.source());
                    if (dflt[2] != null)
                        soft.check(ce.synonyms().stream().anyMatch(s -> s.name().equals(dflt[2])),
                                dflt[0] + " synonyms lack broker config " + dflt[2] + ": " + ce.synonyms());
                });
                soft.run(() -> {
                    ConfigEntry cp = entry(cfg, "cleanup.policy");
                    soft.eq("delete", cp.value(), "cleanup.policy");
                    soft.eq(ConfigEntry.ConfigType.LIST, cp.type(), "cleanup.policy type");
                });
                soft.check(rms.documentation() != null && !rms.documentation().isEmpty(),
                        "retention.ms has no documentation (includeDocumentation=true)");

                ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, prefix + "-missing");
                soft.run(() -> expectError(UnknownTopicOrPartitionException.class, "describeConfigs of a missing topic",
                        () -> admin.describeConfigs(List.of(missing)).all().get()));
                soft.done();
            });

            c.section("describeConfigs-broker", () -> {
                ConfigResource broker = new ConfigResource(ConfigResource.Type.BROKER, "1");
                Config cfg = admin.describeConfigs(List.of(broker), new DescribeConfigsOptions().includeSynonyms(true))
                        .all().get().get(broker);
                Checks.Soft soft = new Checks.Soft();
                String[][] want = {
                    {"num.partitions", "1"}, {"log.retention.hours", "168"}, {"log.segment.bytes", "1073741824"},
                    {"default.replication.factor", "1"}, {"auto.create.topics.enable", "true"},
                    {"message.max.bytes", "1048588"}, {"log.retention.check.interval.ms", "300000"},
                };
                for (String[] w : want) soft.run(() -> {
                    ConfigEntry ce = entry(cfg, w[0]);
                    soft.eq(w[1], ce.value(), "broker config " + w[0]);
                    soft.eq(ConfigEntry.ConfigSource.DEFAULT_CONFIG, ce.source(), "broker config " + w[0] + " source");
                });
                soft.run(() -> {
                    ConfigEntry nodeId = entry(cfg, "node.id");
                    soft.eq("1", nodeId.value(), "broker config node.id");
                    soft.eq(ConfigEntry.ConfigSource.STATIC_BROKER_CONFIG, nodeId.source(), "node.id source");
                });
                soft.run(() -> soft.eq(ConfigEntry.ConfigType.INT, entry(cfg, "num.partitions").type(), "num.partitions type"));
                soft.done();
            });

            c.section("incrementalAlterConfigs", () -> {
                admin.incrementalAlterConfigs(Map.of(topicA, List.of(
                        new AlterConfigOp(new ConfigEntry("retention.ms", "7200000"), AlterConfigOp.OpType.SET),
                        new AlterConfigOp(new ConfigEntry("max.message.bytes", "2000000"), AlterConfigOp.OpType.SET),
                        new AlterConfigOp(new ConfigEntry("segment.bytes", null), AlterConfigOp.OpType.DELETE)
                ))).all().get();
                Config cfg = describe(admin, topicA);
                eq("7200000", entry(cfg, "retention.ms").value(), "retention.ms after SET");
                eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, entry(cfg, "retention.ms").source(), "retention.ms source after SET");
                eq("2000000", entry(cfg, "max.message.bytes").value(), "max.message.bytes after SET");
                eq(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, entry(cfg, "max.message.bytes").source(), "max.message.bytes source after SET");
                ConfigEntry seg = entry(cfg, "segment.bytes");
                eq("1073741824", seg.value(), "segment.bytes after DELETE (back to log.segment.bytes)");
                eq(ConfigEntry.ConfigSource.DEFAULT_CONFIG, seg.source(), "segment.bytes source after DELETE");
                check(seg.synonyms().stream().noneMatch(s -> s.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG),
                        "segment.bytes still has a topic synonym after DELETE: " + seg.synonyms());

                // invalid values are rejected with INVALID_CONFIG and change nothing
                Checks.Soft soft = new Checks.Soft();
                soft.run(() -> expectError(InvalidConfigurationException.class, "SET retention.ms=abc",
                        () -> admin.incrementalAlterConfigs(Map.of(topicA, List.of(
                                new AlterConfigOp(new ConfigEntry("max.message.bytes", "3000000"), AlterConfigOp.OpType.SET),
                                new AlterConfigOp(new ConfigEntry("retention.ms", "abc"), AlterConfigOp.OpType.SET)))).all().get()));
                soft.run(() -> expectError(InvalidConfigurationException.class, "SET segment.bytes=1000 (Kafka 4's minimum is 1048576)",
                        () -> admin.incrementalAlterConfigs(Map.of(topicA, List.of(
                                new AlterConfigOp(new ConfigEntry("segment.bytes", "1000"), AlterConfigOp.OpType.SET)))).all().get()));
                soft.run(() -> expectError(InvalidConfigurationException.class, "SET of an unknown topic config",
                        () -> admin.incrementalAlterConfigs(Map.of(topicA, List.of(
                                new AlterConfigOp(new ConfigEntry("no.such.config", "1"), AlterConfigOp.OpType.SET)))).all().get()));
                // validateOnly changes nothing
                soft.run(() -> admin.incrementalAlterConfigs(Map.of(topicA, List.of(
                        new AlterConfigOp(new ConfigEntry("retention.ms", "1000"), AlterConfigOp.OpType.SET))),
                        new AlterConfigsOptions().validateOnly(true)).all().get());
                Config after = describe(admin, topicA);
                soft.eq("7200000", entry(after, "retention.ms").value(), "retention.ms after failed and validateOnly alters");
                soft.eq("2000000", entry(after, "max.message.bytes").value(), "max.message.bytes after a failed alter");
                soft.eq("1073741824", entry(after, "segment.bytes").value(), "segment.bytes after a failed alter");
                soft.done();
            });

            c.section("createPartitions", () -> {
                admin.createPartitions(Map.of(a, NewPartitions.increaseTo(4))).all().get();
                eventually(10_000, "describeTopics shows 4 partitions", () ->
                        admin.describeTopics(List.of(a)).allTopicNames().get().get(a).partitions().size() == 4);
                for (TopicPartitionInfo pi : admin.describeTopics(List.of(a)).allTopicNames().get().get(a).partitions())
                    eq(1, pi.leader() == null ? -1 : pi.leader().id(), "leader of new partition " + pi.partition());
                expectError(InvalidPartitionsException.class, "decreasing partitions 4 -> 3",
                        () -> admin.createPartitions(Map.of(a, NewPartitions.increaseTo(3))).all().get());
                admin.createPartitions(Map.of(a, NewPartitions.increaseTo(6)), new CreatePartitionsOptions().validateOnly(true)).all().get();
                expectError(UnknownTopicOrPartitionException.class, "createPartitions on a missing topic",
                        () -> admin.createPartitions(Map.of(prefix + "-missing", NewPartitions.increaseTo(3))).all().get());
                Thread.sleep(500);
                eq(4, admin.describeTopics(List.of(a)).allTopicNames().get().get(a).partitions().size(),
                        "partition count after validateOnly increaseTo(6)");
                // the new partitions take writes
                try (KafkaProducer<byte[], byte[]> prod = ProducerConsumerCheck.defaultProducer(bootstrap, Map.of())) {
                    eq(0L, prod.send(new ProducerRecord<>(a, 3, null, "x".getBytes())).get().offset(), "offset of the first record in new partition 3");
                }
            });

            c.section("deleteRecords", () -> {
                TopicPartition tp = new TopicPartition(a, 0);
                try (KafkaProducer<byte[], byte[]> prod = ProducerConsumerCheck.defaultProducer(bootstrap, Map.of())) {
                    for (int i = 0; i < 10; i++)
                        eq((long) i, prod.send(new ProducerRecord<>(a, 0, null, ("r" + i).getBytes())).get().offset(), "offset of record " + i);
                }
                long low = admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(4))).lowWatermarks().get(tp).get().lowWatermark();
                eq(4L, low, "low watermark after deleteRecords(before 4)");
                eq(4L, offset(admin, tp, OffsetSpec.earliest()), "earliest offset after deleteRecords");
                eq(10L, offset(admin, tp, OffsetSpec.latest()), "latest offset after deleteRecords");
                expectError(OffsetOutOfRangeException.class, "deleteRecords beyond the high watermark",
                        () -> admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(11))).all().get());

                Properties cp = new Properties();
                cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
                cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
                cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
                cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
                try (KafkaConsumer<byte[], byte[]> con = new KafkaConsumer<>(cp)) {
                    con.assign(List.of(tp));
                    eq(4L, con.beginningOffsets(List.of(tp)).get(tp), "consumer beginningOffsets after deleteRecords");
                    con.seek(tp, 1);  // below the log start offset: the fetch gets OFFSET_OUT_OF_RANGE
                    expectError(org.apache.kafka.clients.consumer.OffsetOutOfRangeException.class, "fetch below the log start offset",
                            () -> { long end = System.currentTimeMillis() + 15_000;
                                    while (System.currentTimeMillis() < end) con.poll(Duration.ofMillis(200)); });
                    con.seekToBeginning(List.of(tp));
                    List<Long> offsets = new ArrayList<>();
                    long end = System.currentTimeMillis() + 15_000;
                    while (offsets.size() < 6 && System.currentTimeMillis() < end)
                        for (ConsumerRecord<byte[], byte[]> r : con.poll(Duration.ofMillis(200))) offsets.add(r.offset());
                    eq(List.of(4L, 5L, 6L, 7L, 8L, 9L), offsets, "offsets read from the beginning after deleteRecords");
                }
            });

            c.section("describeLogDirs", () -> {
                Map<String, LogDirDescription> dirs = admin.describeLogDirs(List.of(1)).allDescriptions().get().get(1);
                check(dirs != null && !dirs.isEmpty(), "no log dirs for broker 1: " + dirs);
                ReplicaInfo ri = null;
                for (LogDirDescription ld : dirs.values()) {
                    check(ld.error() == null, "log dir error " + ld.error());
                    ReplicaInfo x = ld.replicaInfos().get(new TopicPartition(a, 0));
                    if (x != null) ri = x;
                }
                check(ri != null, "describeLogDirs has no " + a + "-0: " + dirs);
                check(ri.size() > 0, a + "-0 size " + ri.size());
            });

            c.section("deleteTopics", () -> {
                admin.deleteTopics(TopicCollection.ofTopicNames(List.of(a))).all().get();
                admin.deleteTopics(TopicCollection.ofTopicIds(List.of(idE.get()))).all().get();
                eventually(10_000, "deleted topics gone from listTopics", () -> {
                    Set<String> names = admin.listTopics().names().get();
                    return !names.contains(a) && !names.contains(e);
                });
                expectError(UnknownTopicOrPartitionException.class, "describing a deleted topic",
                        () -> admin.describeTopics(List.of(a)).allTopicNames().get());
                expectError(UnknownTopicOrPartitionException.class, "deleting a missing topic by name",
                        () -> admin.deleteTopics(TopicCollection.ofTopicNames(List.of(a))).all().get());
                expectError(UnknownTopicIdException.class, "deleting a missing topic by id",
                        () -> admin.deleteTopics(TopicCollection.ofTopicIds(List.of(idE.get()))).all().get());
            });
        }
        System.exit(c.exit());
    }

    static ConfigEntry entry(Config cfg, String name) {
        ConfigEntry e = cfg.get(name);
        if (e == null) throw new AssertionError("config " + name + " missing from describeConfigs");
        return e;
    }

    static Config describe(Admin admin, ConfigResource r) throws Exception {
        return admin.describeConfigs(List.of(r), new DescribeConfigsOptions().includeSynonyms(true)).all().get().get(r);
    }

    static long offset(Admin admin, TopicPartition tp, OffsetSpec spec) throws Exception {
        ListOffsetsResult.ListOffsetsResultInfo i = admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get();
        return i.offset();
    }
}
