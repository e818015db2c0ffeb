/* The consumer engine against the broker and Redis: handlers that run off
 * the polling thread, one job of a scope at a time and in offset order
 * (G10), that never get the member evicted however long they take (G11),
 * that are given up past handler.timeout, and that a drain or a revoke
 * waits for. Every assertion reads what a user would: job records in
 * Redis, the DLQ, the group's commits and the consumer's exit code. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

static dq_store_t *store;
static dq_conf_t *conf;

static void open_store(const dq_tc_t *tc)
{
        char ns[200];
        const char *x[] = {ns};
        snprintf(ns, sizeof(ns), "redis.namespace=%s", tc->ns);
        store = dq_test_store("test", x, 1, &conf);
}

static void teardown(void)
{
        dq_tc_reap();
        dq_store_destroy(store);
        dq_conf_destroy(conf);
        store = NULL;
        conf = NULL;
}

/* Sends a job of scope over the one source src (written active first) to
 * partition; trace selects its test handler (NULL: the real, inline one).
 * Returns it; the caller destroys it. */
static dq_job_t *send_job(rd_kafka_t *pk, const dq_tc_t *tc, int32_t partition,
                          const char *scope, const char *src, const char *trace)
{
        const char *srcs[] = {src};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, scope, srcs, 1);
        size_t len;
        char *json;

        dq_test_memory(store, scope, src, "candidate", "active", src, 1);
        if (trace)
                job->trace_id = strdup(trace);
        json = dq_job_serialize(job, &len);
        cr_assert_not_null(json);
        dq_tc_send(pk, tc->topic, partition, scope, json, len, NULL);
        free(json);
        return job;
}

static int64_t field(const dq_job_t *job, const char *f)
{
        return dq_test_job_int(store, job, f);
}

/* Lines of worker's log that contain every one of the words. */
static int log_count(const dq_tc_t *tc, const char *worker, const char *a,
                     const char *b)
{
        char path[512], *text, *line, *save = NULL;
        int n = 0;

        dq_tc_log_path(tc, worker, path, sizeof(path));
        text = dq_test_slurp(path);
        if (!text)
                return 0;
        for (line = strtok_r(text, "\n", &save); line;
             line = strtok_r(NULL, "\n", &save))
                n += strstr(line, a) && (!b || strstr(line, b));
        free(text);
        return n;
}

/* G10: four scopes, five jobs each, interleaved on two partitions; the
 * even jobs of a scope have a 400 ms handler, the odd ones none (one
 * Redis step). Within a scope no two runs overlap and they start in offset
 * order; jobs of different scopes run at the same time. */
