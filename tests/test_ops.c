/* decay-consumer's HTTP endpoints against a running consumer: /metrics
 * counters move by the right amounts, lag is reported, /readyz turns
 * unready while Redis is away and while draining, and bad requests are
 * refused without touching consumption. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

static dq_store_t *store;
static dq_conf_t *conf;

static void teardown(void)
{
        dq_tc_reap();
        dq_store_destroy(store);
        dq_conf_destroy(conf);
        store = NULL;
        conf = NULL;
}

/* The topics of name, a store on its namespace and a consumer argument
 * for the HTTP listener on port. */
static void ops_fixture(dq_tc_t *tc, const char *name, int port)
{
        char ns[200], kv[64];
        const char *x[] = {ns};

        dq_tc_init(tc, name, 1);
        snprintf(ns, sizeof(ns), "redis.namespace=%s", tc->ns);
        store = dq_test_store("test", x, 1, &conf);
        snprintf(kv, sizeof(kv), "http.port=%d", port);
        dq_tc_arg(tc, kv);
}

/* The value of the series "name{labels}" (labels exactly as rendered, or
 * "" for none) in a scrape; 0 when absent; -1 when absent and want_absent
 * is asked for by the caller through present. */
static double metric(const char *scrape, const char *series, bool *present)
{
        size_t n = strlen(series);
        const char *p = scrape;

        if (present)
                *present = false;
        while ((p = strstr(p, series))) {
                if ((p == scrape || p[-1] == '\n') && p[n] == ' ') {
                        if (present)
                                *present = true;
                        return strtod(p + n + 1, NULL);
                }
                p += n;
        }
        return 0;
}

#define JOBS(outcome, kind, code)                                \
        "decayq_jobs_total{outcome=\"" outcome "\",kind=\"" kind \
        "\",code=\"" code "\"}"
#define CC "candidate_compression"

/* Waits for path to answer status want with a body that contains text
 * (NULL: any body). A condition passing on the way (a rebalance also makes
 * /readyz 503) is not the one waited for. */
static void wait_answer(int port, const char *path, int want, const char *text,
                        long ms, char *body, size_t size)
{
        long long deadline = dq_test_now_ms() + ms;
        int got = 0;

        while (dq_test_now_ms() < deadline) {
                got = dq_test_http_get(port, path, body, size);
                if (got == want && (!text || strstr(body, text)))
                        return;
                dq_test_sleep_ms(100);
        }
        cr_assert_fail("%s: status %d, want %d%s%s within %ld ms (%s)", path,
                       got, want, text ? " with " : "", text ? text : "", ms,
                       body);
}

static void wait_status(int port, const char *path, int want, long ms,
                        char *body, size_t size)
{
        wait_answer(port, path, want, NULL, ms, body, size);
}

static dq_job_t *send_job(rd_kafka_t *pk, const dq_tc_t *tc, const char *src,
                          const char *trace, bool with_memory)
{
        const char *srcs[] = {src};
        dq_job_t *job =
            dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        size_t len;
        char *json;

        if (with_memory)
                dq_test_memory(store, "s/1", src, "candidate", "active", src,
                               1);
        if (trace)
                job->trace_id = strdup(trace);
        json = dq_job_serialize(job, &len);
        dq_tc_send(pk, tc->topic, 0, "s/1", json, len, NULL);
        free(json);
        return job;
}

