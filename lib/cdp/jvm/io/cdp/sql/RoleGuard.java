package io.cdp.sql;

import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.spark.SparkContext;
import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.SparkSessionExtensions;
import org.apache.spark.sql.catalyst.TableIdentifier;
import org.apache.spark.sql.catalyst.analysis.ResolvedNamespace;
import org.apache.spark.sql.catalyst.analysis.ResolvedPersistentView;
import org.apache.spark.sql.catalyst.plans.logical.CTERelationRef;
import org.apache.spark.sql.catalyst.plans.logical.Command;
import org.apache.spark.sql.catalyst.plans.logical.CommandResult;
import org.apache.spark.sql.catalyst.plans.logical.LocalRelation;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.catalyst.plans.logical.OneRowRelation;
import org.apache.spark.sql.catalyst.plans.logical.Range;
import org.apache.spark.sql.catalyst.plans.logical.View;
import org.apache.spark.sql.execution.command.DescribeColumnCommand;
import org.apache.spark.sql.execution.command.DescribeTableCommand;
import org.apache.spark.sql.execution.command.SetCommand;
import org.apache.spark.sql.execution.command.ShowColumnsCommand;
import org.apache.spark.sql.execution.command.ShowTablesCommand;
import org.apache.spark.sql.execution.command.ShowViewsCommand;
import org.apache.spark.sql.execution.LogicalRDD;
import org.apache.spark.sql.execution.datasources.HadoopFsRelation;
import org.apache.spark.sql.execution.datasources.LogicalRelation;

import scala.Function1;
import scala.Option;
import scala.runtime.BoxedUnit;

/**
 * The role boundary of a SQL endpoint (spark.sql.extensions): a statement of a role's user may read
 * the views of the role's own database and nothing else.
 *
 * <p>The role is the static conf {@code spark.cdp.role}, fixed when the session starts. A user's
 * statement is one that runs under a job group, which the Thrift server sets for every statement and
 * {@code cdp sql --role} sets for each one it runs; the endpoint's own bookkeeping (its audit rows)
 * runs outside any job group. For a user's statement the analysed plan is walked, subqueries
 * included:
 * <ul>
 *   <li>a view of the role's database is allowed whole (what it reads is the view's business);</li>
 *   <li>Delta's own reads of a table's {@code _delta_log} are allowed, as are literal rows;</li>
 *   <li>any other relation — a table of another database, another database's view, a path — refuses
 *       the statement;</li>
 *   <li>commands: SHOW TABLES/VIEWS/COLUMNS, DESCRIBE and USE of the role's database, and SET without
 *       a value; every other command (DDL, DML, CACHE, EXPLAIN, SET k=v) is refused.</li>
 * </ul>
 * The views read are kept per job group for the endpoint's audit row ({@link #takeRead}).
 */
public final class RoleGuard implements Function1<SparkSessionExtensions, BoxedUnit> {
    public static final String ROLE_CONF = "spark.cdp.role";
    private static final String JOB_GROUP = "spark.jobGroup.id";
    private static final String VIEW_RESOLUTION = "org.apache.spark.sql.catalyst.analysis.ViewResolution$";
    private static final ConcurrentHashMap<String, Set<String>> READ = new ConcurrentHashMap<>();

    @Override
    public BoxedUnit apply(SparkSessionExtensions extensions) {
        extensions.injectCheckRule(session -> plan -> {
            check(session, plan);
            return BoxedUnit.UNIT;
        });
        return BoxedUnit.UNIT;
    }

    /** The views the statements of this job group read, forgotten once taken. */
    public static String takeRead(String jobGroup) {
        Set<String> read = READ.remove(jobGroup);
        return read == null ? "" : String.join(",", new TreeSet<>(read));
    }

    static void check(SparkSession session, LogicalPlan plan) {
        String role = session.sparkContext().getConf().get(ROLE_CONF, "");
        String group = session.sparkContext().getLocalProperty(JOB_GROUP);
        if (role.isEmpty() || group == null || viewText()) {
            return;
        }
        Set<String> read = READ.computeIfAbsent(group, g -> ConcurrentHashMap.newKeySet());
        String current = session.sessionState().catalog().getCurrentDatabase();
        new Walk(role, current, read).visit(plan);
    }

    /**
     * Whether this check is Spark's of a view's own text, made while the view is resolved on its way
     * into a statement's plan (ViewResolution.resolve): the statement's check that follows sees the
     * view node and decides. Should Spark resolve views elsewhere, such checks refuse the role's own
     * views: too strict, never too lax.
     */
    private static boolean viewText() {
        return StackWalker.getInstance().walk(frames -> frames.anyMatch(
                f -> f.getClassName().equals(VIEW_RESOLUTION) && f.getMethodName().equals("resolve")));
    }

    private static final class Walk {
        private final String role;
        private final String current;
        private final Set<String> read;

        Walk(String role, String current, Set<String> read) {
            this.role = role;
            this.current = current;
            this.read = read;
        }

