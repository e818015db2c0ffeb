/* decay-consumer against the broker and Redis, one guarantee at a time:
 * delay tiers that never block a partition, lease renewal, cancel, and the
 * SIGTERM drain with its second-signal escape. Its pure parts are tested
 * in test_route.c, test_offsets.c and test_retry.c. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_envelope.h"
#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_kafka.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

static dq_store_t *store;
static dq_conf_t *conf;

static void memory(dq_tc_t *tc, const char *scope, const char *id)
{
        (void)tc;
        dq_test_memory(store, scope, id, "candidate", "active", id, 1);
}

/* A store on the fixture's namespace. */
static void open_store(dq_tc_t *tc)
{
        char ns[200];
        const char *x[] = {ns};
        snprintf(ns, sizeof(ns), "redis.namespace=%s", tc->ns);
        dq_conf_destroy(conf);
        dq_store_destroy(store);
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

/* Sends a one-source job; returns it (caller destroys). */
static dq_job_t *send_job(rd_kafka_t *pk, dq_tc_t *tc, const char *scope,
                          const char *src, const char *trace,
                          int64_t scheduled_for)
{
        const char *srcs[] = {src};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, scope, srcs, 1);
        size_t len;
        char *json;

        memory(tc, scope, src);
        if (trace)
                job->trace_id = strdup(trace);
        job->scheduled_for_ms = scheduled_for;
        json = dq_job_serialize(job, &len);
        dq_tc_produce(pk, tc->topic, 0, scope, json, len);
        free(json);
        return job;
}

static int64_t job_field(const dq_job_t *job, const char *field)
{
        return dq_test_job_int(store, job, field);
}

/* Waits up to ms for job's attempts to reach want (a new claim). */
static void wait_attempts(const dq_job_t *job, int64_t want, long ms)
{
        long long deadline = dq_test_now_ms() + ms;

        while (job_field(job, "attempts") < want) {
                cr_assert_lt(dq_test_now_ms(), deadline,
                             "job %s: attempts %lld, expected %lld", job->id,
                             (long long)job_field(job, "attempts"),
                             (long long)want);
                dq_test_sleep_ms(50);
        }
}

Test(consumer, a_waiting_job_never_blocks_its_partition, .fini = teardown,
     .timeout = 90)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        int64_t due = dq_now_ms() + 6000;
        dq_job_t *later, *retried, *now;
        pid_t pid;

        dq_tc_init(&tc, "blocking", 1);
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w");

        /* All on partition 0, in this order. */
        later = send_job(pk, &tc, "s/1", "a", NULL, due);
        retried = send_job(pk, &tc, "s/1", "b", "fail-until:1", 0);
        now = send_job(pk, &tc, "s/1", "c", NULL, 0);

        /* G6: the job behind a scheduled one and a retried one runs at
         * once... */
        dq_test_wait_state(store, now, "completed", 15000);
        cr_assert_lt(job_field(now, "completed_at"), due - 2000);
        /* ...the retried one after its backoff, through the 1s tier... */
        dq_test_wait_state(store, retried, "completed", 15000);
        cr_assert_eq(job_field(retried, "attempts"), 2);
        /* ...and the scheduled one never before its time. */
        dq_test_wait_state(store, later, "completed", 20000);
        cr_assert_geq(job_field(later, "completed_at"), due);
        cr_assert_eq(job_field(later, "attempts"), 1,
                     "deferring a job does not count an attempt");

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(later);
        dq_job_destroy(retried);
        dq_job_destroy(now);
        rd_kafka_destroy(pk);
}

Test(consumer, lease_is_renewed_while_a_job_runs_long, .fini = teardown,
     .timeout = 90)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *job;
        pid_t pid;
        int64_t first, later;

        dq_tc_init(&tc, "lease", 1);
        dq_tc_arg(&tc, "lease=1500ms");
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w");
        job = send_job(pk, &tc, "s/1", "a", "slow:5000", 0);

        dq_test_wait_state(store, job, "in_progress", 15000);
        first = job_field(job, "lease_until");
        dq_test_sleep_ms(2500);
        later = job_field(job, "lease_until");
        cr_assert_gt(later, first, "the lease was not renewed");
        cr_assert_gt(later, dq_now_ms(), "the lease ran out mid-run");
        dq_test_wait_state(store, job, "completed", 15000);
        cr_assert_eq(job_field(job, "attempts"), 1);
        cr_assert_eq(job_field(job, "epoch"), 1);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

