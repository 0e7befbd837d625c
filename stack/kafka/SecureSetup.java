// The secured stack's topics and ACLs (stack.sh up --secure), made by the `admin` principal.
// Run from source by the JDK's launcher against the broker's own jars: the ACL tool
// (kafka-acls.sh) lives in kafka-tools, which drags in Kafka Connect.
//
//   java -cp '<kafka-libs>/*' SecureSetup.java ADMIN_PROPERTIES TOPIC GROUP PARTITIONS REPLICATION
//
// Idempotent: existing topics are kept, an ACL created twice is one ACL.

import java.io.FileInputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class SecureSetup {
  public static void main(String[] args) throws Exception {
    Properties props = new Properties();
    try (FileInputStream in = new FileInputStream(args[0])) {
      props.load(in);
    }
    String topic = args[1];
    String dlq = topic + ".dlq"; // KafkaSettings.dlq_topic
    String group = args[2];
    int partitions = Integer.parseInt(args[3]);
    short replication = Short.parseShort(args[4]);

    List<AclBinding> acls = new ArrayList<>();
    // The relay publishes the outbox: write (idempotent write is implied by it) and
    // describe of the payments topic, nothing else.
    allow(acls, "relay", ResourceType.TOPIC, topic, AclOperation.WRITE, AclOperation.DESCRIBE);
    // A consumer reads the payments topic, parks what it cannot process in the DLQ and
    // commits its group's offsets (describe: finding the coordinator, leaving the group).
    allow(acls, "consumer", ResourceType.TOPIC, topic, AclOperation.READ, AclOperation.DESCRIBE);
    allow(acls, "consumer", ResourceType.TOPIC, dlq, AclOperation.WRITE, AclOperation.DESCRIBE);
    allow(acls, "consumer", ResourceType.GROUP, group, AclOperation.READ, AclOperation.DESCRIBE);
    // The operator replays (moves the group's offsets once it is empty) and re-drives the
    // DLQ into the payments topic.
    for (String t : List.of(topic, dlq)) {
      allow(acls, "operator", ResourceType.TOPIC, t,
          AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE);
    }
    allow(acls, "operator", ResourceType.GROUP, group, AclOperation.READ, AclOperation.DESCRIBE);

    try (Admin admin = Admin.create(props)) {
      List<NewTopic> topics = new ArrayList<>();
      for (String name : List.of(topic, dlq)) {
        topics.add(new NewTopic(name, partitions, replication)
            .configs(Map.of("min.insync.replicas", String.valueOf(Math.min(2, replication)))));
      }
      for (KafkaFuture<Void> created : admin.createTopics(topics).values().values()) {
        try {
          created.get();
        } catch (ExecutionException e) {
          if (!(e.getCause() instanceof TopicExistsException)) throw e;
        }
      }
      admin.createAcls(acls).all().get();
      // The first group request creates __consumer_offsets; the admin client waits for its
      // coordinator here, so the stack's first consumer or replay does not.
      admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
    }
    System.out.println("topics " + topic + ", " + dlq + "; " + acls.size() + " ACLs");
  }

  private static void allow(List<AclBinding> acls, String principal, ResourceType type,
      String name, AclOperation... operations) {
    for (AclOperation op : operations) {
      acls.add(new AclBinding(new ResourcePattern(type, name, PatternType.LITERAL),
          new AccessControlEntry("User:" + principal, "*", op, AclPermissionType.ALLOW)));
    }
  }
}