Test(ops, metrics_lag_and_readiness_follow_the_consumer, .fini = teardown,
     .timeout = 240)
{
        enum { OK = 5, RETRY = 2, SLOW = 12 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        char *a = malloc(1 << 20), *b = malloc(1 << 20);
        dq_job_t *jobs[OK + RETRY + 1 + SLOW + 2];
        size_t nj = 0;
        double max_lag = 0;
        bool present;
        int port = dq_test_free_port();
        pid_t pid;

        cr_assert(a && b);
        ops_fixture(&tc, "ops", port);
        dq_tc_arg(&tc, "stats.interval=200ms");
        dq_tc_arg(&tc, "critical.after=1s");
        dq_tc_arg(&tc, "drain.timeout=20s");
        pid = dq_tc_spawn(&tc, "w");

        wait_status(port, "/healthz", 200, 20000, a, 1 << 20);
        wait_status(port, "/readyz", 200, 30000, a, 1 << 20);
        cr_assert_eq(dq_test_http_get(port, "/metrics", a, 1 << 20), 200);

        /* Counters: 5 complete, 2 retry once then complete, 1 is dead. */
        for (int i = 0; i < OK; i++) {
                char src[16];
                snprintf(src, sizeof(src), "ok%d", i);
                jobs[nj++] = send_job(pk, &tc, src, NULL, true);
        }
        for (int i = 0; i < RETRY; i++) {
                char src[16];
                snprintf(src, sizeof(src), "re%d", i);
                jobs[nj++] = send_job(pk, &tc, src, "fail-until:1", true);
        }
        jobs[nj++] = send_job(pk, &tc, "missing", NULL, false);
        dq_tc_flush(pk);
        for (size_t i = 0; i < nj - 1; i++)
                dq_test_wait_state(store, jobs[i], "completed", 30000);
        dq_test_wait_state(store, jobs[nj - 1], "dead", 30000);
        dq_test_sleep_ms(1500); /* the DLQ copy's delivery, the commit */
        cr_assert_eq(dq_test_http_get(port, "/metrics", b, 1 << 20), 200);
        cr_log_info("scrape after the first jobs:\n%.3000s", b);
#define DELTA(s) (metric(b, s, NULL) - metric(a, s, NULL))
        cr_assert_eq(DELTA(JOBS("completed", CC, "")), OK + RETRY);
        cr_assert_eq(DELTA(JOBS("retried", CC, "decay.debug.injected_failure")),
                     RETRY);
        cr_assert_eq(DELTA(JOBS("dead", CC, "decay.compress.source_missing")),
                     1);
        cr_assert_eq(DELTA(JOBS("claimed", CC, "")), OK + 2 * RETRY + 1);
        /* Every job, and each retry's delay copy; a delay record read
         * before it is due is read again after its pause. */
        cr_assert_geq(DELTA(JOBS("consumed", "", "")), OK + 2 * RETRY + 1);
        cr_assert_geq(DELTA("decayq_commits_total"), 1);
        cr_assert_geq(DELTA("decayq_end_to_end_seconds_count"), OK + RETRY);
        /* Each job record read, and no delay copy: read again after a
         * pause, a record counts again. */
        cr_assert_geq(DELTA("decayq_read_age_seconds_count"), OK + RETRY + 1);
        cr_assert_geq(DELTA("decayq_redis_roundtrip_seconds_count"), 2);
        cr_assert_eq(metric(b, "decayq_assigned_partitions", NULL), 3,
                     "the jobs topic and two tiers, one partition each");
        cr_assert_eq(metric(b, "decayq_draining", NULL), 0);

        /* Lag: while a slow job holds the loop, more jobs arrive; the
         * statistics see the committed offset behind the end. */
        jobs[nj++] = send_job(pk, &tc, "slow", "slow:3000", true);
        dq_tc_flush(pk);
        {
                long long deadline = dq_test_now_ms() + 20000;
                while (dq_test_http_get(port, "/metrics", b, 1 << 20) == 200 &&
                       metric(b, JOBS("claimed", CC, ""), NULL) <
                           OK + 2 * RETRY + 2 &&
                       dq_test_now_ms() < deadline)
                        dq_test_sleep_ms(50);
        }
        for (int i = 0; i < SLOW - 1; i++) {
                char src[16];
                snprintf(src, sizeof(src), "behind%d", i);
                jobs[nj++] = send_job(pk, &tc, src, NULL, true);
        }
        dq_tc_flush(pk);
        while (1) {
                char series[256];
                double lag;
                dq_record_t rec = {0};
                bool done = false;

                cr_assert_eq(dq_test_http_get(port, "/metrics", b, 1 << 20),
                             200);
                snprintf(series, sizeof(series),
                         "decayq_consumer_lag{topic=\"%s\",partition=\"0\"}",
                         tc.topic);
                lag = metric(b, series, &present);
                if (present && lag > max_lag)
                        max_lag = lag;
                if (dq_store_job_get(store, "s/1", jobs[nj - 1]->id, &rec) ==
                    DQ_OK) {
                        const char *s = dq_record_get(&rec, "state");
                        done = s && !strcmp(s, "completed");
                        dq_record_release(&rec);
                }
                if (done)
                        break;
                dq_test_sleep_ms(50);
        }
        /* Statistics reach the metrics when the loop polls, so a peak can
         * fall between scrapes: the series must exist and settle at 0. */
        cr_log_info("largest lag seen on %s[0]: %.0f", tc.topic, max_lag);
        {
                char series[256];
                long long deadline = dq_test_now_ms() + 10000;
                snprintf(series, sizeof(series),
                         "decayq_consumer_lag{topic=\"%s\",partition=\"0\"}",
                         tc.topic);
                do {
                        dq_test_sleep_ms(200);
                        dq_test_http_get(port, "/metrics", b, 1 << 20);
                } while ((metric(b, series, &present) != 0 || !present) &&
                         dq_test_now_ms() < deadline);
                cr_assert(present && metric(b, series, NULL) == 0,
                          "lag goes back to 0 once all is committed");
        }

        /* Bad requests: refused, and consumption goes on. */
        cr_assert_eq(dq_test_http_get(port, "/nope", a, 1 << 20), 404);
        cr_assert_eq(dq_test_http(port, "FOO BAR BAZ QUX\r\n\r\n", NULL, 0),
                     400);
        cr_assert_eq(dq_test_http(port,
                                  "GET /readyz HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Length: abc\r\n\r\n",
                                  NULL, 0),
                     400);
        cr_assert_eq(dq_test_http(port,
                                  "POST /metrics HTTP/1.1\r\nHost: x\r\n"
                                  "Content-Length: 3\r\n\r\nabc",
                                  NULL, 0),
                     405);
        jobs[nj] = send_job(pk, &tc, "after-bad-http", NULL, true);
        dq_tc_flush(pk);
        dq_test_wait_state(store, jobs[nj++], "completed", 20000);

        /* Readiness: unready while Redis is away, ready when it is back. */
        dq_test_services("redis-kill");
        wait_status(port, "/readyz", 503, 15000, a, 1 << 20);
        cr_assert(strstr(a, "redis"), "why: %s", a);
        cr_assert_eq(dq_test_http_get(port, "/healthz", NULL, 0), 200,
                     "waiting for Redis is not a dead process");
        dq_test_services("redis-start");
        wait_status(port, "/readyz", 200, 30000, a, 1 << 20);
        for (int i = 0; i < 50 && dq_store_ping(store) != DQ_OK; i++)
                dq_test_sleep_ms(100); /* the test's own connection */

        /* And while draining: a slow job holds the drain open. */
        jobs[nj] = send_job(pk, &tc, "drain", "slow:4000", true);
        dq_tc_flush(pk);
        {
                long long deadline = dq_test_now_ms() + 20000;
                while (dq_test_http_get(port, "/metrics", b, 1 << 20) == 200 &&
                       metric(b, JOBS("claimed", CC, ""), NULL) <
                           OK + 2 * RETRY + 1 + SLOW + 2 &&
                       dq_test_now_ms() < deadline)
                        dq_test_sleep_ms(50);
        }
        kill(pid, SIGTERM);
        wait_status(port, "/readyz", 503, 3000, a, 1 << 20);
        cr_assert(strstr(a, "draining"), "why: %s", a);
        cr_assert_eq(dq_test_http_get(port, "/metrics", b, 1 << 20), 200);
        cr_assert_eq(metric(b, "decayq_draining", NULL), 1);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0, "drained cleanly");
        dq_test_wait_state(store, jobs[nj++], "completed", 1000);

        for (size_t i = 0; i < nj; i++)
                dq_job_destroy(jobs[i]);
        rd_kafka_destroy(pk);
        free(a);
        free(b);
}