Test(consumer, a_cancelled_job_is_skipped, .fini = teardown, .timeout = 90)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        dq_job_t *job, *next;
        char state[16];
        dq_record_t rec = {0};
        pid_t pid;

        dq_tc_init(&tc, "cancel", 1);
        open_store(&tc);
        const char *srcs[] = {"a"};
        job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        memory(&tc, "s/1", "a");
        cr_assert_eq(dq_store_cancel(store, "s/1", job->id, "operator", true,
                                     dq_now_ms(), state, sizeof(state)),
                     DQ_OK);
        size_t len;
        char *json = dq_job_serialize(job, &len);
        dq_tc_produce(pk, tc.topic, 0, "s/1", json, len);
        free(json);
        next = send_job(pk, &tc, "s/1", "b", NULL, 0);

        pid = dq_tc_spawn(&tc, "w");
        dq_test_wait_state(store, next, "completed", 15000);
        dq_test_wait_state(store, job, "cancelled", 1000);
        cr_assert_eq(
            dq_store_record_get(store, DQ_REC_MEMORY, "s/1", "a", &rec), DQ_OK);
        cr_assert_str_eq(dq_record_get(&rec, "status"), "active",
                         "a cancelled job must have no effect");
        dq_record_release(&rec);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(job);
        dq_job_destroy(next);
        rd_kafka_destroy(pk);
}

Test(consumer, sigterm_hands_back_what_cannot_finish_in_time, .fini = teardown,
     .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        rd_kafka_t *ck;
        dq_job_t *job;
        pid_t pid;
        long long t;

        dq_tc_init(&tc, "drain", 1);
        dq_tc_arg(&tc, "drain.timeout=1s");
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w1");
        job = send_job(pk, &tc, "s/1", "a", "slow:30000", 0);
        dq_test_wait_state(store, job, "in_progress", 15000);

        /* G8: the drain gives up after drain.timeout and exits 1; the job
         * stays unsettled and its offset uncommitted. */
        t = dq_test_now_ms();
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 20000), 1);
        cr_assert_lt(dq_test_now_ms() - t, 10000);
        ck = dq_test_consumer(tc.group);
        cr_assert_not(dq_tc_caught_up(ck, &tc, tc.topic));

        /* A second signal stops at once, also mid-drain. */
        pid = dq_tc_spawn(&tc, "w2");
        wait_attempts(job, 2, 20000);
        dq_test_sleep_ms(300);
        t = dq_test_now_ms();
        kill(pid, SIGTERM);
        dq_test_sleep_ms(100);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 20000), 1);
        cr_assert_lt(dq_test_now_ms() - t, 8000);
        cr_assert_eq(job_field(job, "attempts"), 2);

        /* Nothing was lost: the next owner reads the job again. */
        pid = dq_tc_spawn(&tc, "w3");
        wait_attempts(job, 3, 20000);
        cr_assert_eq(job_field(job, "attempts"), 3);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 20000), 1);

        rd_kafka_destroy(ck);
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

