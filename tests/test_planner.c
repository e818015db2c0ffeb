/* decay-planner against a real Kafka broker and Redis (G13): planners on
 * skewed clocks propose each (scope, window, chunk) once; a planner killed
 * mid-pass loses nothing; downtime is caught up in one pass; overlapping
 * passes dead-letter nothing; undelivered jobs come back; bad registry and
 * index entries are skipped and counted; triggers coalesce; and, end to
 * end with two consumers, every due memory decays. The oracle reads every
 * message of the jobs topic and every memory, not only final counts. */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dq_memory.h"
#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_time.h"
#include "banned.h"

#define PLANNER "planner/decay-planner"
#define HOUR    3600000LL
#define OLD     (3 * HOUR) /* due: past 10 minutes and a window of 1h */

static void fini(void)
{
        dq_tc_reap();
}

TestSuite(planner, .fini = fini, .timeout = 240);

/* The fixture: topics, namespace, and the planner's policy for tests:
 * candidates older than 10 minutes, 1 to 3 a job. */
static void setup(dq_tc_t *tc, const char *name)
{
        dq_tc_init(tc, name, 2);
        dq_tc_arg(tc, "plan.candidates.min.age=10m");
        dq_tc_arg(tc, "plan.candidates.min.sources=1");
        dq_tc_arg(tc, "plan.candidates.max.sources=3");
        dq_tc_arg(tc, "plan.episodes.min.age=10m");
        dq_tc_arg(tc, "plan.episodes.min.sources=1");
        dq_tc_arg(tc, "plan.episodes.max.sources=3");
        dq_tc_arg(tc, "plan.interval=1h");
}

static dq_store_t *store_of(const dq_tc_t *tc)
{
        char host[160], port[64], ns[192], errstr[512];
        char *X[] = {host, port, ns};
        dq_conf_t *conf;
        dq_store_t *st;

        snprintf(host, sizeof(host), "redis.host=%s", dq_test_redis_host());
        snprintf(port, sizeof(port), "redis.port=%d", dq_test_redis_port());
        snprintf(ns, sizeof(ns), "redis.namespace=%s", tc->ns);
        conf = dq_conf_load(NULL, X, 3, errstr, sizeof(errstr));
        cr_assert_not_null(conf, "%s", errstr);
        st = dq_store_new(conf, "test", errstr, sizeof(errstr));
        cr_assert_not_null(st, "%s", errstr);
        dq_conf_destroy(conf);
        return st;
}

static void put(dq_store_t *st, dq_rec_kind_t kind, const char *scope,
                const char *id, const char *type, const char *time_field,
                long long t)
{
        char ts[32];
        const char *kv[] = {"type", type,      "status", "active",   "claim",
                            id,     "content", id,       time_field, ts};
        snprintf(ts, sizeof(ts), "%lld", t);
        cr_assert_eq(dq_memory_put(st, kind, scope, id, kv, 5, NULL), DQ_OK);
}

/* n candidates "<scope>-c<i>" created age ms ago. */
static void candidates(dq_store_t *st, const char *scope, int n, int64_t age)
{
        int64_t now = dq_now_ms();
        for (int i = 0; i < n; i++) {
                char id[300];
                snprintf(id, sizeof(id), "%s-c%d", scope, i);
                for (char *p = id; *p; p++)
                        if (*p == '/')
                                *p = '_';
                put(st, DQ_REC_MEMORY, scope, id, "candidate", "created_at",
                    now - age + i);
        }
}

/* Runs decay-planner --once as worker with extra -X pairs; returns its
 * exit code. */
static int plan_once(dq_tc_t *tc, const char *worker, const char *const *xs,
                     int n)
{
        const char *extra[10];
        int k = 0;

        for (int i = 0; i < n && k < 8; i++) {
                extra[k++] = "-X";
                extra[k++] = xs[i];
        }
        extra[k++] = "--once";
        return dq_tc_wait(dq_tc_spawn_program(tc, PLANNER, worker, extra, k),
                          120000);
}

static pid_t planner_daemon(dq_tc_t *tc, const char *worker)
{
        return dq_tc_spawn_program(tc, PLANNER, worker, NULL, 0);
}

/* How many lines of worker's log hold needle. */
static int log_count(const dq_tc_t *tc, const char *worker, const char *needle)
{
        char path[512];
        char *log, *p;
        int n = 0;

        dq_tc_log_path(tc, worker, path, sizeof(path));
        log = dq_test_slurp(path);
        for (p = log; (p = strstr(p, needle)); p++)
                n++;
        free(log);
        return n;
}

