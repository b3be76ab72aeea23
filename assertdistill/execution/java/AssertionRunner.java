// One JVM that compiles test sources and runs single test methods on request (assertdistill.execution_jvm).
//
// Requests, one per line on stdin, fields tab-separated, free text base64 (UTF-8):
//   compile <id> <b64: javac arguments joined by NUL>
//       -> <id> compiled <b64 ""> | <id> compile_error <b64 first errors>
//   run <id> <timeout ms> <b64: class path entries joined by NUL> <class> <method> <scratch dir>
//       -> <id> passed|assertion_failed|other_exception|system_exit|timeout|not_found <b64 detail> <b64 left>
// where <left> names what the run left behind in this JVM (default Locale or TimeZone, system properties,
// threads still alive, System.out/err, the security manager or its flags; "" when nothing): the caller then
// starts a new JVM before the next run, so no run sees another's leftovers.
// Replies go to the original stdout; anything a test prints goes nowhere. Each run gets a fresh class
// loader over the given entries (JUnit and the project's jars come from this JVM's class path). While a
// test runs, a SecurityManager (start the JVM with -Djava.security.manager=allow) turns System.exit into an
// exception, refuses writes and deletes outside the scratch directory, starting processes, and connections to
// hosts other than the loopback. This is a second layer only: the process runs inside the operating system's
// sandbox (assertdistill/execution/sandbox.py), which is what holds against a test that turns it off. After a timeout the JVM halts (the caller starts a new one): threads a
// test left running cannot be trusted.

import java.io.BufferedReader;
import java.io.FilePermission;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.StringWriter;
import java.lang.reflect.Method;
import java.net.SocketPermission;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.security.Permission;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.TimeZone;
import java.util.concurrent.atomic.AtomicReference;

import javax.tools.Diagnostic;
import javax.tools.DiagnosticCollector;
import javax.tools.JavaCompiler;
import javax.tools.JavaFileObject;
import javax.tools.StandardJavaFileManager;
import javax.tools.ToolProvider;

import org.junit.platform.engine.discovery.DiscoverySelectors;
import org.junit.platform.launcher.Launcher;
import org.junit.platform.launcher.LauncherDiscoveryRequest;
import org.junit.platform.launcher.core.LauncherDiscoveryRequestBuilder;
import org.junit.platform.launcher.core.LauncherFactory;
import org.junit.platform.launcher.listeners.SummaryGeneratingListener;
import org.junit.platform.launcher.listeners.TestExecutionSummary;

public final class AssertionRunner {
    private static final int MAX_DETAIL = 2000;
    private static volatile boolean sandboxed = false;
    private static volatile Path scratch = null;
    private static volatile boolean exiting = false;

    /** System.exit called by a test. */
    static final class ExitTrapped extends SecurityException {
        ExitTrapped(String status) {
            super("System.exit(" + status + ") called by the test");
        }
    }

    /** Refuses what a test must not do while `sandboxed`; allows everything otherwise. */
    static final class Sandbox extends SecurityManager {
        @Override
        public void checkPermission(Permission permission) {
            if (exiting) {
                return;
            }
            if (!sandboxed) {
                if (permission instanceof RuntimePermission && permission.getName().startsWith("exitVM")) {
                    throw new ExitTrapped(permission.getName().substring("exitVM".length()).replace(".", ""));
                }
                return;
            }
            String name = permission.getName();
            if (permission instanceof RuntimePermission) {
                if (name.startsWith("exitVM")) {
                    throw new ExitTrapped(name.substring("exitVM".length()).replace(".", ""));
                }
                if (name.equals("setSecurityManager")) {
                    throw new SecurityException("sandbox: a test may not replace the security manager");
                }
            } else if (permission instanceof FilePermission) {
                String actions = permission.getActions();
                if (actions.contains("execute")) {
                    throw new SecurityException("sandbox: a test may not start processes (" + name + ")");
                }
                if ((actions.contains("write") || actions.contains("delete")) && !inScratch(name)) {
                    throw new SecurityException("sandbox: write outside " + scratch + " refused: " + name);
                }
            } else if (permission instanceof SocketPermission) {
                String actions = permission.getActions();
                if ((actions.contains("connect") || actions.contains("accept")) && !loopback(name)) {
                    throw new SecurityException("sandbox: network access refused: " + name);
                }
            }
        }