/* Sets topic's max.message.bytes on the broker, at run time. */
static void alter_max_bytes(const char *topic, const char *max)
{
        rd_kafka_t *rk = dq_test_producer();
        rd_kafka_ConfigResource_t *res =
            rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_event_t *ev;

        cr_assert_eq(
            rd_kafka_ConfigResource_set_config(res, "max.message.bytes", max),
            RD_KAFKA_RESP_ERR_NO_ERROR);
        rd_kafka_AlterConfigs(rk, &res, 1, NULL, q);
        ev = rd_kafka_queue_poll(q, 15000);
        cr_assert(ev && !rd_kafka_event_error(ev), "alter configs: %s",
                  ev ? rd_kafka_event_error_string(ev) : "timed out");
        rd_kafka_event_destroy(ev);
        rd_kafka_ConfigResource_destroy(res);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
}

/* H2: a DLQ copy the broker refuses is sent again with backoff, never
 * dropped; meanwhile /readyz is 503 and a metric says why. Once the broker
 * takes it, the partition's commits move on. */
Test(ops, a_copy_that_cannot_be_sent_is_retried_and_shown, .fini = teardown,
     .timeout = 180)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        char *a = malloc(1 << 20), poison[6000];
        int port = dq_test_free_port();
        pid_t pid;

        ops_fixture(&tc, "copyfail", port);
        pid = dq_tc_spawn(&tc, "w");
        wait_status(port, "/readyz", 200, 30000, a, 1 << 20);

        /* Smaller than any copy can be cut to (4 KiB). */
        alter_max_bytes(tc.dlq, "1000");
        memset(poison, 'z', sizeof(poison));
        dq_tc_produce(pk, tc.topic, 0, "k", poison, sizeof(poison));
        wait_status(port, "/readyz", 503, 20000, a, 1 << 20);
        cr_assert(strstr(a, "copies: 1 failed to send"), "%s", a);
        cr_assert_eq(dq_test_http_get(port, "/metrics", a, 1 << 20), 200);
        cr_assert_eq(metric(a, "decayq_copies_failing", NULL), 1);
        dq_test_sleep_ms(2000);
        cr_assert_eq(dq_test_http_get(port, "/readyz", a, 1 << 20), 503,
                     "the failing copy was given up: %s", a);

        alter_max_bytes(tc.dlq, "1064960");
        wait_status(port, "/readyz", 200, 30000, a, 1 << 20);
        dq_tc_wait_caught_up(&tc, tc.topic, 30000);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        free(a);
        rd_kafka_destroy(pk);
}