/* The value of key=... on the last line of worker's log holding needle,
 * or -1. */
static long long log_value(const dq_tc_t *tc, const char *worker,
                           const char *needle, const char *key)
{
        char path[512], k[64];
        char *log, *p, *last = NULL;
        long long v = -1;

        dq_tc_log_path(tc, worker, path, sizeof(path));
        log = dq_test_slurp(path);
        for (p = log; (p = strstr(p, needle)); p++)
                last = p;
        snprintf(k, sizeof(k), " %s=", key);
        if (last && (p = strstr(last, k)) &&
            (!strchr(last, '\n') || p < strchr(last, '\n')))
                v = atoll(p + strlen(k));
        free(log);
        return v;
}

/* Every message of the jobs topic: its job id and idempotency key. */
typedef struct msgs_s {
        size_t cnt;
        char id[4096][27];
        char key[4096][128];
        char scope[4096][64];
} msgs_t;

static void read_topic(const dq_tc_t *tc, msgs_t *out)
{
        rd_kafka_t *ck = dq_test_consumer("planner-reader");
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(tc->partitions);
        int64_t want = 0;

        for (int p = 0; p < tc->partitions; p++) {
                rd_kafka_topic_partition_list_add(l, tc->topic, p)->offset = 0;
                want += dq_test_high(tc->topic, p);
        }
        cr_assert_eq(rd_kafka_assign(ck, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        out->cnt = 0;
        for (int idle = 0; (int64_t)out->cnt < want && idle < 100;) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(ck, 200);
                json_t *o;

                if (!m) {
                        idle++;
                        continue;
                }
                if (m->err || out->cnt >= 4096) {
                        rd_kafka_message_destroy(m);
                        continue;
                }
                o = json_loadb(m->payload, m->len, 0, NULL);
                cr_assert_not_null(o, "a planned job that is not JSON");
                snprintf(out->id[out->cnt], 27, "%s",
                         json_string_value(json_object_get(o, "id")));
                snprintf(
                    out->key[out->cnt], 128, "%s",
                    json_string_value(json_object_get(o, "idempotency_key")));
                snprintf(out->scope[out->cnt], 64, "%s",
                         json_string_value(json_object_get(o, "scope")));
                out->cnt++;
                json_decref(o);
                rd_kafka_message_destroy(m);
        }
        cr_assert_eq((int64_t)out->cnt, want, "read %zu of %lld messages",
                     out->cnt, (long long)want);
        rd_kafka_consumer_close(ck);
        rd_kafka_destroy(ck);
}

/* Distinct job ids among the messages; and no (scope, key) names two ids,
 * no id two (scope, key). */
static size_t distinct_jobs(const msgs_t *m)
{
        size_t n = 0;

        for (size_t i = 0; i < m->cnt; i++) {
                bool seen = false;
                for (size_t j = 0; j < i; j++) {
                        bool same_id = !strcmp(m->id[i], m->id[j]);
                        bool same_key = !strcmp(m->key[i], m->key[j]) &&
                                        !strcmp(m->scope[i], m->scope[j]);
                        cr_assert_eq(same_id, same_key,
                                     "job %s (%s %s) and %s (%s %s): one "
                                     "proposal, two identities",
                                     m->id[i], m->scope[i], m->key[i], m->id[j],
                                     m->scope[j], m->key[j]);
                        seen |= same_id;
                }
                n += !seen;
        }
        return n;
}

/* The memory oracle over one scope's candidates "<scope>-c<i>": each is
 * compressed into exactly one summary, that summary lists it, and no
 * summary lists a memory compressed elsewhere. Returns how many memories
 * were compressed. */
static int check_compressed(redisContext *r, const dq_tc_t *tc,
                            const char *scope, int n, bool want_all)
{
        int done = 0;

        for (int i = 0; i < n; i++) {
                char id[300];
                redisReply *h, *s;

                snprintf(id, sizeof(id), "%s-c%d", scope, i);
                for (char *p = id; *p; p++)
                        if (*p == '/')
                                *p = '_';
                h = redisCommand(r,
                                 "HMGET %s:mem:{%s}:%s status "
                                 "compressed_into",
                                 tc->ns, scope, id);
                cr_assert(h && h->type == REDIS_REPLY_ARRAY);
                if (h->element[0]->type != REDIS_REPLY_STRING ||
                    strcmp(h->element[0]->str, "compressed")) {
                        cr_assert_not(want_all, "%s is still %s", id,
                                      h->element[0]->str);
                        freeReplyObject(h);
                        continue;
                }
                s = redisCommand(r, "HGET %s:mem:{%s}:%s source_ids", tc->ns,
                                 scope, h->element[1]->str);
                cr_assert(s && s->type == REDIS_REPLY_STRING,
                          "%s: its summary %s is missing", id,
                          h->element[1]->str);
                cr_assert(strstr(s->str, id), "%s not in its summary %s", id,
                          s->str);
                freeReplyObject(s);
                freeReplyObject(h);
                done++;
        }
        return done;
}

/* Counts jobs of the namespace by state (SCAN). */
static void job_states(redisContext *r, const dq_tc_t *tc, int *completed,
                       int *dead, int *other)
{
        char cursor[32] = "0";

        *completed = *dead = *other = 0;
        do {
                redisReply *k = redisCommand(
                    r, "SCAN %s MATCH %s:job:* COUNT 1000", cursor, tc->ns);
                cr_assert(k && k->type == REDIS_REPLY_ARRAY);
                snprintf(cursor, sizeof(cursor), "%s", k->element[0]->str);
                for (size_t i = 0; i < k->element[1]->elements; i++) {
                        redisReply *s = redisCommand(
                            r, "HGET %s state", k->element[1]->element[i]->str);
                        if (s && s->type == REDIS_REPLY_STRING &&
                            !strcmp(s->str, "completed"))
                                (*completed)++;
                        else if (s && s->type == REDIS_REPLY_STRING &&
                                 !strcmp(s->str, "dead"))
                                (*dead)++;
                        else
                                (*other)++;
                        freeReplyObject(s);
                }
                freeReplyObject(k);
        } while (strcmp(cursor, "0"));
}

static int64_t dlq_count(const dq_tc_t *tc)
{
        int64_t n = 0;
        for (int p = 0; p < tc->partitions; p++)
                n += dq_test_high(tc->dlq, p);
        return n;
}

/* Waits up to 4 s for the jobs topic to hold more than n messages: a
 * pass under way. */
static void wait_published(const dq_tc_t *tc, int64_t n)
{
        for (int i = 0; i < 200; i++) {
                if (dq_test_high(tc->topic, 0) + dq_test_high(tc->topic, 1) > n)
                        return;
                dq_test_sleep_ms(20);
        }
}

static void stop_consumers(pid_t *pids, int n)
{
        for (int i = 0; i < n; i++)
                kill(pids[i], SIGTERM);
        for (int i = 0; i < n; i++)
                cr_assert_eq(dq_tc_wait(pids[i], 60000), 0);
}

Test(planner, three_planners_on_skewed_clocks_propose_each_chunk_once)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        msgs_t *m = calloc(1, sizeof(*m));
        const char *offsets[] = {"0", "600000", "-600000"};
        pid_t pids[3], c;
        char scope[32];
        int completed, dead, other;

        setup(&tc, "plan3");
        st = store_of(&tc);
        /* 20 scopes x 7 candidates, at most 3 a job: chunks of 3, 3, 1. */
        for (int s = 0; s < 20; s++) {
                snprintf(scope, sizeof(scope), "t/%d", s);
                candidates(st, scope, 7, OLD);
        }
        for (int i = 0; i < 3; i++) {
                char worker[16];
                snprintf(worker, sizeof(worker), "p%d", i);
                setenv("DQ_TEST_CLOCK_OFFSET_MS", offsets[i], 1);
                pids[i] = dq_tc_spawn_program(&tc, PLANNER, worker,
                                              (const char *[]){"--once"}, 1);
        }
        unsetenv("DQ_TEST_CLOCK_OFFSET_MS");
        for (int i = 0; i < 3; i++)
                cr_assert_eq(dq_tc_wait(pids[i], 120000), 0);
        cr_assert_eq(log_value(&tc, "p1", "stage=pass", "scopes"), 20);

        c = dq_tc_spawn(&tc, "w1");
        dq_tc_wait_caught_up(&tc, tc.topic, 60000);
        stop_consumers(&c, 1);

        read_topic(&tc, m);
        cr_assert_geq(m->cnt, 60);
        cr_assert_eq(distinct_jobs(m), 60, "%zu jobs for 60 chunks",
                     distinct_jobs(m));
        job_states(r, &tc, &completed, &dead, &other);
        cr_assert_eq(completed, 60);
        cr_assert_eq(dead + other, 0);
        cr_assert_eq(dlq_count(&tc), 0);
        for (int s = 0; s < 20; s++) {
                snprintf(scope, sizeof(scope), "t/%d", s);
                cr_assert_eq(check_compressed(r, &tc, scope, 7, true), 7);
        }
        /* Copies beyond the first were skipped, not run. */
        cr_assert_eq(log_value(&tc, "w1", "when=exit", "completed"), 60);
        cr_assert_eq(log_value(&tc, "w1", "when=exit", "consumed"),
                     (long long)m->cnt);
        free(m);
        dq_store_destroy(st);
        redisFree(r);
}