        @Override
        public void checkPermission(Permission permission, Object context) {
            checkPermission(permission);
        }
    }

    private static boolean inScratch(String name) {
        if (name.equals("<<ALL FILES>>") || scratch == null) {
            return false;
        }
        if (name.endsWith("/-") || name.endsWith("/*")) {
            name = name.substring(0, name.length() - 2);
        }
        Path path = Paths.get(name).toAbsolutePath().normalize();
        return path.startsWith(scratch) || name.equals("/dev/null");
    }

    private static boolean loopback(String hostAndPort) {
        String host = hostAndPort;
        if (host.startsWith("[")) {
            host = host.substring(1, Math.max(1, host.indexOf(']')));
        } else if (host.indexOf(':') >= 0) {
            host = host.substring(0, host.indexOf(':'));
        }
        host = host.toLowerCase(Locale.ROOT);
        return host.isEmpty() || host.equals("localhost") || host.startsWith("127.") || host.equals("::1")
                || host.equals("0:0:0:0:0:0:0:1") || host.equals("0.0.0.0");
    }

    private static String b64(String text) {
        return Base64.getEncoder().encodeToString(text.getBytes(StandardCharsets.UTF_8));
    }

    private static String unb64(String text) {
        return new String(Base64.getDecoder().decode(text), StandardCharsets.UTF_8);
    }

    private static String clip(String text) {
        return text.length() <= MAX_DETAIL ? text : text.substring(0, MAX_DETAIL) + "...";
    }

    /** The JVM-wide state a test can change: compared before and after each run. */
    static final class JvmState {
        final Locale locale = Locale.getDefault();
        final Locale displayLocale = Locale.getDefault(Locale.Category.DISPLAY);
        final Locale formatLocale = Locale.getDefault(Locale.Category.FORMAT);
        final TimeZone zone = TimeZone.getDefault();
        final Map<Object, Object> properties = new HashMap<>(System.getProperties());
        final Set<Thread> threads = new HashSet<>(Thread.getAllStackTraces().keySet());
        final PrintStream out = System.out;
        final PrintStream err = System.err;
        final SecurityManager manager = System.getSecurityManager();
        final Thread.UncaughtExceptionHandler handler = Thread.getDefaultUncaughtExceptionHandler();

        /** What differs in `later` (a state taken after a run), "" when nothing. */
        String changedIn(JvmState later) {
            List<String> changed = new ArrayList<>();
            if (!locale.equals(later.locale) || !displayLocale.equals(later.displayLocale)
                    || !formatLocale.equals(later.formatLocale)) {
                changed.add("default Locale " + locale + " -> " + later.locale);
            }
            if (!zone.equals(later.zone)) {
                changed.add("default TimeZone " + zone.getID() + " -> " + later.zone.getID());
            }
            if (!properties.equals(later.properties)) {
                Set<Object> keys = new HashSet<>(properties.keySet());
                keys.addAll(later.properties.keySet());
                keys.removeIf(key -> Objects.equals(properties.get(key), later.properties.get(key)));
                changed.add("system properties " + keys);
            }
            List<String> alive = new ArrayList<>();
            for (Thread thread : later.threads) {
                if (!threads.contains(thread) && thread.isAlive()) {
                    alive.add(thread.getName());
                }
            }
            if (!alive.isEmpty()) {
                changed.add("threads still running " + alive);
            }
            if (out != later.out || err != later.err) {
                changed.add("System.out or System.err");
            }
            if (manager != later.manager || exiting || sandboxed) {
                changed.add("the security manager");
            }
            if (handler != later.handler) {
                changed.add("the default uncaught exception handler");
            }
            return String.join("; ", changed);
        }
    }