/* A socket from source address src (127.0.0.N) to the listener, having
 * sent the start of a request and no end to it; -1 when refused. */
static int trickler(const char *src, int port)
{
        struct sockaddr_in a = {.sin_family = AF_INET},
                           s = {.sin_family = AF_INET};
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        static const char start[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n";

        inet_pton(AF_INET, src, &s.sin_addr);
        cr_assert_eq(bind(fd, (struct sockaddr *)&s, sizeof(s)), 0);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)port);
        connect(fd, (struct sockaddr *)&a, sizeof(a));
        dq_test_sleep_ms(1);
        if (send(fd, start, sizeof(start) - 1, MSG_NOSIGNAL) < 0) {
                close(fd);
                return -1;
        }
        return fd;
}

/* H4: 200 connections that trickle a header line a second, from one
 * address and from many, never crowd out the probes of another address,
 * and consumption goes on. */
Test(ops, trickling_connections_never_take_the_probes_down, .fini = teardown,
     .timeout = 120)
{
        enum { SOCKS = 200 };
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        char *a = malloc(1 << 20), src[32];
        int port = dq_test_free_port(), fds[SOCKS];
        long long worst = 0;
        dq_job_t *job;
        pid_t pid;

        ops_fixture(&tc, "flood", port);
        pid = dq_tc_spawn(&tc, "w");
        wait_status(port, "/readyz", 200, 30000, a, 1 << 20);

        /* Half from 127.0.0.2, half spread over 127.0.0.3 to .27. */
        for (int i = 0; i < SOCKS; i++) {
                snprintf(src, sizeof(src), "127.0.0.%d",
                         i < SOCKS / 2 ? 2 : 3 + i % 25);
                fds[i] = trickler(src, port);
        }
        job = send_job(pk, &tc, "m-flood", NULL, true);
        for (int round = 0; round < 8; round++) {
                for (int i = 0; i < SOCKS; i++)
                        if (fds[i] >= 0 &&
                            send(fds[i], "X-T: 1\r\n", 8, MSG_NOSIGNAL) < 0) {
                                close(fds[i]);
                                fds[i] = -1;
                        }
                for (int k = 0; k < 2; k++) {
                        const char *path = k ? "/readyz" : "/healthz";
                        long long t0 = dq_test_now_ms(), took;
                        int st = dq_test_http_get(port, path, a, 1 << 20);
                        took = dq_test_now_ms() - t0;
                        cr_assert_eq(st, 200, "%s: %d during the flood: %s",
                                     path, st, a);
                        cr_assert_lt(took, 1000, "%s took %lld ms", path, took);
                        if (took > worst)
                                worst = took;
                }
                dq_test_sleep_ms(500);
        }
        dq_test_wait_state(store, job, "completed", 15000);
        cr_log_info("flood: slowest probe %lld ms", worst);
        for (int i = 0; i < SOCKS; i++)
                if (fds[i] >= 0)
                        close(fds[i]);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(job);
        free(a);
        rd_kafka_destroy(pk);
}