Test(planner, killed_mid_pass_then_restarted_compresses_each_memory_once)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        const char *slow[] = {"plan.batch=1"};
        pid_t p, c[2];
        char scope[32];
        long long due;

        setup(&tc, "plankill");
        st = store_of(&tc);
        /* 600 scopes, one at a time with a flush each: a pass long enough
         * to be killed in. */
        for (int s = 0; s < 600; s++) {
                snprintf(scope, sizeof(scope), "k/%d", s);
                candidates(st, scope, 4, OLD);
        }
        dq_tc_arg(&tc, slow[0]);
        p = planner_daemon(&tc, "p1");
        wait_published(&tc, 20);
        kill(p, SIGKILL);
        cr_assert_eq(dq_tc_wait(p, 10000), 128 + SIGKILL);
        cr_assert_eq(log_count(&tc, "p1", "stage=pass"), 0,
                     "the pass ended before the kill: nothing tested");

        cr_assert_eq(plan_once(&tc, "p2", NULL, 0), 0);
        c[0] = dq_tc_spawn(&tc, "w1");
        c[1] = dq_tc_spawn(&tc, "w2");
        dq_tc_wait_caught_up(&tc, tc.topic, 120000);
        stop_consumers(c, 2);

        for (int s = 0; s < 600; s++) {
                snprintf(scope, sizeof(scope), "k/%d", s);
                cr_assert_eq(check_compressed(r, &tc, scope, 4, true), 4);
        }
        cr_assert_eq(dlq_count(&tc), 0);
        /* None left due: a third pass finds nothing. */
        cr_assert_eq(plan_once(&tc, "p3", NULL, 0), 0);
        due = log_value(&tc, "p3", "stage=pass", "due");
        cr_assert_eq(due, 0, "%lld memories still due", due);
        cr_assert_eq(log_value(&tc, "p3", "stage=pass", "debt"), 0);
        dq_store_destroy(st);
        redisFree(r);
}

