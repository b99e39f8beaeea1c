package io.myelin.tests.connector;

import java.util.List;

import org.junit.jupiter.api.extension.AfterAllCallback;
import org.junit.jupiter.api.extension.BeforeAllCallback;
import org.junit.jupiter.api.extension.ExtensionContext;
import org.junit.jupiter.api.extension.LifecycleMethodExecutionExceptionHandler;
import org.junit.jupiter.api.extension.ParameterContext;
import org.junit.jupiter.api.extension.ParameterResolver;
import org.junit.jupiter.api.extension.TestExecutionExceptionHandler;

/**
 * Gives every test class its own {@link MyelinServer} on a fresh data directory: started before
 * the class's first test, stopped after its last one (also when tests failed), and injected into
 * test methods and lifecycle methods that take a {@code MyelinServer} parameter.
 *
 * <p>A failing test gets the tail of the server's log attached as a suppressed exception, so
 * Surefire's report shows what the server said. A server that does not stop cleanly (exit code
 * other than 0, a panic in its log) fails the class.
 */
public final class MyelinExtension implements BeforeAllCallback, AfterAllCallback, ParameterResolver,
        TestExecutionExceptionHandler, LifecycleMethodExecutionExceptionHandler {

    private static final ExtensionContext.Namespace NAMESPACE = ExtensionContext.Namespace.create(MyelinExtension.class);
    private static final String SERVER = "server";

    @Override
    public void beforeAll(ExtensionContext context) {
        String name = context.getRequiredTestClass().getSimpleName();
        context.getStore(NAMESPACE).put(SERVER, MyelinServer.start(name));
    }

    @Override
    public void afterAll(ExtensionContext context) {
        MyelinServer server = context.getStore(NAMESPACE).remove(SERVER, MyelinServer.class);
        if (server == null) {
            return;
        }
        List<String> problems = server.stop();
        if (!problems.isEmpty()) {
            throw new AssertionError("stopping the server failed:\n" + String.join("\n", problems));
        }
    }

    private static MyelinServer server(ExtensionContext context) {
        MyelinServer server = context.getStore(NAMESPACE).get(SERVER, MyelinServer.class);
        if (server == null) {
            throw new IllegalStateException("no myelin server for " + context.getDisplayName());
        }
        return server;
    }

    @Override
    public boolean supportsParameter(ParameterContext parameter, ExtensionContext context) {
        return parameter.getParameter().getType() == MyelinServer.class;
    }

    @Override
    public Object resolveParameter(ParameterContext parameter, ExtensionContext context) {
        return server(context);
    }

    @Override
    public void handleTestExecutionException(ExtensionContext context, Throwable failure) throws Throwable {
        throw withServerLog(context, failure);
    }

    @Override
    public void handleBeforeEachMethodExecutionException(ExtensionContext context, Throwable failure)
            throws Throwable {
        throw withServerLog(context, failure);
    }

    @Override
    public void handleAfterEachMethodExecutionException(ExtensionContext context, Throwable failure)
            throws Throwable {
        throw withServerLog(context, failure);
    }

    private static Throwable withServerLog(ExtensionContext context, Throwable failure) {
        MyelinServer server = context.getStore(NAMESPACE).get(SERVER, MyelinServer.class);
        if (server != null) {
            failure.addSuppressed(new ServerLog(server.logTail()));
        }
        return failure;
    }

    /** The server's log tail, carried as a suppressed exception of a test failure. */
    static final class ServerLog extends Exception {
        private static final long serialVersionUID = 1L;

        ServerLog(String tail) {
            super(tail, null, false, false);
        }
    }
}