static void grow_topic(const char *topic, int partitions)
{
        rd_kafka_t *rk = dq_test_producer();
        char errstr[256];
        rd_kafka_NewPartitions_t *np = rd_kafka_NewPartitions_new(
            topic, (size_t)partitions, errstr, sizeof(errstr));
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_event_t *ev;
        const rd_kafka_topic_result_t **res;
        size_t n;

        rd_kafka_CreatePartitions(rk, &np, 1, NULL, q);
        ev = rd_kafka_queue_poll(q, 15000);
        cr_assert(ev && !rd_kafka_event_error(ev), "create partitions: %s",
                  ev ? rd_kafka_event_error_string(ev) : "timed out");
        res = rd_kafka_CreatePartitions_result_topics(
            rd_kafka_event_CreatePartitions_result(ev), &n);
        cr_assert(n == 1 && !rd_kafka_topic_result_error(res[0]), "%s",
                  rd_kafka_topic_result_error_string(res[0]));
        rd_kafka_event_destroy(ev);
        rd_kafka_NewPartitions_destroy(np);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
}

/* H5: the jobs topic grown past the DLQ and tiers at run time: the new
 * partition is paused rather than run into copies that cannot be placed,
 * /readyz says why, its lag is exported; once the others grow it runs. */
Test(ops, a_partition_its_copies_cannot_reach_is_blocked_until_they_can,
     .fini = teardown, .timeout = 180)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        char *a = malloc(1 << 20), series[512], log[512];
        const char *srcs[] = {"m-grow"};
        bool answered = false;
        int port = dq_test_free_port();
        long long deadline;
        dq_record_t rec;
        dq_job_t *job;
        size_t len;
        char *json;
        pid_t pid;
        bool present = false;

        ops_fixture(&tc, "grow", port);
        dq_tc_arg(&tc, "kafka.topic.metadata.refresh.interval.ms=1000");
        dq_tc_arg(&tc, "stats.interval=500ms");
        pid = dq_tc_spawn(&tc, "w");
        wait_status(port, "/readyz", 200, 30000, a, 1 << 20);

        grow_topic(tc.topic, 2);
        dq_test_memory(store, "s/1", "m-grow", "candidate", "active", "m", 1);
        job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        json = dq_job_serialize(job, &len);
        dq_tc_produce(pk, tc.topic, 1, "s/1", json, len);
        free(json);

        wait_answer(port, "/readyz", 503, "partitions: 1 blocked", 30000, a,
                    1 << 20);
        snprintf(series, sizeof(series),
                 "decayq_consumer_lag{topic=\"%s\",partition=\"1\"}", tc.topic);
        deadline = dq_test_now_ms() + 20000;
        while (!present && dq_test_now_ms() < deadline) {
                cr_assert_eq(dq_test_http_get(port, "/metrics", a, 1 << 20),
                             200);
                if (metric(a, series, &present) < 1)
                        present = false;
                dq_test_sleep_ms(300);
        }
        cr_assert(present, "no lag of 1 for the blocked partition: %s", a);
        cr_assert_eq(metric(a, "decayq_partitions_blocked", NULL), 1);
        cr_assert_eq(dq_store_job_get(store, "s/1", job->id, &rec),
                     DQ_ERR_NOT_FOUND, "a blocked partition's job ran");

        /* The blocked partition's lag is looked up every few seconds: with
         * the broker down, no lookup may hold the loop (it answers a
         * signal at once). */
        dq_test_services("kafka-stop");
        dq_test_sleep_ms(8000);
        dq_tc_log_path(&tc, "w", log, sizeof(log));
        kill(pid, SIGUSR1);
        deadline = dq_test_now_ms() + 5000;
        while (!answered && dq_test_now_ms() < deadline) {
                char *text = dq_test_slurp(log);
                answered = strstr(text, "when=signal") != NULL;
                free(text);
                dq_test_sleep_ms(200);
        }
        dq_test_services("kafka-start");
        cr_assert(answered, "the loop did not answer SIGUSR1 within 5 s of "
                            "Kafka being down 8 s");

        grow_topic(tc.dlq, 2);
        grow_topic(tc.tier_topic[0], 2);
        grow_topic(tc.tier_topic[1], 2);
        dq_test_wait_state(store, job, "completed", 60000);
        wait_status(port, "/readyz", 200, 30000, a, 1 << 20);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(job);
        free(a);
        rd_kafka_destroy(pk);
}