/* Waits until Redis time is in [at, at + 400 ms) for a window-sensitive
 * step; fails when it overshoots. */
static void wait_redis_time(dq_store_t *st, int64_t at)
{
        int64_t now;
        for (;;) {
                cr_assert_eq(dq_memory_time(st, &now), DQ_OK);
                if (now >= at)
                        break;
                dq_test_sleep_ms(at - now > 50 ? 50 : at - now);
        }
        cr_assert_lt(now, at + 400, "overslept: %lld ms late",
                     (long long)(now - at));
}

Test(planner, catch_up_after_three_missed_windows_is_one_pass)
{
        dq_tc_t tc;
        dq_store_t *st;
        const char *x[] = {"plan.interval=4s"};
        enum { W = 4000 }; /* ms: plan.interval */
        int64_t w0, now;
        pid_t p;

        setup(&tc, "plancatch");
        dq_tc_arg(&tc, x[0]);
        st = store_of(&tc);
        candidates(st, "c/0", 3, OLD);
        cr_assert_eq(dq_memory_time(st, &now), DQ_OK);
        w0 = now - now % W;
        /* A pass early in window w0. */
        wait_redis_time(st, w0 + W);
        w0 += W;
        cr_assert_eq(plan_once(&tc, "p1", NULL, 0), 0);
        cr_assert_eq(log_value(&tc, "p1", "stage=pass", "proposed"), 3);
        /* Down for three windows, while more memories come due. */
        candidates(st, "c/1", 3, OLD);
        candidates(st, "c/2", 5, OLD);
        wait_redis_time(st, w0 + 4 * W + 100);
        p = planner_daemon(&tc, "p2");
        /* Its first pass, however slowly it starts (a sanitizer build on
         * two busy cores took over a second), while still inside window
         * w0 + 4: one pass did it all. */
        for (;;) {
                cr_assert_eq(dq_memory_time(st, &now), DQ_OK);
                cr_assert_lt(now, w0 + 5 * W, "no pass in window w0 + 4");
                if (log_count(&tc, "p2", "stage=pass") > 0)
                        break;
                dq_test_sleep_ms(20);
        }
        cr_assert_eq(log_count(&tc, "p2", "stage=pass"), 1);
        cr_assert_eq(log_value(&tc, "p2", "stage=pass", "missed_windows"), 3);
        cr_assert_eq(log_value(&tc, "p2", "stage=pass", "proposed"), 8);
        cr_assert_eq(log_value(&tc, "p2", "stage=pass", "debt"), 0);
        kill(p, SIGTERM);
        cr_assert_eq(dq_tc_wait(p, 30000), 0);
        dq_store_destroy(st);
}

