// AclSync: makes the cluster's ACLs exactly the bindings read from stdin.
//
// A single-file Java program (no build step; Java 11+ runs the source directly):
//
//   busctl acls render --file deploy/acls.toml |
//     java -cp "deploy/local/.cache/kafka-libs/*" deploy/local/AclSync.java \
//       --bootstrap-server 127.0.0.1:19092 --command-config .run/secrets/admin.properties
//
// Why Java: the services' Kafka client (rust-rdkafka) has no ACL admin API, and the
// workspace forbids the unsafe FFI it would take to reach librdkafka's. Kafka's own Admin
// client has it. `platform.sh acls` (`make acls`, also run by `make up`) is the caller.
//
// Input: one ALLOW binding per line, as `busctl acls render` prints them:
//
//   <principal> <resource type> <pattern type> <operation> <resource name>
//   User:ingress TOPIC LITERAL WRITE order-service.order.created
//
// with Kafka's enum names (ResourceType, PatternType LITERAL|PREFIXED, AclOperation); the
// name is the rest of the line. Host is always "*". Blank lines and lines starting with
// '#' are ignored.
//
// What it does: describes every ACL in the cluster, creates the missing bindings, then
// deletes every binding that is not in the input (the input is the whole truth: an ACL
// added by hand is removed on the next sync). It prints one line per change ("+ ..."
// created, "- ..." deleted) and nothing when nothing changed. --dry-run prints the
// changes without making them. Exit status 1 on any error, 2 on bad usage or input.
// An empty input is refused (it would delete every ACL): pass --allow-empty to mean it.

import java.io.BufferedReader;
import java.io.FileInputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourceType;

public class AclSync {
    private static final long TIMEOUT_S = 60;

    public static void main(String[] args) {
        String bootstrap = null;
        String commandConfig = null;
        boolean dryRun = false;
        boolean allowEmpty = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--bootstrap-server", "--bootstrap" -> bootstrap = value(args, ++i);
                case "--command-config" -> commandConfig = value(args, ++i);
                case "--dry-run" -> dryRun = true;
                case "--allow-empty" -> allowEmpty = true;
                default -> usage("unknown argument " + args[i]);
            }
        }
        if (bootstrap == null) usage("--bootstrap-server is required");

        Set<AclBinding> desired = readBindings();
        if (desired.isEmpty() && !allowEmpty) {
            fail(2, "no bindings on stdin; refusing to delete every ACL in the cluster (--allow-empty to mean it)");
        }

        Properties props = new Properties();
        if (commandConfig != null) {
            try (var in = new FileInputStream(commandConfig)) {
                props.load(in);
            } catch (Exception e) {
                fail(2, "cannot read " + commandConfig + ": " + e.getMessage());
            }
        }
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.putIfAbsent(AdminClientConfig.CLIENT_ID_CONFIG, "acl-sync");
        props.putIfAbsent(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");

        try (Admin admin = Admin.create(props)) {
            Set<AclBinding> current = new HashSet<>(
                admin.describeAcls(AclBindingFilter.ANY).values().get(TIMEOUT_S, TimeUnit.SECONDS));
            List<AclBinding> create = new ArrayList<>();
            for (AclBinding b : desired) if (!current.contains(b)) create.add(b);
            List<AclBinding> delete = new ArrayList<>();
            for (AclBinding b : current) if (!desired.contains(b)) delete.add(b);
            create.sort(Comparator.comparing(AclSync::format));
            delete.sort(Comparator.comparing(AclSync::format));

            // Create first, then delete: a changed binding never leaves a running service
            // without the rights it has in both the old and the new version.
            if (!dryRun && !create.isEmpty()) {
                admin.createAcls(create).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            }
            for (AclBinding b : create) System.out.println("+ " + format(b));
            if (!dryRun && !delete.isEmpty()) {
                List<AclBindingFilter> filters = new ArrayList<>();
                for (AclBinding b : delete) filters.add(b.toFilter());
                admin.deleteAcls(filters).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            }
            for (AclBinding b : delete) System.out.println("- " + format(b));
        } catch (ExecutionException e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            fail(1, cause.getClass().getSimpleName() + ": " + cause.getMessage());
        } catch (Exception e) {
            fail(1, e.getClass().getSimpleName() + ": " + e.getMessage());
        }
    }

    /** Parses stdin; exits 2 naming the line on the first malformed one. */
    private static Set<AclBinding> readBindings() {
        Set<AclBinding> out = new LinkedHashSet<>();
        try (var in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
            String line;
            int n = 0;
            while ((line = in.readLine()) != null) {
                n++;
                String t = line.strip();
                if (t.isEmpty() || t.startsWith("#")) continue;
                String[] f = t.split(" ", 5);
                if (f.length != 5 || f[4].isEmpty()) {
                    fail(2, "stdin line " + n + ": expected `<principal> <resource type> <pattern type> <operation> <name>`, got `" + t + "`");
                }
                if (!f[0].startsWith("User:") || f[0].length() == 5) {
                    fail(2, "stdin line " + n + ": principal must be User:<name>, got `" + f[0] + "`");
                }
                ResourceType type = ResourceType.fromString(f[1]);
                if (type == ResourceType.UNKNOWN || type == ResourceType.ANY) {
                    fail(2, "stdin line " + n + ": unknown resource type `" + f[1] + "`");
                }
                PatternType pattern = PatternType.fromString(f[2]);
                if (pattern != PatternType.LITERAL && pattern != PatternType.PREFIXED) {
                    fail(2, "stdin line " + n + ": pattern type must be LITERAL or PREFIXED, got `" + f[2] + "`");
                }
                AclOperation op = AclOperation.fromString(f[3]);
                if (op == AclOperation.UNKNOWN || op == AclOperation.ANY) {
                    fail(2, "stdin line " + n + ": unknown operation `" + f[3] + "`");
                }
                out.add(new AclBinding(new ResourcePattern(type, f[4], pattern),
                    new AccessControlEntry(f[0], "*", op, AclPermissionType.ALLOW)));
            }
        } catch (java.io.IOException e) {
            fail(1, "reading stdin: " + e.getMessage());
        }
        return out;
    }

    /** The input format, with permission and host added when they are not ALLOW and *. */
    private static String format(AclBinding b) {
        AccessControlEntry e = b.entry();
        ResourcePattern p = b.pattern();
        String extra = (e.permissionType() == AclPermissionType.ALLOW ? "" : " (" + e.permissionType() + ")")
            + ("*".equals(e.host()) ? "" : " (host " + e.host() + ")");
        return e.principal() + " " + p.resourceType() + " " + p.patternType() + " " + e.operation() + " " + p.name() + extra;
    }

    private static String value(String[] args, int i) {
        if (i >= args.length) usage(args[i - 1] + " needs a value");
        return args[i];
    }

    private static void usage(String why) {
        fail(2, why + "\nusage: java -cp 'kafka-libs/*' AclSync.java --bootstrap-server HOST:PORT[,...] "
            + "[--command-config client.properties] [--dry-run] [--allow-empty] < bindings");
    }

    private static void fail(int status, String message) {
        System.err.println("acl-sync: " + message);
        System.exit(status);
    }
}
