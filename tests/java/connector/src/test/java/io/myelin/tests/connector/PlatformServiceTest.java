package io.myelin.tests.connector;

import static io.myelin.tests.connector.Connector.CALL_TIMEOUT;
import static io.myelin.tests.connector.Connector.CONTEXT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

import io.axoniq.axonserver.connector.AxonServerConnection;
import io.axoniq.axonserver.connector.AxonServerConnectionFactory;
import io.axoniq.axonserver.grpc.InstructionAck;
import io.axoniq.axonserver.grpc.control.ClientIdentification;
import io.axoniq.axonserver.grpc.control.EventProcessorInfo;
import io.axoniq.axonserver.grpc.control.Heartbeat;
import io.axoniq.axonserver.grpc.control.PlatformInboundInstruction;
import io.axoniq.axonserver.grpc.control.PlatformInfo;
import io.axoniq.axonserver.grpc.control.PlatformOutboundInstruction;
import io.axoniq.axonserver.grpc.control.PlatformServiceGrpc;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.Status;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * {@code PlatformService} as the connector uses it (docs: MESSAGING.md §1.2, §1.3): where to connect,
 * the instruction stream's acks, and what a client of an unknown context is told. The wire-level
 * cases talk to the server through the connector's own generated gRPC stubs, so they see exactly
 * the messages the connector would.
 */
@ExtendWith(MyelinExtension.class)
class PlatformServiceTest {

    private static final Metadata.Key<String> CONTEXT_HEADER = Metadata.Key.of("AxonIQ-Context", Metadata.ASCII_STRING_MARSHALLER);
    /** The server sends a heartbeat on the instruction stream every 2 s (crates/grpc GrpcConfig). */
    private static final long SERVER_HEARTBEAT_WAIT_MS = 5_000;

    private ManagedChannel channel;

    @BeforeEach
    void openChannel(MyelinServer server) {
        Metadata headers = new Metadata();
        headers.put(CONTEXT_HEADER, CONTEXT);
        channel = ManagedChannelBuilder.forAddress(MyelinServer.HOST, server.grpcPort())
                .usePlaintext()
                .intercept(MetadataUtils.newAttachHeadersInterceptor(headers))
                .build();
    }

    @AfterEach
    void closeChannel() throws InterruptedException {
        channel.shutdownNow();
        channel.awaitTermination(5, TimeUnit.SECONDS);
    }

    private static ClientIdentification identification() {
        return ClientIdentification.newBuilder()
                .setClientId("myelin-test-wire")
                .setComponentName("myelin-test")
                .setVersion("4.6")
                .build();
    }

    @Test
    void getPlatformServerTellsASingleNodeClientToStayOnThisConnection(MyelinServer server) {
        PlatformInfo info = PlatformServiceGrpc.newBlockingStub(channel)
                .withDeadlineAfter(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)
                .getPlatformServer(identification());

        assertTrue(info.getSameConnection(), "same_connection in " + info);
        assertEquals(server.grpcPort(), info.getPrimary().getGrpcPort(), "primary.grpc_port: the port the server listens on; " + info);
        assertEquals(server.httpPort(), info.getPrimary().getHttpPort(), "primary.http_port: the port the server listens on; " + info);
        assertFalse(info.getPrimary().getNodeName().isEmpty(), "primary.node_name is set; " + info);
        assertFalse(info.getPrimary().getHostName().isEmpty(), "primary.host_name is set; " + info);
    }

    /** The server's half of one platform instruction stream. */
    private static final class Inbox implements StreamObserver<PlatformOutboundInstruction> {
        final BlockingQueue<PlatformOutboundInstruction> received = new LinkedBlockingQueue<>();
        final CompletableFuture<Status> closed = new CompletableFuture<>();

        @Override
        public void onNext(PlatformOutboundInstruction instruction) {
            received.add(instruction);
        }

        @Override
        public void onError(Throwable failure) {
            closed.complete(Status.fromThrowable(failure));
        }

        @Override
        public void onCompleted() {
            closed.complete(Status.OK);
        }

        /** The next ack, skipping the server's heartbeats; fails the test if none comes. */
        InstructionAck nextAck(String after) throws InterruptedException {
            long deadline = System.nanoTime() + CALL_TIMEOUT.toNanos();
            while (true) {
                long left = deadline - System.nanoTime();
                PlatformOutboundInstruction next = received.poll(Math.max(0, left), TimeUnit.NANOSECONDS);
                assertNotNull(next, "no ack within " + CALL_TIMEOUT.toSeconds() + " s after " + after);
                if (next.hasHeartbeat()) {
                    continue;
                }
                assertTrue(next.hasAck(), "after " + after + " the server sent " + next + ", expected an ack");
                return next.getAck();
            }
        }
    }

    private static PlatformInboundInstruction heartbeat(String id) {
        return PlatformInboundInstruction.newBuilder().setInstructionId(id).setHeartbeat(Heartbeat.getDefaultInstance()).build();
    }