Test(planner, overlapping_passes_dead_letter_nothing)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        const char *x[] = {"plan.interval=1s"};
        pid_t p[2], c;
        int completed, dead, other;

        setup(&tc, "planlap");
        dq_tc_arg(&tc, x[0]);
        st = store_of(&tc);
        for (int s = 0; s < 10; s++) {
                char scope[16];
                snprintf(scope, sizeof(scope), "o/%d", s);
                candidates(st, scope, 5, OLD);
        }
        /* Two daemons, a window a second: passes overlap each other and
         * the consumer, which starts late, while more memories arrive. */
        p[0] = planner_daemon(&tc, "p1");
        p[1] = planner_daemon(&tc, "p2");
        dq_test_sleep_ms(2500);
        for (int s = 0; s < 10; s++) {
                char scope[16];
                snprintf(scope, sizeof(scope), "o/%d", s);
                candidates(st, scope, 8, OLD);
        }
        c = dq_tc_spawn(&tc, "w1");
        dq_test_sleep_ms(3000);
        kill(p[0], SIGTERM);
        kill(p[1], SIGTERM);
        /* A pass a second: the signal may land inside one, which then
         * stops incomplete and exits 1 (nothing lost: the next pass does
         * it). Either way the daemon stops promptly and cleanly. */
        for (int i = 0; i < 2; i++) {
                int rc = dq_tc_wait(p[i], 30000);
                cr_assert(rc == 0 || rc == 1, "planner %d exited %d", i + 1,
                          rc);
        }
        cr_assert_geq(log_count(&tc, "p1", "stage=pass"), 3);
        dq_tc_wait_caught_up(&tc, tc.topic, 60000);
        stop_consumers(&c, 1);

        job_states(r, &tc, &completed, &dead, &other);
        cr_assert_eq(dead, 0, "%d jobs dead-lettered", dead);
        cr_assert_eq(dlq_count(&tc), 0);
        cr_assert_eq(other, 0);
        for (int s = 0; s < 10; s++) {
                char scope[16];
                snprintf(scope, sizeof(scope), "o/%d", s);
                cr_assert_eq(check_compressed(r, &tc, scope, 8, true), 8);
        }
        dq_store_destroy(st);
        redisFree(r);
}

Test(planner, bad_registry_and_index_entries_are_skipped_and_counted)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        redisReply *x;

        setup(&tc, "planbad");
        st = store_of(&tc);
        candidates(st, "good", 2, OLD);
        /* Written by other means: scopes no job can name, an index entry
         * whose memory is gone, a memory without created_at. */
        x = redisCommand(r, "SADD %s:scopes %s %b", tc.ns, "br{ace}",
                         "ctl\x01x", (size_t)5);
        freeReplyObject(x);
        x = redisCommand(r, "ZADD %s:idx:{good}:candidate 5 ghost", tc.ns);
        freeReplyObject(x);
        x = redisCommand(r,
                         "HSET %s:mem:{good}:raw type candidate status "
                         "active",
                         tc.ns);
        freeReplyObject(x);
        cr_assert_eq(plan_once(&tc, "p1", NULL, 0), 0);
        cr_assert_eq(log_value(&tc, "p1", "stage=pass", "bad_scopes"), 2);
        cr_assert_eq(log_value(&tc, "p1", "stage=pass", "skipped"), 1);
        cr_assert_eq(log_value(&tc, "p1", "stage=pass", "proposed"), 2);
        cr_assert_eq(log_count(&tc, "p1", "skipped_gone=1"), 1);
        /* The control character is escaped in the log. */
        cr_assert_eq(log_count(&tc, "p1", "ctl\x01"), 0);
        cr_assert_geq(log_count(&tc, "p1", "ctl\\x01"), 1);
        dq_store_destroy(st);
        redisFree(r);
}

