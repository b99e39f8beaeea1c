package io.myelin.tests.af5;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * One run of the real {@code myelin} binary, as tests/python/conftest.py starts it: {@code serve}
 * on a fresh temporary data directory, bound to 127.0.0.1 only, gRPC and HTTP on ports the OS
 * chooses (port 0), which it learns from the log lines {@code gRPC listening on ADDR} and
 * {@code HTTP listening on ADDR} (crates/cli/src/serve.rs logs them once the listeners serve).
 *
 * <p>The binary is the system property {@code myelin.bin}, else the environment variable
 * {@code MYELIN_BIN} (scripts/af5-tests sets it to target/debug/myelin). stdout and stderr go to a
 * log file under {@code target/myelin-logs/}, which is kept. {@link #stop()} sends SIGTERM (SIGKILL
 * after 20 s) and reports an exit code other than 0 or a panic in the log; a JVM shutdown hook
 * kills whatever is still running if the test run ends without stopping it.
 */
final class MyelinServer {

    static final String HOST = "127.0.0.1";
    private static final Duration STARTUP_TIMEOUT = Duration.ofSeconds(60);
    private static final Duration STOP_TIMEOUT = Duration.ofSeconds(20);
    private static final int LOG_TAIL_LINES = 200;
    // Not the cluster's "internal gRPC listening on" line.
    private static final Pattern GRPC_LISTENING =
            Pattern.compile("(?<!internal )gRPC listening on (\\d+\\.\\d+\\.\\d+\\.\\d+):(\\d+)");
    private static final Pattern HTTP_LISTENING =
            Pattern.compile("HTTP listening on (\\d+\\.\\d+\\.\\d+\\.\\d+):(\\d+)");
    private static final Pattern ANSI_ESCAPE = Pattern.compile("\u001b\\[[0-9;]*m");