static void thaw_teardown(void)
{
        dq_test_services("kafka-thaw");
        teardown();
}

/* The worker's log holds text. */
static bool log_says(const dq_tc_t *tc, const char *worker, const char *text)
{
        char path[512];
        char *log;
        bool found;

        dq_tc_log_path(tc, worker, path, sizeof(path));
        log = dq_test_slurp(path);
        found = strstr(log, text) != NULL;
        free(log);
        return found;
}

/* H6: a broker that stops answering, its connections open (frozen), makes
 * /readyz 503 within seconds, and holds neither the drain nor a second
 * signal. The drain's commit and the leave
 * are bounded (10 s each), the exit says so (1), and the unanswered commit
 * loses nothing: what it did not commit is read again and settled as a
 * duplicate, each effect applied once. librdkafka's synchronous commit and
 * close wait for ever here. */
Test(ops_frozen, a_broker_that_stops_answering_never_holds_the_drain,
     .fini = thaw_teardown, .timeout = 240)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        int port = dq_test_free_port();
        long long t0, took;
        dq_job_t *first, *second;
        char body[1 << 16];
        pid_t pid;
        int rc;

        ops_fixture(&tc, "frozen", port);
        /* The drain's commit is the one that is due; a member that could
         * not leave is noticed within 6 s. */
        dq_tc_arg(&tc, "commit.interval=1h");
        dq_tc_arg(&tc, "drain.timeout=2s");
        dq_tc_arg(&tc, "kafka.session.timeout.ms=6000");
        dq_tc_arg(&tc, "stats.interval=1s");
        pid = dq_tc_spawn(&tc, "w1");
        first = send_job(pk, &tc, "m-frozen-1", NULL, true);
        dq_test_wait_state(store, first, "completed", 30000);
        dq_test_sleep_ms(500); /* its offset is stored once settled */

        dq_test_services("kafka-freeze");
        t0 = dq_test_now_ms();
        kill(pid, SIGTERM);
        rc = dq_tc_wait(pid, 60000);
        took = dq_test_now_ms() - t0;
        dq_test_services("kafka-thaw");
        cr_assert_eq(rc, 1,
                     "exit %d: an unanswered commit is not a clean "
                     "drain",
                     rc);
        cr_assert_lt(took, 30000, "the drain took %lld ms", took);
        cr_assert(log_says(&tc, "w1", "stage=commit result=unanswered"));
        cr_assert(log_says(&tc, "w1", "stage=drain state=leave_unfinished"));
        cr_log_info("frozen broker: the drain ended after %lld ms", took);

        /* The commit sent before the freeze may land once the broker
         * thaws; if not, the next owner reads the first job again as a
         * duplicate. Either way its attempt is not spent again. A second
         * signal, with the broker frozen in the drain's commit, stops the
         * drain at once. */
        pid = dq_tc_spawn(&tc, "w2");
        second = send_job(pk, &tc, "m-frozen-2", NULL, true);
        dq_test_wait_state(store, second, "completed", 60000);
        dq_test_sleep_ms(500);
        cr_assert_eq(dq_test_job_int(store, first, "attempts"), 1);
        dq_test_services("kafka-freeze");
        kill(pid, SIGTERM);
        dq_test_sleep_ms(1500);
        t0 = dq_test_now_ms();
        kill(pid, SIGTERM);
        rc = dq_tc_wait(pid, 30000);
        took = dq_test_now_ms() - t0;
        dq_test_services("kafka-thaw");
        cr_assert_eq(rc, 1, "exit %d after a second signal", rc);
        cr_assert_lt(took, 4000, "%lld ms after the second signal", took);
        cr_assert(log_says(&tc, "w2", "reason=second_signal"));

        /* Nothing was lost: a third owner commits both messages, the
         * effects applied once. */
        pid = dq_tc_spawn(&tc, "w3");
        wait_status(port, "/readyz", 200, 60000, body, sizeof(body));
        dq_tc_wait_caught_up(&tc, tc.topic, 60000);
        cr_assert_eq(dq_test_job_int(store, first, "attempts"), 1);
        cr_assert_eq(dq_test_job_int(store, second, "attempts"), 1);
        dq_test_wait_state(store, first, "completed", 1000);
        dq_test_wait_state(store, second, "completed", 1000);

        /* Frozen, the broker still counts as connected until librdkafka's
         * socket.timeout.ms (60 s): readiness says sooner that it does not
         * answer, and comes back once it does. */
        dq_test_services("kafka-freeze");
        t0 = dq_test_now_ms();
        wait_answer(port, "/readyz", 503, "not answering", 30000, body,
                    sizeof(body));
        took = dq_test_now_ms() - t0;
        cr_assert_eq(dq_test_http_get(port, "/metrics", body, sizeof(body)),
                     200);
        cr_assert_eq(metric(body, "decayq_kafka_brokers_silent", NULL), 1);
        dq_test_services("kafka-thaw");
        cr_log_info("frozen broker: /readyz 503 after %lld ms", took);
        wait_status(port, "/readyz", 200, 60000, body, sizeof(body));
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        cr_assert(log_says(&tc, "w3", "stage=drain state=left"));
        dq_tc_flush(pk);
        dq_job_destroy(first);
        dq_job_destroy(second);
        rd_kafka_destroy(pk);
}
