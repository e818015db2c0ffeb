/* Broker faults a single real node cannot produce, injected with
 * librdkafka's mock cluster: the DLQ partitions' leader is down while jobs
 * are dead-lettered (deliveries time out and must be sent again), and the
 * group coordinator is down while offsets are committed. The consumer runs
 * as its own process against the mock cluster and the real Redis. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

#define PARTS 2
#define JOBS  150
#define FATAL 20 /* llm_summary without attestation: DLQ */

static int64_t offsets[2 * JOBS];

static int count_lines(const char *path, const char *a, const char *b)
{
        FILE *fp = fopen(path, "r");
        char line[4096];
        int n = 0;

        cr_assert(fp, "%s", path);
        while (fgets(line, sizeof(line), fp))
                if (strstr(line, a) && strstr(line, b))
                        n++;
        fclose(fp);
        return n;
}

static void send_jobs(rd_kafka_t *rk, dq_store_t *st, const char *topic,
                      dq_job_t **jobs, int from, int to)
{
        for (int i = from; i < to; i++) {
                char scope[32], src[64];
                const char *srcs[] = {src};
                size_t len;
                char *json;

                snprintf(scope, sizeof(scope), "mock/s%d", i % 8);
                snprintf(src, sizeof(src), "m%d", i);
                dq_test_memory(st, scope, src, "candidate", "active", src, 1);
                jobs[i] =
                    dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, scope, srcs, 1);
                if (i % (JOBS / FATAL) == 0)
                        jobs[i]->method = DQ_METHOD_LLM_SUMMARY;
                json = dq_job_serialize(jobs[i], &len);
                dq_tc_send(rk, topic, -1, scope, json, len, &offsets[i]);
                free(json);
        }
        dq_tc_flush(rk);
        for (int i = from; i < to; i++)
                cr_assert_geq(offsets[i], 0, "job %d not delivered", i);
}

/* Waits until every job is terminal in Redis. */
static void wait_terminal(dq_store_t *st, dq_job_t **jobs, int n, long ms)
{
        long long deadline = dq_test_now_ms() + ms;
        int done = 0;

        while (dq_test_now_ms() < deadline) {
                done = 0;
                for (int i = 0; i < n; i++) {
                        dq_record_t rec = {0};
                        if (dq_store_job_get(st, jobs[i]->scope, jobs[i]->id,
                                             &rec) != DQ_OK)
                                continue;
                        const char *s = dq_record_get(&rec, "state");
                        if (s &&
                            (!strcmp(s, "completed") || !strcmp(s, "dead")))
                                done++;
                        dq_record_release(&rec);
                }
                if (done == n)
                        return;
                dq_test_sleep_ms(200);
        }
        cr_assert_fail("%d of %d jobs terminal after %ld ms", done, n, ms);
}

/* A producer whose handle holds a mock cluster of n brokers, the fixture
 * named name pointed at it, with its four topics created, and a store on
 * the fixture's namespace. */