    /** Servers still running; the shutdown hook kills them. */
    private static final Set<Process> RUNNING = ConcurrentHashMap.newKeySet();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            for (Process process : RUNNING) {
                process.destroyForcibly();
            }
        }, "myelin-server-reaper"));
    }

    private final Path dataDir;
    private final Path logPath;
    private final Process process;
    private int grpcPort;
    private int httpPort;

    private MyelinServer(Path dataDir, Path logPath, Process process) {
        this.dataDir = dataDir;
        this.logPath = logPath;
        this.process = process;
    }

    /** Starts the binary on a fresh data directory; returns once it listens on gRPC and HTTP. */
    static MyelinServer start(String name) {
        Path binary = binary();
        try {
            Path dataDir = Files.createTempDirectory("myelin-af5-" + name + "-");
            Path logDir = Paths.get("target", "myelin-logs").toAbsolutePath();
            Files.createDirectories(logDir);
            Path logPath = logDir.resolve(name + ".log");
            List<String> command = new ArrayList<>(List.of(
                    binary.toString(), "serve",
                    "--data", dataDir.toString(),
                    "--set", "myelin.bind-address=" + HOST,
                    "--set", "axoniq.axonserver.port=0",
                    "--set", "server.port=0"));
            ProcessBuilder builder = new ProcessBuilder(command)
                    // The data directory is also the working directory, so no axonserver.properties
                    // lying around the caller's directory is read.
                    .directory(dataDir.toFile())
                    .redirectInput(ProcessBuilder.Redirect.from(Paths.get("/dev/null").toFile()))
                    .redirectErrorStream(true)
                    .redirectOutput(logPath.toFile());
            // MYELIN_BIN is the harness's, not a server setting (the server warns about unknown
            // MYELIN_* variables).
            builder.environment().remove("MYELIN_BIN");
            Process process = builder.start();
            RUNNING.add(process);
            MyelinServer server = new MyelinServer(dataDir, logPath, process);
            try {
                server.waitUntilListening();
            } catch (RuntimeException | Error e) {
                server.stop();
                throw e;
            }
            return server;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + binary, e);
        }
    }

    private static Path binary() {
        String configured = System.getProperty("myelin.bin");
        if (configured == null || configured.isBlank()) {
            configured = System.getenv("MYELIN_BIN");
        }
        if (configured == null || configured.isBlank()) {
            throw new IllegalStateException(
                    "set MYELIN_BIN (or -Dmyelin.bin) to the myelin binary, e.g. target/debug/myelin;"
                            + " scripts/af5-tests does");
        }
        Path binary = Paths.get(configured).toAbsolutePath();
        if (!Files.isExecutable(binary)) {
            throw new IllegalStateException("myelin binary " + binary
                    + " not found or not executable: run `cargo build -p myelin`");
        }
        return binary;
    }

    private void waitUntilListening() {
        long deadline = System.nanoTime() + STARTUP_TIMEOUT.toNanos();
        while (true) {
            String text = logText();
            Matcher grpc = GRPC_LISTENING.matcher(text);
            Matcher http = HTTP_LISTENING.matcher(text);
            if (grpc.find() && http.find()) {
                grpcPort = Integer.parseInt(grpc.group(2));
                httpPort = Integer.parseInt(http.group(2));
                return;
            }
            if (!process.isAlive()) {
                throw new AssertionError("myelin exited with " + process.exitValue()
                        + " before listening on gRPC and HTTP\n--- log " + logPath + " ---\n" + text);
            }
            if (System.nanoTime() > deadline) {
                throw new AssertionError("myelin did not log both 'gRPC listening on' and 'HTTP listening on'"
                        + " within " + STARTUP_TIMEOUT.toSeconds() + " s\n--- log " + logPath + " ---\n" + text);
            }
            sleep(50);
        }
    }

    int grpcPort() {
        return grpcPort;
    }

    int httpPort() {
        return httpPort;
    }

    Path logPath() {
        return logPath;
    }

    /** The server's log so far, without colour codes. */
    String logText() {
        try {
            String raw = Files.readString(logPath, StandardCharsets.UTF_8);
            return ANSI_ESCAPE.matcher(raw).replaceAll("");
        } catch (IOException e) {
            return "(cannot read " + logPath + ": " + e + ")";
        }
    }

    /** The last lines of the log, for failure messages. */
    String logTail() {
        List<String> lines = logText().lines().toList();
        List<String> tail = lines.subList(Math.max(0, lines.size() - LOG_TAIL_LINES), lines.size());
        return "--- last " + tail.size() + " lines of " + logPath + " ---\n" + String.join("\n", tail);
    }

    /**
     * SIGTERM, SIGKILL after 20 s; returns what went wrong (empty: it exited with 0 and the log
     * shows no panic). The data directory is removed when nothing went wrong, else kept.
     */
    List<String> stop() {
        List<String> problems = new ArrayList<>();
        try {
            if (process.isAlive()) {
                process.destroy(); // SIGTERM on Linux
                if (!process.waitFor(STOP_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS)) {
                    process.destroyForcibly();
                    process.waitFor();
                    problems.add("did not exit within " + STOP_TIMEOUT.toSeconds() + " s of SIGTERM; killed");
                }
            }
        } catch (InterruptedException e) {
            process.destroyForcibly();
            Thread.currentThread().interrupt();
            problems.add("interrupted while stopping; killed");
        } finally {
            RUNNING.remove(process);
        }
        if (!process.isAlive() && process.exitValue() != 0) {
            problems.add("exit code " + process.exitValue() + ", expected 0");
        }
        if (logText().contains("panicked at")) {
            problems.add("the log shows a panic");
        }
        if (problems.isEmpty()) {
            deleteRecursively(dataDir);
            return problems;
        }
        return List.of("myelin (pid " + process.pid() + ", data kept in " + dataDir + "): "
                + String.join("; ", problems) + "\n" + logTail());
    }

    private static void deleteRecursively(Path root) {
        try (Stream<Path> paths = Files.walk(root)) {
            for (Path path : paths.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(path);
            }
        } catch (IOException e) {
            // Only a temporary directory is left behind; the test result does not depend on it.
            System.err.println("cannot remove " + root + ": " + e);
        }
    }

    static void sleep(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }
}
