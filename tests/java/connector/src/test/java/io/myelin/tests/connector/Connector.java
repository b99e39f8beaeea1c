package io.myelin.tests.connector;

import java.time.Duration;
import java.util.UUID;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import com.google.protobuf.ByteString;
import io.axoniq.axonserver.connector.AxonServerConnection;
import io.axoniq.axonserver.connector.AxonServerConnectionFactory;
import io.axoniq.axonserver.connector.impl.ServerAddress;
import io.axoniq.axonserver.grpc.MetaDataValue;
import io.axoniq.axonserver.grpc.SerializedObject;
import io.axoniq.axonserver.grpc.event.Event;

/** Building connectors aimed at a test's server, and events to append through them. */
final class Connector {

    static final String CONTEXT = "default";
    /** How long any single call to the server may take before a test gives up on it. */
    static final Duration CALL_TIMEOUT = Duration.ofSeconds(10);

    private Connector() {
    }

    /**
     * A factory as an application would build one: routed through {@code server}'s gRPC port only.
     * The reconnect interval and connect timeout are AF 4.13's (2000 ms, 5000 ms).
     */
    static AxonServerConnectionFactory.Builder factory(MyelinServer server) {
        return AxonServerConnectionFactory.forClient("myelin-test", "myelin-test-" + UUID.randomUUID())
                .routingServers(new ServerAddress(MyelinServer.HOST, server.grpcPort()))
                .reconnectInterval(2000, TimeUnit.MILLISECONDS)
                .connectTimeout(5000, TimeUnit.MILLISECONDS);
    }

    /** The same, with {@code recorder} on every channel the connector builds. */
    static AxonServerConnectionFactory.Builder factory(MyelinServer server, WireRecorder recorder) {
        return factory(server).customize(builder -> builder.intercept(recorder));
    }

    /** Waits until the connection's platform stream is up; fails the test after CALL_TIMEOUT. */
    static void awaitConnected(AxonServerConnection connection, MyelinServer server) {
        await(connection::isConnected, "the connection to " + MyelinServer.HOST + ":" + server.grpcPort()
                + " is connected");
    }

    static void await(BooleanSupplier condition, String what) {
        long deadline = System.nanoTime() + CALL_TIMEOUT.toNanos();
        while (!condition.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out after " + CALL_TIMEOUT.toSeconds() + " s waiting until " + what);
            }
            MyelinServer.sleep(20);
        }
    }

    /** Event {@code sequence} of aggregate {@code aggregateId}, with a payload and metadata that name it. */
    static Event event(String aggregateId, long sequence) {
        return Event.newBuilder()
                .setMessageIdentifier(UUID.randomUUID().toString())
                .setAggregateIdentifier(aggregateId)
                .setAggregateSequenceNumber(sequence)
                .setAggregateType("Order")
                .setTimestamp(1_700_000_000_000L + sequence)
                .setPayload(SerializedObject.newBuilder()
                        .setType("io.myelin.tests.OrderEvent")
                        .setRevision("1")
                        .setData(ByteString.copyFromUtf8("{\"order\":\"" + aggregateId + "\",\"seq\":" + sequence + "}")))
                .putMetaData("traceId", MetaDataValue.newBuilder().setTextValue("trace-" + sequence).build())
                .putMetaData("attempt", MetaDataValue.newBuilder().setNumberValue(sequence).build())
                .putMetaData("replayed", MetaDataValue.newBuilder().setBooleanValue(sequence % 2 == 0).build())
                .build();
    }

    /** A snapshot of {@code aggregateId} at {@code sequence}. */
    static Event snapshot(String aggregateId, long sequence) {
        return Event.newBuilder()
                .setMessageIdentifier(UUID.randomUUID().toString())
                .setAggregateIdentifier(aggregateId)
                .setAggregateSequenceNumber(sequence)
                .setAggregateType("Order")
                .setTimestamp(1_700_000_100_000L + sequence)
                .setSnapshot(true)
                .setPayload(SerializedObject.newBuilder()
                        .setType("io.myelin.tests.OrderSnapshot")
                        .setRevision("1")
                        .setData(ByteString.copyFromUtf8("{\"order\":\"" + aggregateId + "\",\"upTo\":" + sequence + "}")))
                .build();
    }
}
