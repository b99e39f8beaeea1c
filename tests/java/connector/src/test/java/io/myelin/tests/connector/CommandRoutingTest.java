package io.myelin.tests.connector;

import static io.myelin.tests.connector.Connector.CALL_TIMEOUT;
import static io.myelin.tests.connector.Connector.CONTEXT;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

import com.google.protobuf.ByteString;
import io.axoniq.axonserver.connector.AxonServerConnection;
import io.axoniq.axonserver.connector.AxonServerConnectionFactory;
import io.axoniq.axonserver.connector.Registration;
import io.axoniq.axonserver.grpc.MetaDataValue;
import io.axoniq.axonserver.grpc.ProcessingInstruction;
import io.axoniq.axonserver.grpc.ProcessingKey;
import io.axoniq.axonserver.grpc.SerializedObject;
import io.axoniq.axonserver.grpc.command.Command;
import io.axoniq.axonserver.grpc.command.CommandResponse;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Commands through the connector's {@code CommandChannel}, as Axon Framework's
 * {@code AxonServerCommandBus} drives it: handlers in one application, senders in another, every
 * command routed by the server (MESSAGING.md §2). Each test uses command names of its own.
 */
@ExtendWith(MyelinExtension.class)
class CommandRoutingTest {

    private final List<AxonServerConnectionFactory> factories = new ArrayList<>();

    @AfterEach
    void disconnect() {
        factories.forEach(AxonServerConnectionFactory::shutdown);
    }

    private AxonServerConnection connect(MyelinServer server) {
        AxonServerConnectionFactory factory = Connector.factory(server).build();
        factories.add(factory);
        AxonServerConnection connection = factory.connect(CONTEXT);
        Connector.awaitConnected(connection, server);
        return connection;
    }

    private static Command command(String name, String payload, String routingKey) {
        Command.Builder command = Command.newBuilder()
                .setMessageIdentifier(UUID.randomUUID().toString())
                .setName(name)
                .setPayload(SerializedObject.newBuilder()
                        .setType("java.lang.String")
                        .setData(ByteString.copyFromUtf8(payload)));
        if (routingKey != null) {
            command.addProcessingInstructions(ProcessingInstruction.newBuilder()
                    .setKey(ProcessingKey.ROUTING_KEY)
                    .setValue(MetaDataValue.newBuilder().setTextValue(routingKey)));
        }
        return command.build();
    }

    private static CommandResponse answer(Command command, String text) {
        return CommandResponse.newBuilder()
                .setMessageIdentifier(UUID.randomUUID().toString())
                .setRequestIdentifier(command.getMessageIdentifier())
                .setPayload(SerializedObject.newBuilder()
                        .setType("java.lang.String")
                        .setData(ByteString.copyFromUtf8(text)))
                .build();
    }

    private static CommandResponse send(AxonServerConnection sender, Command command) throws Exception {
        return sender.commandChannel().sendCommand(command).get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
    }

    @Test
    void aCommandRoundTripsToAHandlerInAnotherApplicationAndBack(MyelinServer server) throws Exception {
        AxonServerConnection handler = connect(server);
        Registration registration = handler.commandChannel().registerCommandHandler(
                command -> CompletableFuture.completedFuture(
                        answer(command, "registered " + command.getPayload().getData().toStringUtf8())),
                100, "RegisterCard");
        registration.awaitAck(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);

        AxonServerConnection sender = connect(server);
        CommandResponse response = send(sender, command("RegisterCard", "card-1", null));
        assertEquals("", response.getErrorCode(), () -> "an error: " + response);
        assertEquals("registered card-1", response.getPayload().getData().toStringUtf8());
    }

    @Test
    void afterTheHandlerUnsubscribesASenderGetsAxonsNoHandlerAnswer(MyelinServer server) throws Exception {
        AxonServerConnection handler = connect(server);
        Registration registration = handler.commandChannel().registerCommandHandler(
                command -> CompletableFuture.completedFuture(answer(command, "ok")), 100, "CancelCard");
        registration.awaitAck(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        AxonServerConnection sender = connect(server);
        assertEquals("", send(sender, command("CancelCard", "card-2", null)).getErrorCode());

        registration.cancel().get(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        CommandResponse response = send(sender, command("CancelCard", "card-2", null));
        assertEquals("AXONIQ-4000", response.getErrorCode(), () -> "answered: " + response);
        assertEquals("No Handler for command: CancelCard", response.getErrorMessage().getMessage());
    }

    @Test
    void aRoutingKeyStaysWithOneOfTwoHandlersAndBothGetKeys(MyelinServer server) throws Exception {
        Map<String, String> owners = new ConcurrentHashMap<>();
        List<AxonServerConnection> handlers = List.of(connect(server), connect(server));
        for (int i = 0; i < handlers.size(); i++) {
            String name = "handler-" + i;
            handlers.get(i).commandChannel().registerCommandHandler(
                    command -> CompletableFuture.completedFuture(answer(command, name)), 100, "Rename")
                    .awaitAck(CALL_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        }
        AxonServerConnection sender = connect(server);
        Map<String, String> firstOwner = new HashMap<>();
        for (int round = 0; round < 3; round++) {
            for (int key = 0; key < 16; key++) {
                String routingKey = "card-" + key;
                CommandResponse response = send(sender, command("Rename", "x", routingKey));
                assertEquals("", response.getErrorCode(), () -> "an error: " + response);
                String owner = response.getPayload().getData().toStringUtf8();
                String first = firstOwner.putIfAbsent(routingKey, owner);
                if (first != null) {
                    assertEquals(first, owner, routingKey + " moved from " + first + " in round " + round);
                }
                owners.put(routingKey, owner);
            }
        }
        long onFirst = owners.values().stream().filter("handler-0"::equals).count();
        assertTrue(onFirst > 0 && onFirst < 16, "both handlers take keys: " + onFirst + " of 16 on handler-0");
    }
}