    private static final JavaCompiler COMPILER = ToolProvider.getSystemJavaCompiler();

    /** compileHere on a thread with a deep stack (javac recurses deeply on large sources). */
    static String compile(List<String> arguments) throws InterruptedException {
        AtomicReference<String> result = new AtomicReference<>();
        Thread compiler = new Thread(null, () -> {
            try {
                result.set(compileHere(arguments));
            } catch (Throwable e) {
                result.set("javac failed: " + e);
            }
        }, "javac", 1L << 30);
        compiler.start();
        compiler.join();
        return result.get();
    }

    /** javac with the given arguments, in this JVM; null when it compiled, else its first errors. */
    static String compileHere(List<String> arguments) {
        DiagnosticCollector<JavaFileObject> diagnostics = new DiagnosticCollector<>();
        List<String> options = new ArrayList<>();
        List<String> files = new ArrayList<>();
        java.nio.charset.Charset charset = StandardCharsets.UTF_8;
        for (int i = 0; i < arguments.size(); i++) {
            String argument = arguments.get(i);
            if (argument.equals("-encoding") && i + 1 < arguments.size()) {
                charset = java.nio.charset.Charset.forName(arguments.get(++i));
            } else {
                (argument.endsWith(".java") && !argument.startsWith("-") ? files : options).add(argument);
            }
        }
        try (StandardJavaFileManager manager = COMPILER.getStandardFileManager(diagnostics, null, charset)) {
            Iterable<? extends JavaFileObject> units = manager.getJavaFileObjectsFromStrings(files);
            StringWriter output = new StringWriter();
            boolean ok = COMPILER.getTask(output, manager, diagnostics, options, null, units).call();
            if (ok) {
                return null;
            }
            StringBuilder errors = new StringBuilder();
            for (Diagnostic<? extends JavaFileObject> diagnostic : diagnostics.getDiagnostics()) {
                if (diagnostic.getKind() == Diagnostic.Kind.ERROR) {
                    String source = diagnostic.getSource() == null ? "" : diagnostic.getSource().getName();
                    errors.append(source).append(':').append(diagnostic.getLineNumber()).append(": error: ")
                            .append(diagnostic.getMessage(Locale.ROOT)).append('\n');
                }
            }
            return errors.length() > 0 ? errors.toString() : ("javac failed: " + output);
        } catch (java.io.IOException | RuntimeException e) {
            return "javac failed: " + e;
        }
    }

    private static Method findMethod(Class<?> type, String name) {
        for (Class<?> current = type; current != null; current = current.getSuperclass()) {
            Method best = null;
            for (Method method : current.getDeclaredMethods()) {
                if (method.getName().equals(name) && (best == null || method.getParameterCount() == 0)) {
                    best = method;
                }
            }
            if (best != null) {
                return best;
            }
        }
        return null;
    }

    private static boolean isCause(Throwable error, Class<?> kind) {
        for (Throwable current = error; current != null; current = current.getCause()) {
            if (kind.isInstance(current)) {
                return true;
            }
            if (current.getCause() == current) {
                break;
            }
        }
        return false;
    }