static rd_kafka_t *mock_fixture(dq_tc_t *tc, const char *name, const char *n,
                                rd_kafka_mock_cluster_t **mc, dq_store_t **st,
                                dq_conf_t **conf)
{
        rd_kafka_conf_t *kc = rd_kafka_conf_new();
        char errstr[256], ns[200];
        const char *x[] = {ns};
        rd_kafka_t *rk;

        cr_assert_eq(rd_kafka_conf_set(kc, "test.mock.num.brokers", n, errstr,
                                       sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
        rd_kafka_conf_set_dr_msg_cb(kc, dq_tc_dr_cb);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, kc, errstr, sizeof(errstr));
        cr_assert(rk, "%s", errstr);
        *mc = rd_kafka_handle_mock_cluster(rk);
        dq_tc_setup(tc, name, PARTS, rd_kafka_mock_cluster_bootstraps(*mc));
        const char *topics[] = {tc->topic, tc->dlq, tc->tier_topic[0],
                                tc->tier_topic[1]};
        for (int t = 0; t < 4; t++)
                cr_assert_eq(
                    rd_kafka_mock_topic_create(*mc, topics[t], PARTS, 1), 0);
        snprintf(ns, sizeof(ns), "redis.namespace=%s", tc->ns);
        *st = dq_test_store("test", x, 1, conf);
        return rk;
}

/* Waits up to ms for a line of log with a and b; fails with what. */
static void wait_line(const char *log, const char *a, const char *b, long ms,
                      const char *what)
{
        long long deadline = dq_test_now_ms() + ms;

        while (!count_lines(log, a, b)) {
                cr_assert_lt(dq_test_now_ms(), deadline, "%s", what);
                dq_test_sleep_ms(100);
        }
}

Test(fault_mock, broker_down_during_dlq_produce_and_commit, .timeout = 240)
{
        rd_kafka_mock_cluster_t *mc;
        rd_kafka_t *rk, *ck;
        dq_job_t *jobs[2 * JOBS];
        dq_conf_t *conf;
        dq_store_t *st;
        dq_tc_t tc;
        char errstr[256], log[512];
        const char *bootstraps;
        pid_t pid;

        /* The fixture, pointed at the mock cluster: jobs and tiers led by
         * broker 1, the DLQ by broker 3, the group coordinator on 2. */
        rk = mock_fixture(&tc, "mock", "3", &mc, &st, &conf);
        bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
        const char *topics[] = {tc.topic, tc.dlq, tc.tier_topic[0],
                                tc.tier_topic[1]};
        for (int t = 0; t < 4; t++)
                for (int p = 0; p < PARTS; p++)
                        rd_kafka_mock_partition_set_leader(
                            mc, topics[t], p, topics[t] == tc.dlq ? 3 : 1);
        rd_kafka_mock_coordinator_set(mc, "group", tc.group, 2);
        dq_tc_arg(&tc, "kafka.session.timeout.ms=10000");
        dq_tc_arg(&tc, "produce.timeout=2s");
        dq_tc_arg(&tc, "commit.interval=200ms");

        /* 1. The DLQ leader is down while the fatal jobs are dead-lettered:
         * their deliveries time out and are sent again; nothing settles
         * before a copy is acknowledged. */
        rd_kafka_mock_broker_set_down(mc, 3);
        send_jobs(rk, st, tc.topic, jobs, 0, JOBS);
        pid = dq_tc_spawn(&tc, "w");
        dq_tc_log_path(&tc, "w", log, sizeof(log));
        long long deadline = dq_test_now_ms() + 30000;
        while (!count_lines(log, "produce=failed", "action=retry")) {
                cr_assert_lt(dq_test_now_ms(), deadline,
                             "no DLQ delivery failed while its leader was "
                             "down");
                dq_test_sleep_ms(200);
        }
        cr_assert_eq(count_lines(log, "stage=dead", "class=fatal"), 0,
                     "a job was marked dead before its DLQ copy existed");
        rd_kafka_mock_broker_set_up(mc, 3);
        wait_terminal(st, jobs, JOBS, 60000);

        /* 2. The coordinator is down while offsets are committed. */
        rd_kafka_mock_broker_set_down(mc, 2);
        send_jobs(rk, st, tc.topic, jobs, JOBS, 2 * JOBS);
        deadline = dq_test_now_ms() + 30000;
        while (!count_lines(log, "stage=commit", "result=failed")) {
                cr_assert_lt(dq_test_now_ms(), deadline,
                             "no commit failed while the coordinator was "
                             "down");
                dq_test_sleep_ms(200);
        }
        rd_kafka_mock_broker_set_up(mc, 2);
        wait_terminal(st, jobs + JOBS, JOBS, 60000);

        /* Every offset ends committed, and the DLQ holds each fatal job. */
        rd_kafka_conf_t *cc = rd_kafka_conf_new();
        rd_kafka_conf_set(cc, "bootstrap.servers", bootstraps, errstr,
                          sizeof(errstr));
        rd_kafka_conf_set(cc, "group.id", tc.group, errstr, sizeof(errstr));
        ck = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof(errstr));
        cr_assert(ck, "%s", errstr);
        deadline = dq_test_now_ms() + 30000;
        while (!dq_tc_caught_up(ck, &tc, tc.topic)) {
                cr_assert_lt(dq_test_now_ms(), deadline,
                             "offsets not committed after the coordinator "
                             "came back");
                dq_test_sleep_ms(300);
        }
        int dead = 0;
        for (int i = 0; i < 2 * JOBS; i++) {
                dq_record_t rec = {0};
                cr_assert_eq(
                    dq_store_job_get(st, jobs[i]->scope, jobs[i]->id, &rec),
                    DQ_OK);
                const char *s = dq_record_get(&rec, "state");
                cr_assert_str_eq(s, jobs[i]->method == DQ_METHOD_LLM_SUMMARY
                                        ? "dead"
                                        : "completed");
                dead += !strcmp(s, "dead");
                dq_record_release(&rec);
        }
        int64_t lo, hi, total = 0;
        for (int p = 0; p < PARTS; p++) {
                cr_assert_eq(rd_kafka_query_watermark_offsets(ck, tc.dlq, p,
                                                              &lo, &hi, 10000),
                             0);
                total += hi;
        }
        cr_assert_geq(total, dead, "DLQ holds %lld, %d jobs are dead",
                      (long long)total, dead);
        printf("fault_mock: jobs=%d dead=%d dlq_records=%lld "
               "dlq_delivery_failures=%d commit_failures=%d\n",
               2 * JOBS, dead, (long long)total,
               count_lines(log, "produce=failed", "action=retry"),
               count_lines(log, "stage=commit", "result=failed"));
        fflush(stdout);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);

        /* 3. M4: a drain whose final commit fails does not exit 0. */
        pid = dq_tc_spawn(&tc, "w2");
        dq_tc_log_path(&tc, "w2", log, sizeof(log));
        wait_line(log, "stage=rebalance", "event=assigned", 30000,
                  "w2 never joined");
        dq_job_t *more[5];
        send_jobs(rk, st, tc.topic, more, 1, 5); /* plain ones, all done */
        wait_terminal(st, more + 1, 4, 30000);
        deadline = dq_test_now_ms() + 10000;
        while (count_lines(log, "stage=commit", "result=ok") == 0) {
                cr_assert_lt(dq_test_now_ms(), deadline, "w2 never committed");
                dq_test_sleep_ms(200);
        }
        for (int i = 1; i < 5; i++)
                dq_job_destroy(more[i]);
        /* The coordinator goes: this job settles, its offset cannot be
         * committed. */
        rd_kafka_mock_broker_set_down(mc, 2);
        send_jobs(rk, st, tc.topic, more, 1, 2);
        wait_terminal(st, more + 1, 1, 30000);
        dq_job_destroy(more[1]);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 60000), 1,
                     "exit 0 although the final commit failed");
        cr_assert(count_lines(log, "state=closing", "commit=failed"));
        rd_kafka_mock_broker_set_up(mc, 2);
        rd_kafka_destroy(ck);
        for (int i = 0; i < 2 * JOBS; i++)
                dq_job_destroy(jobs[i]);
        dq_store_destroy(st);
        dq_conf_destroy(conf);
        rd_kafka_destroy(rk);
}