Test(planner, undelivered_jobs_are_reported_and_proposed_again)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        const char *x[] = {"produce.timeout=3s"};
        msgs_t *m = calloc(1, sizeof(*m));
        pid_t c;

        setup(&tc, "planlost");
        st = store_of(&tc);
        candidates(st, "u/0", 3, OLD);
        candidates(st, "u/1", 2, OLD);
        dq_test_services("kafka-stop");
        cr_assert_eq(plan_once(&tc, "p1", x, 1), 1);
        dq_test_services("kafka-start");
        cr_assert_eq(log_value(&tc, "p1", "stage=pass", "not_delivered"), 2);
        cr_assert_geq(log_count(&tc, "p1", "result=not_delivered"), 2);
        cr_assert_eq(plan_once(&tc, "p2", NULL, 0), 0);
        cr_assert_eq(log_value(&tc, "p2", "stage=pass", "duplicates"), 2);
        cr_assert_eq(log_value(&tc, "p2", "stage=pass", "delivered"), 2);
        c = dq_tc_spawn(&tc, "w1");
        dq_tc_wait_caught_up(&tc, tc.topic, 60000);
        stop_consumers(&c, 1);
        read_topic(&tc, m);
        cr_assert_eq(distinct_jobs(m), 2);
        cr_assert_eq(check_compressed(r, &tc, "u/0", 3, true), 3);
        cr_assert_eq(check_compressed(r, &tc, "u/1", 2, true), 2);
        free(m);
        dq_store_destroy(st);
        redisFree(r);
}

Test(planner, triggers_during_a_pass_coalesce_into_one_trailing_pass)
{
        dq_tc_t tc;
        dq_store_t *st;
        char prog[1024], cmd[2048];
        int64_t v;
        pid_t p;

        int port = dq_test_free_port();
        char kv[32], body[65536];

        setup(&tc, "plantrig");
        dq_tc_arg(&tc, "plan.batch=1");
        snprintf(kv, sizeof(kv), "http.port=%d", port);
        dq_tc_arg(&tc, kv);
        st = store_of(&tc);
        for (int s = 0; s < 400; s++) {
                char scope[16];
                snprintf(scope, sizeof(scope), "g/%d", s);
                candidates(st, scope, 1, OLD);
        }
        p = planner_daemon(&tc, "p1");
        /* Three triggers while the first pass runs. */
        wait_published(&tc, 0);
        for (int i = 0; i < 3; i++)
                cr_assert_eq(dq_memory_trigger(st, &v), DQ_OK);
        cr_assert_eq(log_count(&tc, "p1", "stage=pass"), 0,
                     "the pass ended before the triggers: nothing tested");
        /* Not ready before a pass has completed, and it says why. */
        cr_assert_eq(dq_test_http_get(port, "/readyz", body, sizeof(body)),
                     503);
        cr_assert(strstr(body, "no pass yet"), "%s", body);
        for (int i = 0; i < 300 && log_count(&tc, "p1", "stage=pass") < 2; i++)
                dq_test_sleep_ms(100);
        dq_test_sleep_ms(1500);
        cr_assert_eq(log_count(&tc, "p1", "stage=pass"), 2);

        /* decayctl plan run waits for a pass that began after it. */
        snprintf(cmd, sizeof(cmd),
                 "DECAYQ_REDIS_HOST=%s DECAYQ_REDIS_PORT=%d "
                 "DECAYQ_REDIS_NAMESPACE=%s %s plan run --once --timeout 30s",
                 dq_test_redis_host(), dq_test_redis_port(), tc.ns,
                 dq_test_program("ctl/decayctl", prog, sizeof(prog)));
        cr_assert_eq(WEXITSTATUS(system(cmd)), 0);
        cr_assert_eq(log_count(&tc, "p1", "stage=pass"), 3);
        cr_assert_eq(dq_test_http_get(port, "/readyz", body, sizeof(body)),
                     200);
        cr_assert_eq(dq_test_http_get(port, "/metrics", body, sizeof(body)),
                     200);
        cr_assert(strstr(body, "decayq_planner_passes_total{result=\"ok\"} "
                               "3\n"),
                  "%s", body);
        cr_assert(strstr(body, "decayq_planner_memories_proposed_total 400\n"),
                  "%s", body);
        cr_assert(strstr(body, "decayq_planner_debt 0\n"), "%s", body);
        kill(p, SIGTERM);
        cr_assert_eq(dq_tc_wait(p, 60000), 0);
        dq_store_destroy(st);
}