Test(consumer, a_job_that_keeps_killing_its_worker_is_dead_lettered,
     .fini = teardown, .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        rd_kafka_t *ck;
        dq_job_t *job;
        dq_record_t rec = {0};
        pid_t pid;

        dq_tc_init(&tc, "crashloop", 1);
        dq_tc_arg(&tc, "max.attempts=2");
        open_store(&tc);
        job = send_job(pk, &tc, "s/1", "a", "slow:60000", 0);

        /* Each run is killed mid-job: both attempts are spent. */
        for (int run = 1; run <= 2; run++) {
                pid = dq_tc_spawn(&tc, run == 1 ? "w1" : "w2");
                wait_attempts(job, run, 30000);
                kill(pid, SIGKILL);
                cr_assert_eq(dq_tc_wait(pid, 10000), 128 + SIGKILL);
        }

        /* G4: the next worker does not run it a third time. */
        pid = dq_tc_spawn(&tc, "w3");
        dq_test_wait_state(store, job, "dead", 30000);
        cr_assert_eq(job_field(job, "attempts"), 2);
        cr_assert_eq(dq_store_job_get(store, "s/1", job->id, &rec), DQ_OK);
        cr_assert_str_eq(dq_record_get(&rec, "error_class"), "crash_loop");
        dq_record_release(&rec);

        /* Its DLQ copy says why. */
        ck = dq_test_consumer("crashloop-reader");
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, tc.dlq, 0)->offset = 0;
        cr_assert_eq(rd_kafka_assign(ck, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        rd_kafka_message_t *m = NULL;
        for (int i = 0; i < 100 && !m; i++) {
                m = rd_kafka_consumer_poll(ck, 200);
                if (m && m->err) {
                        rd_kafka_message_destroy(m);
                        m = NULL;
                }
        }
        cr_assert(m, "no DLQ record");
        rd_kafka_headers_t *h;
        const void *v;
        size_t len;
        cr_assert_eq(rd_kafka_message_headers(m, &h), 0);
        cr_assert_eq(rd_kafka_header_get_last(h, DQ_HDR_ERROR_CLASS, &v, &len),
                     0);
        cr_assert(len == 10 && !memcmp(v, "crash_loop", 10));
        cr_assert_eq(rd_kafka_header_get_last(h, DQ_HDR_ATTEMPTS, &v, &len), 0);
        cr_assert(len == 1 && !memcmp(v, "2", 1));
        rd_kafka_message_destroy(m);
        rd_kafka_consumer_close(ck);
        rd_kafka_destroy(ck);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

/* H7 (G4, G1): the same job message 6 times in one batch, copies during a
 * run, and copies after a restart: one run, one attempt, nothing in the
 * DLQ. */
Test(consumer, copies_of_a_job_cost_one_attempt_and_never_reach_the_dlq,
     .fini = teardown, .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        const char *srcs[] = {"a"}, *slow_srcs[] = {"b"};
        dq_job_t *job, *slow;
        char *json, *slow_json;
        size_t len, slow_len;
        pid_t pid;

        dq_tc_init(&tc, "copies", 1);
        open_store(&tc);
        memory(&tc, "s/1", "a");
        memory(&tc, "s/2", "b");
        job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        json = dq_job_serialize(job, &len);
        slow = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/2", slow_srcs, 1);
        slow->trace_id = strdup("slow:2000");
        slow_json = dq_job_serialize(slow, &slow_len);
        for (int i = 0; i < 6; i++)
                dq_tc_send(pk, tc.topic, 0, "s/1", json, len, NULL);
        dq_tc_send(pk, tc.topic, 0, "s/2", slow_json, slow_len, NULL);
        dq_tc_flush(pk);

        pid = dq_tc_spawn(&tc, "w1");
        /* Copies of the slow job while it runs: they wait for it. */
        wait_attempts(slow, 1, 30000);
        for (int i = 0; i < 3; i++)
                dq_tc_produce(pk, tc.topic, 0, "s/2", slow_json, slow_len);
        dq_test_wait_state(store, job, "completed", 30000);
        dq_test_wait_state(store, slow, "completed", 30000);
        dq_tc_wait_caught_up(&tc, tc.topic, 30000);
        cr_assert_eq(job_field(job, "attempts"), 1);
        cr_assert_eq(job_field(slow, "attempts"), 1);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);

        /* Copies spread over a restart. */
        for (int i = 0; i < 3; i++)
                dq_tc_send(pk, tc.topic, 0, "s/1", json, len, NULL);
        dq_tc_flush(pk);
        pid = dq_tc_spawn(&tc, "w2");
        dq_tc_wait_caught_up(&tc, tc.topic, 30000);
        cr_assert_eq(job_field(job, "attempts"), 1);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);

        cr_assert_eq(dq_test_high(tc.dlq, 0), 0,
                     "a completed job was dead-lettered");
        free(json);
        free(slow_json);
        dq_job_destroy(job);
        dq_job_destroy(slow);
        rd_kafka_destroy(pk);
}

/* H8 (G6): the original message delivered again during the backoff does
 * not run the job before its not-before time. */