        void visit(LogicalPlan plan) {
            if (plan instanceof View) {
                View view = (View) plan;
                TableIdentifier id = view.desc().identifier();
                String database = id.database().isDefined() ? id.database().get() : "";
                if (role.equals(database)) {
                    read.add(database + "." + id.table());
                    return;
                }
                if (!view.isTempView()) {
                    refuse("the view " + id.unquotedString() + " is not one of the role's");
                }
            } else if (plan instanceof Command) {
                command(plan);
                return;
            } else if (plan.children().isEmpty()) {
                leaf(plan);
            }
            for (LogicalPlan child : asList(plan.children())) {
                visit(child);
            }
            for (LogicalPlan subquery : asList(plan.subqueries())) {
                visit(subquery);
            }
        }

        private void leaf(LogicalPlan plan) {
            if (plan instanceof LocalRelation || plan instanceof OneRowRelation || plan instanceof Range
                    || plan instanceof CTERelationRef || plan instanceof CommandResult || plan instanceof LogicalRDD) {
                // literal rows, a CTE's reference (its definition is walked), a checked command's result, and
                // rows Delta's own code made from memory while reading a table's state (no SQL makes those)
                return;
            }
            if (plan instanceof LogicalRelation) {
                LogicalRelation relation = (LogicalRelation) plan;
                if (relation.catalogTable().isEmpty() && relation.relation() instanceof HadoopFsRelation
                        && deltaLog((HadoopFsRelation) relation.relation())) {
                    return;  // Delta reading a table's transaction log for the view being read
                }
                if (relation.catalogTable().isDefined()) {
                    refuse("the table " + relation.catalogTable().get().identifier().unquotedString()
                            + " is not one of the role's views");
                }
                refuse("files are read by path");
            }
            refuse("the relation " + plan.nodeName() + " is not one of the role's views");
        }

        private boolean deltaLog(HadoopFsRelation relation) {
            List<org.apache.hadoop.fs.Path> paths = asList(relation.location().rootPaths());
            if (paths.isEmpty()) {
                return false;
            }
            for (org.apache.hadoop.fs.Path path : paths) {
                if (!path.toString().contains("/_delta_log")) {
                    return false;
                }
            }
            return true;
        }

        /** Commands: reading the role's own catalog entries, or SET without a value; nothing else. */
        private void command(LogicalPlan plan) {
            List<LogicalPlan> children = asList(plan.children());
            switch (plan.nodeName()) {
                case "ShowNamespaces":
                case "ShowNamespacesCommand":
                    return;  // database names only
                case "ShowTables":
                case "ShowTablesExtended":
                case "ShowViews":
                case "SetCatalogAndNamespace":
                    if (children.size() == 1 && children.get(0) instanceof ResolvedNamespace
                            && asList(((ResolvedNamespace) children.get(0)).namespace()).equals(List.of(role))) {
                        return;
                    }
                    refuse("the database named is not " + role);
                    return;
                case "DescribeRelation":
                case "DescribeColumn":
                case "ShowColumns":
                    if (!children.isEmpty() && children.get(0) instanceof ResolvedPersistentView) {
                        Option<String> database = ((ResolvedPersistentView) children.get(0)).metadata().identifier()
                                .database();
                        if (database.isDefined() && role.equals(database.get())) {
                            return;
                        }
                    }
                    refuse("what " + plan.nodeName() + " names is not one of the role's views");
                    return;
                case "ShowTablesCommand":
                    database(((ShowTablesCommand) plan).databaseName());
                    return;
                case "ShowViewsCommand":
                    database(Option.apply(((ShowViewsCommand) plan).databaseName()));
                    return;
                case "ShowColumnsCommand": {
                    ShowColumnsCommand show = (ShowColumnsCommand) plan;
                    database(show.databaseName().isDefined() ? show.databaseName() : show.tableName().database());
                    return;
                }
                case "DescribeTableCommand":
                    database(((DescribeTableCommand) plan).table().database());
                    return;
                case "DescribeColumnCommand":
                    database(((DescribeColumnCommand) plan).table().database());
                    return;
                case "SetCommand": {
                    Option<scala.Tuple2<String, Option<String>>> kv = ((SetCommand) plan).kv();
                    if (kv.isDefined() && kv.get()._2().isDefined()) {
                        refuse("SET changes the session's settings");
                    }
                    return;
                }
                default:
                    refuse(plan.nodeName() + " is not a query");
            }
        }

        private void database(Option<String> named) {
            String database = named.isDefined() ? named.get() : current;
            if (!role.equals(database)) {
                refuse("the database " + database + " is not the role's");
            }
        }

        private void refuse(String why) {
            throw new SecurityException("role " + role + " reads only the views of the database " + role
                    + ": " + why + ".");
        }
    }

    private static <T> List<T> asList(scala.collection.Seq<T> seq) {
        List<T> out = new ArrayList<>();
        scala.collection.Iterator<T> it = seq.iterator();
        while (it.hasNext()) {
            out.add(it.next());
        }
        return out;
    }
}