/* The SyncGroup answers of a rejoin are late (a coordinator slow to
 * answer them, which one real node does not do on demand), and SIGTERM
 * comes while they are awaited: the leave is served on its own queue and
 * ends cleanly once they come, exit 0, well within its 10 s bound. */
Test(fault_mock, a_rejoin_awaiting_a_late_answer_does_not_hold_the_leave,
     .timeout = 120)
{
        enum { SYNC_GROUP = 14, LATE_MS = 3000 }; /* Kafka's ApiKey */
        rd_kafka_conf_t *cc;
        rd_kafka_topic_partition_list_t *sub;
        rd_kafka_mock_cluster_t *mc;
        rd_kafka_t *rk, *other;
        dq_conf_t *conf;
        dq_store_t *st;
        dq_tc_t tc;
        char errstr[256], log[512];
        const char *bootstraps;
        long long deadline, t0, took;
        pid_t pid;
        int rc;

        rk = mock_fixture(&tc, "mockleave", "1", &mc, &st, &conf);
        bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
        dq_tc_arg(&tc, "kafka.heartbeat.interval.ms=500");

        pid = dq_tc_spawn(&tc, "w");
        dq_tc_log_path(&tc, "w", log, sizeof(log));
        wait_line(log, "stage=rebalance", "event=assigned", 30000,
                  "w never joined");

        /* A second member joins: w is revoked and rejoins, and the answer
         * of each SyncGroup that follows is late. */
        cr_assert_eq(rd_kafka_mock_broker_push_request_error_rtts(
                         mc, 1, SYNC_GROUP, 2, RD_KAFKA_RESP_ERR_NO_ERROR,
                         LATE_MS, RD_KAFKA_RESP_ERR_NO_ERROR, LATE_MS),
                     0);
        cc = rd_kafka_conf_new();
        rd_kafka_conf_set(cc, "bootstrap.servers", bootstraps, errstr,
                          sizeof(errstr));
        rd_kafka_conf_set(cc, "group.id", tc.group, errstr, sizeof(errstr));
        rd_kafka_conf_set(cc, "partition.assignment.strategy", "range", errstr,
                          sizeof(errstr));
        other = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof(errstr));
        cr_assert(other, "%s", errstr);
        rd_kafka_poll_set_consumer(other);
        sub = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(sub, tc.topic, -1);
        cr_assert_eq(rd_kafka_subscribe(other, sub), 0);
        rd_kafka_topic_partition_list_destroy(sub);

        deadline = dq_test_now_ms() + 30000;
        while (!count_lines(log, "stage=rebalance", "event=revoked")) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(other, 50);
                if (m)
                        rd_kafka_message_destroy(m);
                cr_assert_lt(dq_test_now_ms(), deadline, "w never revoked");
        }
        /* Within the late answers' window: the drain, then the leave. */
        t0 = dq_test_now_ms();
        kill(pid, SIGTERM);
        while (dq_test_now_ms() - t0 < 20000 &&
               !count_lines(log, "stage=summary", "when=exit")) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(other, 50);
                if (m)
                        rd_kafka_message_destroy(m);
        }
        rc = dq_tc_wait(pid, 30000);
        took = dq_test_now_ms() - t0;
        cr_assert_eq(rc, 0, "exit %d", rc);
        cr_assert(count_lines(log, "stage=drain", "state=left"));
        cr_assert_lt(took, LATE_MS + 5000, "the leave took %lld ms", took);
        cr_log_info(
            "fault_mock: a rejoin crossed the drain; exit after %lld ms", took);

        rd_kafka_consumer_close(other);
        rd_kafka_destroy(other);
        dq_store_destroy(st);
        dq_conf_destroy(conf);
        rd_kafka_destroy(rk);
}