Test(planner, end_to_end_every_due_memory_decays_with_two_consumers)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        pid_t c[2];
        int64_t now = dq_now_ms();

        setup(&tc, "plane2e");
        st = store_of(&tc);
        for (int s = 0; s < 10; s++) {
                char scope[16], id[32];
                snprintf(scope, sizeof(scope), "e/%d", s);
                candidates(st, scope, 5, OLD);
                /* Young ones stay. */
                snprintf(id, sizeof(id), "young%d", s);
                put(st, DQ_REC_MEMORY, scope, id, "candidate", "created_at",
                    now - 60000);
                for (int i = 0; i < 2; i++) {
                        snprintf(id, sizeof(id), "ep%d", i);
                        put(st, DQ_REC_EPISODE, scope, id, "", "created_at",
                            now - OLD);
                }
                put(st, DQ_REC_MEMORY, scope, "rule", "principle", "expires_at",
                    now - OLD);
                put(st, DQ_REC_MEMORY, scope, "law", "principle", "expires_at",
                    now + HOUR);
        }
        cr_assert_eq(plan_once(&tc, "p1", NULL, 0), 0);
        c[0] = dq_tc_spawn(&tc, "w1");
        c[1] = dq_tc_spawn(&tc, "w2");
        dq_tc_wait_caught_up(&tc, tc.topic, 60000);
        stop_consumers(c, 2);
        for (int s = 0; s < 10; s++) {
                char scope[16];
                redisReply *x;

                snprintf(scope, sizeof(scope), "e/%d", s);
                cr_assert_eq(check_compressed(r, &tc, scope, 5, true), 5);
                x = redisCommand(r, "HGET %s:mem:{%s}:young%d status", tc.ns,
                                 scope, s);
                cr_assert_str_eq(x->str, "active");
                freeReplyObject(x);
                for (int i = 0; i < 2; i++) {
                        x = redisCommand(r, "HGET %s:ep:{%s}:ep%d status",
                                         tc.ns, scope, i);
                        cr_assert_str_eq(x->str, "compressed");
                        freeReplyObject(x);
                }
                x = redisCommand(r, "HGET %s:mem:{%s}:rule review_state", tc.ns,
                                 scope);
                cr_assert(x->type == REDIS_REPLY_STRING &&
                              !strcmp(x->str, "open"),
                          "%s: the expired principle has no review", scope);
                freeReplyObject(x);
                x = redisCommand(r, "XLEN %s:reviews:{%s}", tc.ns, scope);
                cr_assert_eq(x->integer, 1);
                freeReplyObject(x);
                x = redisCommand(r, "HGET %s:mem:{%s}:law review_state", tc.ns,
                                 scope);
                cr_assert_eq(x->type, REDIS_REPLY_NIL);
                freeReplyObject(x);
        }
        cr_assert_eq(dlq_count(&tc), 0);
        dq_store_destroy(st);
        redisFree(r);
}

Test(planner, sigterm_stops_between_batches_and_the_next_pass_does_the_rest)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        pid_t p, c;
        char scope[32];
        long long first, second;

        setup(&tc, "planterm");
        dq_tc_arg(&tc, "plan.batch=1");
        st = store_of(&tc);
        for (int s = 0; s < 600; s++) {
                snprintf(scope, sizeof(scope), "t/%d", s);
                candidates(st, scope, 2, OLD);
        }
        p = planner_daemon(&tc, "p1");
        wait_published(&tc, 20);
        kill(p, SIGTERM);
        /* A pass that did not complete: exit 1, and it says so. */
        cr_assert_eq(dq_tc_wait(p, 60000), 1);
        cr_assert_eq(log_count(&tc, "p1", "result=stopped"), 1);
        first = log_value(&tc, "p1", "result=stopped", "delivered");
        cr_assert_gt(first, 0);
        cr_assert_lt(first, 600);
        /* Every job it published was delivered whole and marked. */
        cr_assert_eq(log_value(&tc, "p1", "result=stopped", "jobs"), first);
        cr_assert_eq(plan_once(&tc, "p2", NULL, 0), 0);
        second = log_value(&tc, "p2", "stage=pass", "jobs");
        cr_assert_eq(first + second, 600, "%lld + %lld jobs", first, second);
        cr_assert_eq(log_value(&tc, "p2", "stage=pass", "duplicates"), 0);
        c = dq_tc_spawn(&tc, "w1");
        dq_tc_wait_caught_up(&tc, tc.topic, 120000);
        stop_consumers(&c, 1);
        for (int s = 0; s < 600; s++) {
                snprintf(scope, sizeof(scope), "t/%d", s);
                cr_assert_eq(check_compressed(r, &tc, scope, 2, true), 2);
        }
        dq_store_destroy(st);
        redisFree(r);
}