    @Test
    void theInstructionStreamAcksInstructionsWithAnIdAndOnlyThose() throws Exception {
        Inbox inbox = new Inbox();
        StreamObserver<PlatformInboundInstruction> outbox = PlatformServiceGrpc.newStub(channel).openStream(inbox);

        // As the connector opens it: register without an id, then heartbeats with one.
        outbox.onNext(PlatformInboundInstruction.newBuilder().setRegister(identification()).build());
        outbox.onNext(heartbeat("heartbeat-1"));
        InstructionAck ack = inbox.nextAck("register (no id) and heartbeat-1");
        assertEquals("heartbeat-1", ack.getInstructionId(), "the first ack is heartbeat-1's (register carried no id): " + ack);
        assertTrue(ack.getSuccess(), "heartbeat-1's ack says success: " + ack);

        // Processor status with an id is acked; the connector's shared success ack has no id and
        // must be taken silently (MESSAGING.md §1.3 item 5).
        outbox.onNext(PlatformInboundInstruction.newBuilder().setInstructionId("processor-info-1")
                .setEventProcessorInfo(EventProcessorInfo.newBuilder().setProcessorName("projection").build()).build());
        ack = inbox.nextAck("processor-info-1");
        assertEquals("processor-info-1", ack.getInstructionId(), "ack of the event processor info: " + ack);
        assertTrue(ack.getSuccess(), "processor-info-1's ack says success: " + ack);
        outbox.onNext(PlatformInboundInstruction.newBuilder()
                .setAck(InstructionAck.newBuilder().setSuccess(true)).build());

        // An instruction of no known type, with an id: success=false, UNSUPPORTED_INSTRUCTION.
        outbox.onNext(PlatformInboundInstruction.newBuilder().setInstructionId("unknown-1").build());
        ack = inbox.nextAck("an instruction of no known type with id unknown-1 (and an ack without id before it)");
        assertEquals("unknown-1", ack.getInstructionId(), "the ack after an id-less ack and unknown-1 is unknown-1's: " + ack);
        assertFalse(ack.getSuccess(), "an instruction of no known type is not a success: " + ack);
        assertEquals("AXONIQ-1002", ack.getError().getErrorCode(), "error code of an unsupported instruction: " + ack);

        // The stream is still alive, and the server heartbeats on it.
        outbox.onNext(heartbeat("heartbeat-2"));
        assertEquals("heartbeat-2", inbox.nextAck("heartbeat-2").getInstructionId(), "ack after heartbeat-2");
        long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(SERVER_HEARTBEAT_WAIT_MS);
        boolean serverBeat = false;
        while (!serverBeat && System.nanoTime() < deadline) {
            PlatformOutboundInstruction next = inbox.received.poll(100, TimeUnit.MILLISECONDS);
            serverBeat = next != null && next.hasHeartbeat() && next.getInstructionId().isEmpty();
        }
        assertTrue(serverBeat, "the server sent a heartbeat (without instruction id) within " + SERVER_HEARTBEAT_WAIT_MS + " ms");

        // A client that half-closes gets the stream completed with OK.
        outbox.onCompleted();
        Status closed = inbox.closed.get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        assertEquals(Status.Code.OK, closed.getCode(), "how the server ended the stream after the client half-closed: " + closed);
    }

    @Test
    void theConnectorsOwnInstructionsAreAcknowledged(MyelinServer server) throws Exception {
        AxonServerConnectionFactory factory = Connector.factory(server).build();
        try {
            AxonServerConnection connection = factory.connect(CONTEXT);
            Connector.awaitConnected(connection, server);

            // sendInstruction completes when the server acks the instruction's id.
            connection.controlChannel().sendInstruction(heartbeat("connector-heartbeat-1"))
                    .get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
            ExecutionException unsupported = assertThrows(ExecutionException.class,
                    () -> connection.controlChannel()
                            .sendInstruction(PlatformInboundInstruction.newBuilder().setInstructionId("connector-unknown-1").build())
                            .get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS),
                    "an instruction of no known type fails");
            assertEquals("AXONIQ-1002", Errors.axonCode(unsupported),
                    "the connector's failure for an unsupported instruction:" + Errors.describe(unsupported));
        } finally {
            factory.shutdown();
        }
    }

    @Test
    void aClientOfAnUnknownContextIsToldThereIsNoEventStoreForIt(MyelinServer server) {
        AxonServerConnectionFactory factory = Connector.factory(server).build();
        try {
            AxonServerConnection connection = factory.connect("no-such-context");
            ExecutionException failure = assertThrows(ExecutionException.class,
                    () -> connection.eventChannel().getLastToken().get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS),
                    "GetLastToken on context no-such-context, which does not exist");

            assertEquals("AXONIQ-6000", Errors.axonCode(failure),
                    "NO_EVENTSTORE for an unknown context; the failure was:" + Errors.describe(failure));
            Status status = Errors.grpcStatus(failure);
            assertNotNull(status, "a gRPC status in the failure:" + Errors.describe(failure));
            assertTrue(String.valueOf(status.getDescription()).contains("no-such-context"),
                    "the description names the context: " + status);
        } finally {
            factory.shutdown();
        }
    }
}