Test(engine, a_scopes_jobs_run_one_at_a_time_in_offset_order, .fini = teardown,
     .timeout = 120)
{
        enum { SCOPES = 4, PER = 5 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[SCOPES][PER];
        int64_t start[SCOPES][PER], end[SCOPES][PER];
        int overlaps = 0;
        pid_t pid;

        dq_tc_init(&tc, "order", 2);
        dq_tc_arg(&tc, "max.in.flight=8");
        open_store(&tc);
        for (int j = 0; j < PER; j++)
                for (int s = 0; s < SCOPES; s++) {
                        char scope[32], src[32];
                        snprintf(scope, sizeof(scope), "order/%d", s);
                        snprintf(src, sizeof(src), "m-%d-%d", s, j);
                        jobs[s][j] = send_job(pk, &tc, s % 2, scope, src,
                                              j % 2 ? NULL : "slow:400");
                }
        dq_tc_flush(pk);
        pid = dq_tc_spawn(&tc, "w");

        for (int s = 0; s < SCOPES; s++)
                for (int j = 0; j < PER; j++) {
                        dq_test_wait_state(store, jobs[s][j], "completed",
                                           30000);
                        start[s][j] = field(jobs[s][j], "started_at");
                        end[s][j] = field(jobs[s][j], "completed_at");
                        cr_assert_gt(start[s][j], 0);
                        cr_assert_geq(end[s][j], start[s][j]);
                        cr_assert_eq(field(jobs[s][j], "attempts"), 1);
                }
        for (int s = 0; s < SCOPES; s++)
                for (int j = 1; j < PER; j++)
                        cr_assert_geq(start[s][j], end[s][j - 1],
                                      "scope %d: job %d started at %lld, "
                                      "before job %d completed at %lld",
                                      s, j, (long long)start[s][j], j - 1,
                                      (long long)end[s][j - 1]);
        /* Concurrency: some slow job of another scope ran while scope 0's
         * first one did. */
        for (int s = 1; s < SCOPES; s++)
                overlaps += start[s][0] < end[0][0] && end[s][0] > start[0][0];
        cr_assert_gt(overlaps, 0, "the scopes ran one after another");
        dq_tc_wait_caught_up(&tc, tc.topic, 20000);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        for (int s = 0; s < SCOPES; s++)
                for (int j = 0; j < PER; j++)
                        dq_job_destroy(jobs[s][j]);
        rd_kafka_destroy(pk);
}

/* G11: a handler that runs 2.5 times max.poll.interval.ms. The member is
 * never evicted (one assignment, no revoke), the lease is renewed from the
 * loop, jobs of other scopes keep completing meanwhile, and the long job
 * completes on its first attempt. */
Test(engine, a_handler_longer_than_the_poll_interval_is_never_evicted,
     .fini = teardown, .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *slow, *fast[3];
        int64_t lease1, lease2;
        pid_t pid;

        dq_tc_init(&tc, "evict", 1);
        dq_tc_arg(&tc, "kafka.session.timeout.ms=6000");
        dq_tc_arg(&tc, "kafka.max.poll.interval.ms=6000");
        dq_tc_arg(&tc, "lease=2s");
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w");
        slow = send_job(pk, &tc, 0, "long/1", "a", "slow:15000");
        dq_tc_flush(pk);
        dq_test_wait_state(store, slow, "in_progress", 20000);
        lease1 = field(slow, "lease_until");
        for (int i = 0; i < 3; i++) {
                char scope[32];
                dq_test_sleep_ms(3000);
                snprintf(scope, sizeof(scope), "other/%d", i);
                fast[i] = send_job(pk, &tc, 0, scope, "b", NULL);
                dq_tc_flush(pk);
                dq_test_wait_state(store, fast[i], "completed", 5000);
                dq_test_wait_state(store, slow, "in_progress", 100);
        }
        lease2 = field(slow, "lease_until");
        cr_assert_gt(lease2, lease1, "the lease was not renewed");
        dq_test_wait_state(store, slow, "completed", 20000);
        cr_assert_eq(field(slow, "attempts"), 1);
        cr_assert_eq(field(slow, "epoch"), 1);
        cr_assert_eq(log_count(&tc, "w", "event=assigned", NULL), 1,
                     "the member rejoined");
        cr_assert_eq(log_count(&tc, "w", "event=revoked", NULL), 0,
                     "the member was evicted");
        dq_tc_wait_caught_up(&tc, tc.topic, 20000);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(slow);
        for (int i = 0; i < 3; i++)
                dq_job_destroy(fast[i]);
        rd_kafka_destroy(pk);
}

/* A handler past handler.timeout is given up as class timeout: retried
 * through the delay tiers, then dead-lettered after max.attempts, while
 * the job behind it in another scope completes. */
Test(engine, a_handler_past_its_timeout_is_retried_then_dead_lettered,
     .fini = teardown, .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_tc_dlq_t recs[4];
        dq_record_t rec = {0};
        dq_job_t *hang, *ok;
        pid_t pid;
        int n;

        dq_tc_init(&tc, "htimeout", 1);
        dq_tc_arg(&tc, "handler.timeout=1s");
        dq_tc_arg(&tc, "max.attempts=2");
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w");
        hang = send_job(pk, &tc, 0, "hang/1", "a", "slow:600000");
        ok = send_job(pk, &tc, 0, "hang/2", "b", "slow:10");
        dq_tc_flush(pk);

        dq_test_wait_state(store, ok, "completed", 20000);
        dq_test_wait_state(store, hang, "dead", 30000);
        cr_assert_eq(field(hang, "attempts"), 2);
        cr_assert_eq(dq_store_job_get(store, "hang/1", hang->id, &rec), DQ_OK);
        cr_assert_str_eq(dq_record_get(&rec, "error_class"), "timeout");
        cr_assert_str_eq(dq_record_get(&rec, "last_error"),
                         "decay.handler.timeout");
        dq_record_release(&rec);
        n = dq_tc_read_dlq(&tc, recs, 4);
        cr_assert_eq(n, 1, "%d DLQ records", n);
        cr_assert_str_eq(recs[0].job, hang->id);
        cr_assert_str_eq(recs[0].code, "decay.handler.timeout");
        cr_assert(strstr(recs[0].message, "handler.timeout"), "%s",
                  recs[0].message);
        cr_assert_eq(log_count(&tc, "w", "handler=timeout", hang->id), 2);
        dq_tc_wait_caught_up(&tc, tc.topic, 20000);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(hang);
        dq_job_destroy(ok);
        rd_kafka_destroy(pk);
}

/* SIGTERM with eight handlers running: the drain waits for them, settles
 * them, commits through them and exits 0; each ran once. */
Test(engine, a_drain_waits_for_running_handlers, .fini = teardown,
     .timeout = 120)
{
        enum { N = 8 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[N];
        pid_t pid;

        dq_tc_init(&tc, "sdrain", 1);
        dq_tc_arg(&tc, "drain.timeout=20s");
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w");
        for (int i = 0; i < N; i++) {
                char scope[32];
                snprintf(scope, sizeof(scope), "drain/%d", i);
                jobs[i] = send_job(pk, &tc, 0, scope, "a", "slow:3000");
        }
        dq_tc_flush(pk);
        for (int i = 0; i < N; i++)
                dq_test_wait_state(store, jobs[i], "in_progress", 20000);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0, "drained cleanly");
        for (int i = 0; i < N; i++) {
                dq_test_wait_state(store, jobs[i], "completed", 1000);
                cr_assert_eq(field(jobs[i], "attempts"), 1);
        }
        dq_tc_wait_caught_up(&tc, tc.topic, 5000);
        for (int i = 0; i < N; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
}

/* A second consumer joins while the first runs slow handlers on both
 * partitions. The revoke waits for the handlers of the partitions that go
 * and commits through them: every job completes on its first attempt,
 * nothing is dead-lettered, and the group commits everything. */
Test(engine, a_revoke_waits_for_running_handlers, .fini = teardown,
     .timeout = 150)
{
        enum { N = 40 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[N];
        pid_t a, b;

        dq_tc_init(&tc, "srevoke", 2);
        dq_tc_arg(&tc, "drain.timeout=20s");
        open_store(&tc);
        a = dq_tc_spawn(&tc, "a");
        for (int i = 0; i < N; i++) {
                char scope[32], src[32];
                snprintf(scope, sizeof(scope), "rev/%d", i % 10);
                snprintf(src, sizeof(src), "m%d", i);
                jobs[i] =
                    send_job(pk, &tc, (i % 10) % 2, scope, src, "slow:1000");
        }
        dq_tc_flush(pk);
        dq_test_wait_state(store, jobs[0], "in_progress", 20000);
        dq_test_wait_state(store, jobs[1], "in_progress", 20000);
        b = dq_tc_spawn(&tc, "b");
        for (int i = 0; i < N; i++) {
                dq_test_wait_state(store, jobs[i], "completed", 60000);
                cr_assert_eq(field(jobs[i], "attempts"), 1, "job %d", i);
        }
        dq_tc_wait_caught_up(&tc, tc.topic, 20000);
        cr_assert_eq(dq_test_high(tc.dlq, 0), 0);
        cr_assert_geq(log_count(&tc, "a", "event=revoked", NULL), 1,
                      "no rebalance happened");
        kill(a, SIGTERM);
        kill(b, SIGTERM);
        cr_assert_eq(dq_tc_wait(a, 30000), 0);
        cr_assert_eq(dq_tc_wait(b, 30000), 0);
        for (int i = 0; i < N; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
}

/* max.pending.per.partition: a partition whose held records reach the cap
 * is paused, and resumed below half of it; nothing is lost or reordered
 * on the way. Twelve jobs of one scope, each 300 ms, against a cap of 4. */
Test(engine, a_full_partition_pauses_and_resumes, .fini = teardown,
     .timeout = 120)
{
        enum { N = 12 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *jobs[N];
        pid_t pid;

        dq_tc_init(&tc, "full", 1);
        dq_tc_arg(&tc, "max.pending.per.partition=4");
        open_store(&tc);
        for (int i = 0; i < N; i++) {
                char src[32];
                snprintf(src, sizeof(src), "m%d", i);
                jobs[i] = send_job(pk, &tc, 0, "full/1", src, "slow:300");
        }
        dq_tc_flush(pk);
        pid = dq_tc_spawn(&tc, "w");
        for (int i = 0; i < N; i++) {
                dq_test_wait_state(store, jobs[i], "completed", 30000);
                cr_assert_eq(field(jobs[i], "attempts"), 1);
                if (i)
                        cr_assert_geq(field(jobs[i], "started_at"),
                                      field(jobs[i - 1], "completed_at"));
        }
        dq_tc_wait_caught_up(&tc, tc.topic, 20000);
        cr_assert_geq(log_count(&tc, "w", "paused=full", NULL), 1,
                      "the partition was never paused");
        cr_assert_geq(log_count(&tc, "w", "resumed=below_half", NULL), 1,
                      "the partition was never resumed");

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        for (int i = 0; i < N; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
}
