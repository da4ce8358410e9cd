package gregor.prototests;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.util.Objects;
import java.util.concurrent.ExecutionException;

/**
 * Assertions for the Java proto-test programs. Each program runs named sections; a section prints
 * "PASS name" or "FAIL name: message" on stdout (the pytest side reads these lines), with the
 * stack trace on stderr. A failed section does not stop the later ones, but the program exits 1.
 */
final class Checks {
    interface Body { void run() throws Exception; }

    private int failures = 0;

    void section(String name, Body body) {
        long t0 = System.nanoTime();
        try {
            body.run();
            System.out.printf("PASS %s (%d ms)%n", name, (System.nanoTime() - t0) / 1_000_000);
        } catch (Throwable e) {
            failures++;
            Throwable shown = e instanceof ExecutionException && e.getCause() != null ? e.getCause() : e;
            String msg = shown instanceof AssertionError ? String.valueOf(shown.getMessage())
                    : shown.getClass().getName() + ": " + shown.getMessage();
            System.out.println("FAIL " + name + ": " + msg.replace('\n', ' '));
            StringWriter sw = new StringWriter();
            shown.printStackTrace(new PrintWriter(sw));
            System.err.println("---- " + name + " ----\n" + sw);
        }
        System.out.flush();
    }

    int exit() {
        System.out.println(failures == 0 ? "ALL PASSED" : failures + " SECTION(S) FAILED");
        System.out.flush();
        return failures == 0 ? 0 : 1;
    }

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static void eq(Object expected, Object actual, String what) {
        if (!Objects.equals(expected, actual))
            throw new AssertionError(what + ": expected <" + expected + "> but was <" + actual + ">");
    }

    /** Runs body, which must fail with a cause of type `expected` (e.g. via KafkaFuture.get()). */
    static void expectError(Class<? extends Throwable> expected, String what, Body body) {
        try {
            body.run();
        } catch (Throwable e) {
            Throwable c = e;
            while (c != null) {
                if (expected.isInstance(c)) return;
                c = c.getCause();
            }
            throw new AssertionError(what + ": expected " + expected.getSimpleName() + " but got " + e, e);
        }
        throw new AssertionError(what + ": expected " + expected.getSimpleName() + " but it succeeded");
    }

    /** Collects failed checks, to report all of them at the end of a section. */
    static final class Soft {
        private final java.util.List<String> failed = new java.util.ArrayList<>();

        void check(boolean cond, String what) { if (!cond) failed.add(what); }

        void eq(Object expected, Object actual, String what) {
            if (!Objects.equals(expected, actual))
                failed.add(what + ": expected <" + expected + "> but was <" + actual + ">");
        }

        void run(Body body) {
            try { body.run(); } catch (Throwable e) { failed.add(e instanceof AssertionError ? e.getMessage() : e.toString()); }
        }

        void done() {
            if (!failed.isEmpty()) throw new AssertionError(failed.size() + " check(s) failed: " + String.join("; ", failed));
        }
    }

    /** Polls cond every 100 ms until it holds or timeoutMs passes. */
    static void eventually(long timeoutMs, String what, java.util.concurrent.Callable<Boolean> cond)
            throws Exception {
        long deadline = System.currentTimeMillis() + timeoutMs;
        while (true) {
            if (cond.call()) return;
            if (System.currentTimeMillis() > deadline) throw new AssertionError(what + " (after " + timeoutMs + " ms)");
            Thread.sleep(100);
        }
    }
}