Test(consumer, a_redelivery_during_backoff_never_runs_the_job_early,
     .fini = teardown, .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        const char *srcs[] = {"a"};
        dq_job_t *job;
        char *json;
        size_t len;
        int64_t not_before;
        pid_t pid;

        dq_tc_init(&tc, "backoff", 1);
        /* Backoff in [0, 12 s]; the 1s and 3s tiers hop towards it. */
        dq_tc_arg(&tc, "backoff.base=12s");
        dq_tc_arg(&tc, "backoff.max=12s");
        open_store(&tc);
        memory(&tc, "s/1", "a");
        job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        job->trace_id = strdup("fail-until:1");
        json = dq_job_serialize(job, &len);
        dq_tc_produce(pk, tc.topic, 0, "s/1", json, len);

        pid = dq_tc_spawn(&tc, "w1");
        dq_test_wait_state(store, job, "retry_wait", 30000);
        not_before = job_field(job, "not_before");
        cr_assert_gt(not_before, 0);
        /* The same message again, twice, while the job waits. */
        dq_tc_produce(pk, tc.topic, 0, "s/1", json, len);
        dq_tc_produce(pk, tc.topic, 0, "s/1", json, len);
        dq_test_wait_state(store, job, "completed", 40000);
        cr_assert_geq(job_field(job, "completed_at"), not_before,
                      "ran %lld ms before its not-before time",
                      (long long)(not_before - job_field(job, "completed_at")));
        cr_assert_eq(job_field(job, "attempts"), 2);
        dq_tc_wait_caught_up(&tc, tc.topic, 30000);
        cr_assert_eq(job_field(job, "attempts"), 2);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        cr_assert_eq(dq_test_high(tc.dlq, 0), 0);
        free(json);
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

static void redis_do(const char *fmt, ...)
{
        redisContext *r = dq_test_redis();
        va_list ap;
        redisReply *rep;

        va_start(ap, fmt);
        rep = redisvCommand(r, fmt, ap);
        va_end(ap);
        cr_assert(rep && rep->type != REDIS_REPLY_ERROR, "%s",
                  rep ? rep->str : r->errstr);
        freeReplyObject(rep);
        redisFree(r);
}

/* H6 (G7): a wrongly typed source, job or idempotency key is this job's
 * problem, not an outage: it is dead-lettered with the server's message,
 * and the jobs behind it go on. */
Test(consumer, a_wrongly_typed_key_dead_letters_its_job_only, .fini = teardown,
     .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        const char *src_bad[] = {"m1"}, *src_ok[] = {"m2"};
        dq_job_t *jobs[5];
        dq_tc_dlq_t recs[8];
        const dq_tc_dlq_t *d;
        int n;
        pid_t pid;

        dq_tc_init(&tc, "wrongtype", 1);
        open_store(&tc);
        memory(&tc, "s/1", "m2");
        /* 0: its source is a string; 1: its state key is a string; 2: its
         * idempotency key is a hash; 3: behind them all, fine. */
        jobs[0] = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", src_bad, 1);
        jobs[1] = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", src_ok, 1);
        jobs[2] = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", src_ok, 1);
        jobs[2]->idempotency_key = strdup("k1");
        jobs[3] = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", src_ok, 1);
        /* 4: scheduled past schedule.max.ahead (a rogue producer). */
        jobs[4] = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", src_ok, 1);
        jobs[4]->scheduled_for_ms = 253370764800000LL; /* 9999-01-01 */
        redis_do("SET %s:mem:{s/1}:m1 not-a-hash", tc.ns);
        redis_do("SET %s:job:{s/1}:%s not-a-hash", tc.ns, jobs[1]->id);
        redis_do("HSET %s:idem:{s/1}:k1 f v", tc.ns);
        for (int i = 0; i < 5; i++) {
                size_t len;
                char *json = dq_job_serialize(jobs[i], &len);
                dq_tc_send(pk, tc.topic, 0, "s/1", json, len, NULL);
                free(json);
        }
        dq_tc_flush(pk);

        pid = dq_tc_spawn(&tc, "w1");
        dq_test_wait_state(store, jobs[3], "completed", 30000);
        dq_tc_wait_caught_up(&tc, tc.topic, 30000);
        dq_test_wait_state(store, jobs[0], "dead", 10000);
        dq_test_wait_state(store, jobs[2], "dead", 10000);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);

        n = dq_tc_read_dlq(&tc, recs, 8);
        cr_assert_eq(n, 4, "%d DLQ records", n);
        for (int i = 0; i < 3; i++) {
                cr_assert(d = dq_tc_dlq_find(recs, n, jobs[i]->id), "job %d",
                          i);
                cr_assert_str_eq(d->code, "decay.store.command_error");
                cr_assert(strstr(d->message, "WRONGTYPE"), "%s", d->message);
        }
        cr_assert(d = dq_tc_dlq_find(recs, n, jobs[4]->id));
        cr_assert_str_eq(d->code, "decay.job.scheduled_too_far");
        for (int i = 0; i < 5; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
}

/* Creates topic with max.message.bytes max (to hold what production can
 * send at the limit). */
static void topic_with_max(const char *topic, int64_t max)
{
        rd_kafka_t *rk = dq_test_producer();
        const char *t[] = {topic};
        char errstr[512];

        cr_assert_eq(dq_kafka_create_topics(rk, t, 1, 1, max, 15000, errstr,
                                            sizeof(errstr)),
                     DQ_OK, "%s", errstr);
        rd_kafka_destroy(rk);
}

static rd_kafka_t *big_producer(void)
{
        rd_kafka_conf_t *k = rd_kafka_conf_new();
        char errstr[512];
        rd_kafka_t *rk;

        rd_kafka_conf_set(k, "bootstrap.servers", dq_test_bootstrap(), NULL, 0);
        rd_kafka_conf_set(k, "message.max.bytes", "4000000", NULL, 0);
        rd_kafka_conf_set_dr_msg_cb(k, dq_tc_dr_cb);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, k, errstr, sizeof(errstr));
        cr_assert(rk, "%s", errstr);
        return rk;
}