    /** (outcome, detail) of one test method run alone in a fresh class loader. */
    static String[] run(Launcher launcher, long timeoutMs, List<String> entries, String className, String methodName,
                        Path scratchDir) throws Exception {
        URL[] urls = new URL[entries.size()];
        for (int i = 0; i < urls.length; i++) {
            urls[i] = Paths.get(entries.get(i)).toUri().toURL();
        }
        AtomicReference<String[]> result = new AtomicReference<>();
        try (URLClassLoader loader = new URLClassLoader(urls, AssertionRunner.class.getClassLoader())) {
            Class<?> type;
            try {
                type = Class.forName(className, false, loader);
            } catch (ClassNotFoundException | LinkageError e) {
                return new String[] {"not_found", "class " + className + ": " + e};
            }
            Method method = findMethod(type, methodName);
            if (method == null) {
                return new String[] {"not_found", "no method " + methodName + " in " + className};
            }
            LauncherDiscoveryRequest request = LauncherDiscoveryRequestBuilder.request()
                    .selectors(DiscoverySelectors.selectMethod(type, method)).build();
            SummaryGeneratingListener listener = new SummaryGeneratingListener();
            Thread worker = new Thread(() -> {
                try {
                    sandboxed = true;
                    launcher.execute(request, listener);
                } catch (Throwable e) {
                    result.set(new String[] {isCause(e, ExitTrapped.class) ? "system_exit" : "other_exception",
                                             "launcher: " + e});
                } finally {
                    sandboxed = false;
                }
            }, "assertion-test");
            worker.setContextClassLoader(loader);
            worker.setDaemon(true);
            scratch = scratchDir;
            worker.start();
            worker.join(timeoutMs);
            if (worker.isAlive()) {
                return new String[] {"timeout", "still running after " + timeoutMs + " ms"};
            }
            if (result.get() != null) {
                return result.get();
            }
            TestExecutionSummary summary = listener.getSummary();
            if (summary.getTestsFoundCount() == 0) {
                return new String[] {"not_found", "JUnit found no test " + className + "." + methodName};
            }
            if (summary.getTotalFailureCount() == 0 && summary.getTestsSucceededCount() > 0) {
                return new String[] {"passed", ""};
            }
            if (summary.getTotalFailureCount() == 0) {
                return new String[] {"other_exception", "test skipped or aborted"};
            }
            Throwable error = summary.getFailures().get(0).getException();
            String outcome = isCause(error, ExitTrapped.class) ? "system_exit"
                    : error instanceof AssertionError ? "assertion_failed" : "other_exception";
            return new String[] {outcome, String.valueOf(error)};
        }
    }

    public static void main(String[] args) throws Exception {
        PrintStream replies = new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), true, "UTF-8");
        PrintStream runnerErrors = System.err;
        PrintStream sink = new PrintStream(OutputStream.nullOutputStream());
        System.setOut(sink);
        System.setErr(sink);
        System.setSecurityManager(new Sandbox());
        Launcher launcher = LauncherFactory.create();
        BufferedReader requests = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        replies.println("ready");
        String line;
        while ((line = requests.readLine()) != null) {
            String[] fields = line.split("\t", -1);
            String id = fields.length > 1 ? fields[1] : "?";
            String[] answer;
            String left = "";
            try {
                if (fields[0].equals("compile") && fields.length == 3) {
                    List<String> arguments = List.of(unb64(fields[2]).split("\0"));
                    String errors = compile(arguments);
                    answer = errors == null ? new String[] {"compiled", ""} : new String[] {"compile_error", errors};
                } else if (fields[0].equals("run") && fields.length == 7) {
                    List<String> entries = List.of(unb64(fields[3]).split("\0"));
                    JvmState before = new JvmState();
                    answer = run(launcher, Long.parseLong(fields[2]), entries, fields[4], fields[5],
                                 Paths.get(fields[6]).toAbsolutePath().normalize());
                    left = before.changedIn(new JvmState());
                } else {
                    answer = new String[] {"bad_request", line};
                }
            } catch (Exception | LinkageError | VirtualMachineError e) {
                answer = new String[] {"other_exception", "runner: " + e};
                runnerErrors.println("runner: " + e);
            }
            replies.println(id + "\t" + answer[0] + "\t" + b64(clip(answer[1])) + "\t" + b64(clip(left)));
            if (answer[0].equals("timeout")) {
                exiting = true;
                replies.flush();
                Runtime.getRuntime().halt(3);
            }
        }
        exiting = true;
        Runtime.getRuntime().halt(0);
    }
}