/* Runs decayctl with the fixture's Redis; returns its exit code and its
 * stdout and stderr in out. */
static int decayctl(const dq_tc_t *tc, const char *args, const char *input,
                    char *out, size_t size)
{
        char prog[1024], cmd[4096];
        FILE *p;
        size_t n = 0;
        int st;

        snprintf(cmd, sizeof(cmd),
                 "%s DECAYQ_REDIS_HOST=%s DECAYQ_REDIS_PORT=%d "
                 "DECAYQ_REDIS_NAMESPACE=%s %s %s 2>&1",
                 input ? input : "", dq_test_redis_host(), dq_test_redis_port(),
                 tc->ns, dq_test_program("ctl/decayctl", prog, sizeof(prog)),
                 args);
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        while (n + 1 < size && fgets(out + n, (int)(size - n), p))
                n += strlen(out + n);
        out[n] = '\0';
        st = pclose(p);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

Test(planner, records_the_planner_cannot_see_are_said_and_reindex_fixes_them)
{
        dq_tc_t tc;
        dq_store_t *st;
        redisContext *r = dq_test_redis();
        char out[8192], in[1024];
        redisReply *x;

        setup(&tc, "planidx");
        st = store_of(&tc);
        /* Loaded without created_at: stored, warned about, not indexed. */
        snprintf(in, sizeof(in),
                 "printf '%%s\\n' '{\"scope\":\"r/1\",\"id\":\"a\",\"type\":"
                 "\"candidate\",\"status\":\"active\",\"claim\":\"x\"}' |");
        cr_assert_eq(decayctl(&tc, "memory load", in, out, sizeof(out)), 0,
                     "%s", out);
        cr_assert(strstr(out, "warning: line 1: stored, but not indexed for "
                              "the planner: no_created_at"),
                  "%s", out);
        cr_assert(strstr(out, "unindexed=1"), "%s", out);
        /* Written behind decayq's back: an old candidate, and an index
         * entry whose memory never existed. */
        x = redisCommand(r,
                         "HSET %s:mem:{r/1}:b type candidate status active "
                         "created_at 1000",
                         tc.ns);
        freeReplyObject(x);
        x = redisCommand(r, "ZADD %s:idx:{r/1}:candidate 5 ghost", tc.ns);
        freeReplyObject(x);
        cr_assert_eq(decayctl(&tc, "memory reindex --scope 'r{1'", NULL, out,
                              sizeof(out)),
                     2);
        cr_assert_eq(decayctl(&tc, "memory reindex --scope r/1 --json", NULL,
                              out, sizeof(out)),
                     0, "%s", out);
        cr_assert(strstr(out, "\"records\":3"), "%s", out);
        cr_assert(strstr(out, "\"added\":1"), "%s", out);
        cr_assert(strstr(out, "\"removed\":1"), "%s", out);
        cr_assert(strstr(out, "\"skipped\":{\"no_created_at\":1}"), "%s", out);
        /* Now the planner sees b, and plan status says so. */
        cr_assert_eq(plan_once(&tc, "p1", NULL, 0), 0);
        cr_assert_eq(log_value(&tc, "p1", "stage=pass", "proposed"), 1);
        cr_assert_eq(decayctl(&tc, "plan status --scope r/1 --json", NULL, out,
                              sizeof(out)),
                     0, "%s", out);
        cr_assert(strstr(out, "\"candidates:proposed\":\"1\""), "%s", out);
        cr_assert(strstr(out, "\"candidates:debt\":\"0\""), "%s", out);
        cr_assert_eq(decayctl(&tc, "plan status", NULL, out, sizeof(out)), 0,
                     "%s", out);
        cr_assert(strstr(out, "registry:    1 scopes"), "%s", out);
        cr_assert_eq(
            decayctl(&tc, "plan status --scope r/2", NULL, out, sizeof(out)), 1,
            "%s", out);
        dq_store_destroy(st);
        redisFree(r);
}