/* H2 (G7): messages at and over every size limit, all accepted by the
 * broker, each reach their end; none wedges its partition's commits. */
Test(consumer, messages_at_and_over_the_size_limits_never_wedge_a_partition,
     .fini = teardown, .timeout = 180)
{
        dq_tc_t tc;
        rd_kafka_t *pk;
        const char *srcs[] = {"a"};
        dq_job_t *padded;
        char *json, *big, *huge, *padded_json;
        size_t len, huge_len = 2u << 20, padded_len = 1u << 20;
        dq_tc_dlq_t recs[8];
        pid_t pid;
        int n;

        dq_tc_setup(&tc, "sizes", 1, dq_test_bootstrap());
        topic_with_max(tc.topic, 4000000);
        topic_with_max(tc.dlq, DQ_COPY_MAX_BYTES(1 << 20));
        topic_with_max(tc.tier_topic[0], DQ_COPY_MAX_BYTES(1 << 20));
        topic_with_max(tc.tier_topic[1], DQ_COPY_MAX_BYTES(1 << 20));
        open_store(&tc);
        memory(&tc, "s/1", "a");

        /* 1: 999,900 bytes that are not JSON; 2: 2 MiB, over
         * job.max.bytes; 3: a valid job padded with JSON white space to
         * exactly job.max.bytes, which fails once (its delay copy is the
         * largest a job can make). */
        big = malloc(999900);
        memset(big, 'x', 999900);
        huge = malloc(huge_len);
        memset(huge, 'y', huge_len);
        padded = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        padded->trace_id = strdup("fail-until:1");
        json = dq_job_serialize(padded, &len);
        padded_json = malloc(padded_len);
        memset(padded_json, ' ', padded_len);
        memcpy(padded_json, json, len - 1);
        padded_json[padded_len - 1] = '}';
        free(json);

        pk = big_producer();
        dq_tc_send(pk, tc.topic, 0, "k1", big, 999900, NULL);
        dq_tc_send(pk, tc.topic, 0, "k2", huge, huge_len, NULL);
        dq_tc_send(pk, tc.topic, 0, "s/1", padded_json, padded_len, NULL);
        dq_tc_flush(pk);

        pid = dq_tc_spawn(&tc, "w1");
        dq_test_wait_state(store, padded, "completed", 60000);
        dq_tc_wait_caught_up(&tc, tc.topic, 60000);
        cr_assert_eq(job_field(padded, "attempts"), 2);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);

        /* Both poison messages are in the DLQ; the 2 MiB one cut to fit,
         * saying so, with its size and digest. */
        n = dq_tc_read_dlq(&tc, recs, 8);
        cr_assert_eq(n, 2, "%d DLQ records", n);
        {
                rd_kafka_t *ck = dq_test_consumer("sizes-reader");
                rd_kafka_topic_partition_list_t *l =
                    rd_kafka_topic_partition_list_new(1);
                rd_kafka_message_t *m;
                rd_kafka_headers_t *h;
                const void *v;
                size_t vlen;
                int seen = 0;

                rd_kafka_topic_partition_list_add(l, tc.dlq, 0)->offset = 0;
                cr_assert_eq(rd_kafka_assign(ck, l), 0);
                rd_kafka_topic_partition_list_destroy(l);
                for (int i = 0; i < 200 && seen < 2; i++) {
                        if (!(m = rd_kafka_consumer_poll(ck, 100)))
                                continue;
                        if (m->err) {
                                rd_kafka_message_destroy(m);
                                continue;
                        }
                        seen++;
                        cr_assert_eq(rd_kafka_message_headers(m, &h), 0);
                        if (m->key_len == 2 && !memcmp(m->key, "k1", 2)) {
                                cr_assert_eq(m->len, 999900);
                                cr_assert_neq(
                                    rd_kafka_header_get_last(
                                        h, DQ_HDR_TRUNCATED, &v, &vlen),
                                    0);
                        } else {
                                cr_assert_lt(m->len, huge_len);
                                cr_assert_gt(m->len, 1000000);
                                cr_assert_eq(
                                    rd_kafka_header_get_last(
                                        h, DQ_HDR_TRUNCATED, &v, &vlen),
                                    0);
                                cr_assert_eq(
                                    rd_kafka_header_get_last(
                                        h, DQ_HDR_ORIGINAL_SIZE, &v, &vlen),
                                    0);
                                cr_assert(vlen == 7 &&
                                          !memcmp(v, "2097152", 7));
                                cr_assert_eq(
                                    rd_kafka_header_get_last(
                                        h, DQ_HDR_ORIGINAL_SHA256, &v, &vlen),
                                    0);
                                cr_assert_eq(vlen, 64);
                                cr_assert_eq(
                                    rd_kafka_header_get_last(
                                        h, DQ_HDR_ERROR_CODE, &v, &vlen),
                                    0);
                                cr_assert(
                                    vlen == 19 &&
                                    !memcmp(v, "decay.job.too_large", 19));
                        }
                        rd_kafka_message_destroy(m);
                }
                cr_assert_eq(seen, 2);
                rd_kafka_consumer_close(ck);
                rd_kafka_destroy(ck);
        }
        free(big);
        free(huge);
        free(padded_json);
        dq_job_destroy(padded);
        rd_kafka_destroy(pk);
}

