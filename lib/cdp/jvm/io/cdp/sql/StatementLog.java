package io.cdp.sql;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentLinkedQueue;

import org.apache.spark.scheduler.SparkListener;
import org.apache.spark.scheduler.SparkListenerEvent;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerOperationCanceled;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerOperationClosed;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerOperationError;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerOperationFinish;
import org.apache.spark.sql.hive.thriftserver.ui.SparkListenerThriftServerOperationStart;

/**
 * Every statement of the Thrift server's users as it ends (spark.extraListeners): who ran it, the
 * statement, when, how it ended and which of the role's views it read. The endpoint drains the
 * ended statements into ops.audit_log ({@link #drain}).
 */
public final class StatementLog extends SparkListener {
    private static final ConcurrentHashMap<String, String[]> RUNNING = new ConcurrentHashMap<>();
    private static final ConcurrentLinkedQueue<List<String>> ENDED = new ConcurrentLinkedQueue<>();

    @Override
    public void onOtherEvent(SparkListenerEvent event) {
        if (event instanceof SparkListenerThriftServerOperationStart) {
            SparkListenerThriftServerOperationStart start = (SparkListenerThriftServerOperationStart) event;
            RUNNING.put(start.id(), new String[] {start.id(), start.sessionId(), start.userName(), start.statement(),
                    Long.toString(start.startTime()), start.groupId()});
        } else if (event instanceof SparkListenerThriftServerOperationFinish) {
            SparkListenerThriftServerOperationFinish finish = (SparkListenerThriftServerOperationFinish) event;
            end(finish.id(), finish.finishTime(), "ok", "");
        } else if (event instanceof SparkListenerThriftServerOperationError) {
            SparkListenerThriftServerOperationError error = (SparkListenerThriftServerOperationError) event;
            String message = error.errorMsg() == null ? "" : error.errorMsg();
            end(error.id(), error.finishTime(), message.contains("reads only the views of the database")
                    ? "refused" : "error", message);
        } else if (event instanceof SparkListenerThriftServerOperationCanceled) {
            SparkListenerThriftServerOperationCanceled canceled = (SparkListenerThriftServerOperationCanceled) event;
            end(canceled.id(), canceled.finishTime(), "canceled", "");
        } else if (event instanceof SparkListenerThriftServerOperationClosed) {
            // closed without an end of its own (a client gone mid-statement): ended now, nothing kept behind
            SparkListenerThriftServerOperationClosed closed = (SparkListenerThriftServerOperationClosed) event;
            end(closed.id(), closed.closeTime(), "canceled", "closed by the client");
        }
    }

    private static void end(String id, long finishTime, String status, String message) {
        String[] started = RUNNING.remove(id);
        if (started == null) {
            return;
        }
        List<String> row = new ArrayList<>(List.of(started));  // id, session, user, statement, start, group
        row.add(Long.toString(finishTime));
        row.add(status);
        row.add(message);
        row.add(RoleGuard.takeRead(started[5]));
        ENDED.add(row);
    }

    /** The statements ended since the last call: [id, session, user, statement, start ms, group, end ms,
     * status, message, views read]. */
    public static List<List<String>> drain() {
        List<List<String>> out = new ArrayList<>();
        List<String> row;
        while ((row = ENDED.poll()) != null) {
            out.add(row);
        }
        return out;
    }
}
