package tokendist.cdc;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.util.Map;
import org.apache.kafka.common.config.ConfigDef;
import org.apache.kafka.connect.connector.ConnectRecord;
import org.apache.kafka.connect.errors.DataException;
import org.apache.kafka.connect.header.ConnectHeaders;
import org.apache.kafka.connect.header.Header;
import org.apache.kafka.connect.header.Headers;
import org.apache.kafka.connect.transforms.Transformation;

/**
 * Makes a record's headers exactly the outbox row's {@code headers} column, as the polling
 * relay publishes them: one string header per key of the JSON object, in the column's order,
 * and no other header (the EventRouter's own {@code id} header is the outbox row id, which
 * the relay never sends). Runs after Debezium's EventRouter, which places the column in the
 * header named by {@code header} (its {@code table.fields.additional.placement}).
 *
 * <p>No built-in transform can read keys out of a JSON column: Kafka's HeaderFrom takes
 * fields of a Struct or Map value, and the outbox value must stay the payload's text.
 */
public final class OutboxHeaders<R extends ConnectRecord<R>> implements Transformation<R> {
    public static final String HEADER = "header";
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final ConfigDef CONFIG = new ConfigDef().define(
            HEADER, ConfigDef.Type.STRING, "outbox_headers", ConfigDef.Importance.HIGH,
            "the header the EventRouter put the outbox row's headers column in");

    private String header;

    @Override
    public void configure(Map<String, ?> configs) {
        Object value = configs.get(HEADER);
        header = value == null ? "outbox_headers" : value.toString();
    }

    @Override
    public R apply(R record) {
        Header column = record.headers().lastWithName(header);
        if (column == null) {
            return record; // not an outbox event (a heartbeat, say): left as it is
        }
        Headers headers = new ConnectHeaders();
        for (Map.Entry<String, JsonNode> entry : parse(column.value()).properties()) {
            JsonNode node = entry.getValue();
            // The relay sends str(value): a string as it is, anything else as its JSON text.
            headers.addString(entry.getKey(), node.isTextual() ? node.textValue() : node.toString());
        }
        return record.newRecord(record.topic(), record.kafkaPartition(), record.keySchema(),
                record.key(), record.valueSchema(), record.value(), record.timestamp(), headers);
    }

    private JsonNode parse(Object value) {
        JsonNode doc;
        try {
            doc = JSON.readTree(String.valueOf(value));
        } catch (IOException e) {
            throw new DataException("outbox headers column is not JSON: " + e.getMessage(), e);
        }
        if (doc == null || !doc.isObject()) {
            throw new DataException("outbox headers column is not a JSON object");
        }
        return doc;
    }

    @Override
    public ConfigDef config() {
        return CONFIG;
    }

    @Override
    public void close() {}
}