/* H2: a DLQ or tier topic too small for a copy of a job at job.max.bytes
 * stops the consumer at start, saying how to fix it. */
Test(consumer, topics_too_small_for_copies_refuse_the_start, .fini = teardown,
     .timeout = 60)
{
        dq_tc_t tc;
        char log[512], *text;
        pid_t pid;

        dq_tc_setup(&tc, "small", 1, dq_test_bootstrap());
        topic_with_max(tc.topic, 0);
        topic_with_max(tc.dlq, 0); /* the broker's default, 1 MiB + 12 */
        topic_with_max(tc.tier_topic[0], DQ_COPY_MAX_BYTES(1 << 20));
        topic_with_max(tc.tier_topic[1], DQ_COPY_MAX_BYTES(1 << 20));
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w1");
        cr_assert_eq(dq_tc_wait(pid, 30000), 3);
        dq_tc_log_path(&tc, "w1", log, sizeof(log));
        text = dq_test_slurp(log);
        cr_assert(strstr(text, "max.message.bytes=1064960"), "%s", text);
        cr_assert(strstr(text, tc.dlq), "%s", text);
        free(text);
}

/* A kafka.* key that would let librdkafka store or commit offsets on its
 * own (G3), or make the copies' producer lose or repeat a send, stops the
 * consumer at start with the key and where it was set, instead of being
 * overridden without a word. The worst values first. */
Test(consumer, a_key_that_loosens_a_guarantee_refuses_the_start,
     .fini = teardown, .timeout = 90)
{
        static const struct {
                const char *kv, *want;
        } bad[] = {
            {"kafka.enable.auto.commit=true",
             "kafka.enable.auto.commit=true: decayq keeps "
             "enable.auto.commit=false"},
            {"kafka.enable.auto.offset.store=true",
             "kafka.enable.auto.offset.store=true: decayq keeps "
             "enable.auto.offset.store=false"},
            {"kafka.acks=1", "kafka.acks=1: decayq keeps acks=all"},
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                dq_tc_t tc;
                char log[512], worker[16], *text;
                const char *extra[] = {"-X", bad[i].kv};
                pid_t pid;

                dq_tc_init(&tc, "loosen", 1);
                snprintf(worker, sizeof(worker), "w%zu", i);
                pid = dq_tc_spawn_program(&tc, "consumer/decay-consumer",
                                          worker, extra, 2);
                cr_assert_eq(dq_tc_wait(pid, 30000), 3, "%s", bad[i].kv);
                dq_tc_log_path(&tc, worker, log, sizeof(log));
                text = dq_test_slurp(log);
                cr_assert(strstr(text, bad[i].want), "%s", text);
                free(text);
        }
}

/* H3: a static member fenced by another with the same instance id stops at
 * once with exit 4, says so at error level, and commits nothing; the other
 * goes on working. */
Test(consumer, a_fenced_static_member_exits_non_zero, .fini = teardown,
     .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        char log[512], *text;
        dq_job_t *job;
        pid_t w1, w2;

        dq_tc_init(&tc, "fenced", 2);
        dq_tc_arg(&tc, "kafka.group.instance.id=pod-0");
        open_store(&tc);
        w1 = dq_tc_spawn(&tc, "w1");
        job = send_job(pk, &tc, "s/1", "a", NULL, 0);
        dq_test_wait_state(store, job, "completed", 30000);
        dq_job_destroy(job);

        w2 = dq_tc_spawn(&tc, "w2");
        cr_assert_eq(dq_tc_wait(w1, 60000), 4, "the fenced member went on");
        dq_tc_log_path(&tc, "w1", log, sizeof(log));
        text = dq_test_slurp(log);
        cr_assert(strstr(text, "level=error stage=kafka"), "%s", text);
        cr_assert(strstr(text, "fatal=true"), "%s", text);
        free(text);

        job = send_job(pk, &tc, "s/1", "b", NULL, 0);
        dq_test_wait_state(store, job, "completed", 60000);
        kill(w2, SIGTERM);
        cr_assert_eq(dq_tc_wait(w2, 30000), 0);
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

/* M3: SIGHUP and SIGQUIT drain like SIGTERM; SIGUSR1 logs the summary and
 * the consumer goes on; every signal is logged. */
Test(consumer, every_signal_is_logged_and_none_kills_without_a_drain,
     .fini = teardown, .timeout = 120)
{
        static const int stops[] = {SIGHUP, SIGQUIT};
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        char log[512], worker[16], *text;
        dq_job_t *job;
        pid_t pid;

        dq_tc_init(&tc, "signals", 1);
        open_store(&tc);
        for (size_t i = 0; i < 2; i++) {
                snprintf(worker, sizeof(worker), "w%zu", i);
                pid = dq_tc_spawn(&tc, worker);
                job = send_job(pk, &tc, "s/1", i ? "b" : "a", NULL, 0);
                dq_test_wait_state(store, job, "completed", 30000);
                kill(pid, SIGUSR1);
                kill(pid, SIGUSR2);
                dq_test_sleep_ms(500);
                cr_assert_eq(kill(pid, 0), 0, "SIGUSR1 or 2 ended it");
                kill(pid, stops[i]);
                cr_assert_eq(dq_tc_wait(pid, 30000), 0);
                dq_tc_log_path(&tc, worker, log, sizeof(log));
                text = dq_test_slurp(log);
                cr_assert(strstr(text, "signal=USR1 action=summary"), "%s",
                          text);
                cr_assert(strstr(text, "when=signal"), "%s", text);
                cr_assert(strstr(text, "signal=USR2 action=ignored"), "%s",
                          text);
                cr_assert(strstr(text, i ? "signal=QUIT action=drain"
                                         : "signal=HUP action=drain"),
                          "%s", text);
                cr_assert(strstr(text, "state=closing handed_back=false "
                                       "commit=ok"),
                          "%s", text);
                free(text);
                dq_job_destroy(job);
        }
        rd_kafka_destroy(pk);
}

/* H8 (G6): kill -9 after the delay copy was delivered and before the
 * original's offset was committed. The next owner reads the original again
 * while the job waits in its backoff, and the delay copy too: the job runs
 * once more, not before its not-before time, and nothing reaches the DLQ. */
Test(consumer, a_kill_between_delay_copy_and_commit_never_runs_early,
     .fini = teardown, .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        const char *srcs[] = {"a"};
        char log[512], *text;
        dq_job_t *job;
        char *json;
        size_t len;
        int64_t not_before;
        pid_t pid;

        dq_tc_init(&tc, "killbackoff", 1);
        dq_tc_arg(&tc, "backoff.base=30s");
        dq_tc_arg(&tc, "backoff.max=30s");
        dq_tc_arg(&tc, "commit.interval=1h"); /* nothing committed by then */
        open_store(&tc);
        memory(&tc, "s/1", "a");
        job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        job->trace_id = strdup("fail-until:1");
        json = dq_job_serialize(job, &len);
        dq_tc_produce(pk, tc.topic, 0, "s/1", json, len);

        pid = dq_tc_spawn(&tc, "w1");
        dq_test_wait_state(store, job, "retry_wait", 30000);
        not_before = job_field(job, "not_before");
        /* Its delay copy is out (the tier's high watermark moves). */
        {
                long long deadline = dq_test_now_ms() + 15000;
                while (dq_test_high(tc.tier_topic[0], 0) +
                           dq_test_high(tc.tier_topic[1], 0) ==
                       0) {
                        cr_assert_lt(dq_test_now_ms(), deadline,
                                     "no delay copy was written");
                        dq_test_sleep_ms(50);
                }
        }
        kill(pid, SIGKILL);
        cr_assert_eq(dq_tc_wait(pid, 10000), 128 + SIGKILL);

        pid = dq_tc_spawn(&tc, "w2");
        int64_t respawned = dq_now_ms();
        dq_test_wait_state(store, job, "completed", 60000);
        cr_assert_geq(job_field(job, "completed_at"), not_before,
                      "ran %lld ms before its not-before time",
                      (long long)(not_before - job_field(job, "completed_at")));
        cr_assert_eq(job_field(job, "attempts"), 2);
        dq_tc_log_path(&tc, "w2", log, sizeof(log));
        text = dq_test_slurp(log);
        /* The new owner joins within about 10 s; a backoff (drawn from
         * [0, 30 s]) that ends later than that is met by the original
         * read again, which must wait. */
        if (not_before > respawned + 12000)
                cr_assert(strstr(text, "status=not_due"),
                          "the original was not deferred: %s", text);
        else
                cr_log_info("backoff ended before the new owner joined");
        free(text);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        cr_assert_eq(dq_test_high(tc.dlq, 0), 0);
        free(json);
        dq_job_destroy(job);
        rd_kafka_destroy(pk);
}

/* Deterministic jobs run in flight, their replies read after the next
 * batch is sent, over redis.connections lanes: at the fewest lanes and at
 * the most, with three jobs a batch, every job completes once, a record
 * delivered twice costs no attempt, and a scope's jobs complete in the
 * order of their offsets. */
static void in_flight_over(const char *lanes)
{
        enum { ORDERED = 12, OTHERS = 18 };
        dq_job_t *ordered[ORDERED], *others[OTHERS];
        rd_kafka_t *pk = dq_tc_producer();
        char scope[32], src[32];
        dq_tc_t tc;
        pid_t pid;

        dq_tc_init(&tc, "in-flight", 1);
        dq_tc_arg(&tc, lanes);
        dq_tc_arg(&tc, "batch.size=3");
        open_store(&tc);
        pid = dq_tc_spawn(&tc, "w");
        for (int i = 0; i < ORDERED; i++) {
                snprintf(src, sizeof(src), "o%d", i);
                ordered[i] = send_job(pk, &tc, "order/1", src, NULL, 0);
                snprintf(scope, sizeof(scope), "other/%d", i);
                snprintf(src, sizeof(src), "x%d", i);
                others[i] = send_job(pk, &tc, scope, src, NULL, 0);
        }
        for (int i = ORDERED; i < OTHERS; i++) {
                size_t len;
                char *json;

                snprintf(scope, sizeof(scope), "other/%d", i);
                snprintf(src, sizeof(src), "x%d", i);
                others[i] = send_job(pk, &tc, scope, src, NULL, 0);
                /* The same job again, as a resend would. */
                json = dq_job_serialize(others[i], &len);
                dq_tc_produce(pk, tc.topic, 0, scope, json, len);
                free(json);
        }
        for (int i = 0; i < OTHERS; i++) {
                dq_test_wait_state(store, others[i], "completed", 30000);
                cr_expect_eq(job_field(others[i], "attempts"), 1, "%s", lanes);
        }
        for (int i = 0; i < ORDERED; i++) {
                dq_test_wait_state(store, ordered[i], "completed", 30000);
                cr_expect_eq(job_field(ordered[i], "attempts"), 1, "%s", lanes);
                if (i)
                        cr_expect_geq(job_field(ordered[i], "completed_at"),
                                      job_field(ordered[i - 1], "completed_at"),
                                      "%s: job %d of the scope completed "
                                      "before job %d",
                                      lanes, i, i - 1);
        }
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        for (int i = 0; i < ORDERED; i++)
                dq_job_destroy(ordered[i]);
        for (int i = 0; i < OTHERS; i++)
                dq_job_destroy(others[i]);
        rd_kafka_destroy(pk);
}

Test(consumer, runs_in_flight_complete_once_in_scope_order, .fini = teardown,
     .timeout = 120)
{
        in_flight_over("redis.connections=1");
        dq_tc_reap();
        in_flight_over("redis.connections=16");
}
