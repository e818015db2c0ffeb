/* decayctl against the real broker and Redis: DLQ filters, the dry run,
 * replay (state-aware, loop-guarded, rate-limited, resumable after kill -9,
 * canary), job cancel with a running consumer, memory load and get, and
 * bad input. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dq_envelope.h"
#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_test_store.h"
#include "dq_time.h"
#include "banned.h"

#define DECAYCTL DQ_BINARY_DIR "/ctl/decayctl"

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

/*
 * Running decayctl
 */

typedef struct run_s {
        int rc;
        char out[1 << 18];
        char err[1 << 14];
} run_t;

/* Starts decayctl with the fixture's settings then args (NULL-terminated);
 * stdout and stderr go to files under the fixture's folder. */
static pid_t ctl_spawn(const dq_tc_t *tc, const char *tag, char *const *args)
{
        char *argv[2 * DQ_TC_MAX_ARGS + 64], out[512], err[512];
        int argc = 0, i;
        pid_t pid;

        argv[argc++] = DECAYCTL;
        for (i = 0; args[i]; i++)
                argv[argc++] = args[i];
        for (int j = 0; tc && j < tc->arg_cnt; j++) {
                argv[argc++] = "-X";
                argv[argc++] = tc->args[j];
        }
        argv[argc] = NULL;
        snprintf(out, sizeof(out), "%s/%s.out", tc ? tc->dir : "/tmp", tag);
        snprintf(err, sizeof(err), "%s/%s.err", tc ? tc->dir : "/tmp", tag);
        pid = fork();
        cr_assert(pid >= 0);
        if (pid == 0) {
                int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                int e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                dup2(o, 1);
                dup2(e, 2);
                execv(argv[0], argv);
                _exit(127);
        }
        return pid;
}

static void slurp(const char *path, char *buf, size_t size)
{
        FILE *fp = fopen(path, "r");
        size_t n = 0;

        buf[0] = '\0';
        if (!fp)
                return;
        n = fread(buf, 1, size - 1, fp);
        buf[n] = '\0';
        fclose(fp);
}

static void ctl_collect(const dq_tc_t *tc, const char *tag, pid_t pid, run_t *r,
                        long timeout_ms)
{
        char path[512];

        r->rc = dq_tc_wait(pid, timeout_ms);
        snprintf(path, sizeof(path), "%s/%s.out", tc ? tc->dir : "/tmp", tag);
        slurp(path, r->out, sizeof(r->out));
        snprintf(path, sizeof(path), "%s/%s.err", tc ? tc->dir : "/tmp", tag);
        slurp(path, r->err, sizeof(r->err));
}

/* Runs decayctl with args (a space-separated list, no quoting needed). */
static void ctl(const dq_tc_t *tc, run_t *r, const char *fmt, ...)
{
        static int seq;
        char line[2048], *args[64], *save = NULL, tag[32];
        va_list ap;
        int n = 0;

        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        for (char *t = strtok_r(line, " ", &save); t && n < 63;
             t = strtok_r(NULL, " ", &save))
                args[n++] = t;
        args[n] = NULL;
        snprintf(tag, sizeof(tag), "ctl-%d-%d", (int)getpid(), seq++);
        ctl_collect(tc, tag, ctl_spawn(tc, tag, args), r, 120000);
}

static json_t *json_out(const run_t *r)
{
        json_error_t e;
        json_t *v = json_loads(r->out, JSON_DISABLE_EOF_CHECK, &e);
        cr_assert(v, "not JSON (%s): %s\nstderr: %s", e.text, r->out, r->err);
        return v;
}

static long long jint(json_t *o, const char *path1, const char *path2)
{
        json_t *v = json_object_get(o, path1);
        if (path2)
                v = json_object_get(v, path2);
        return v ? json_integer_value(v) : 0;
}

/*
 * A DLQ written as the consumer writes it
 */

typedef struct rec_s {
        char job[32];
        char scope[32];
        const char *kind;
        const char *code;
        const char *cls;
        int replay_count;
        int64_t ts;
        int32_t partition;
        int64_t offset; /* in the DLQ, after the flush */
        int64_t orig_offset;
        const char *state; /* its Redis state; NULL: none */
        bool poison;
} rec_t;

static void put_dlq(rd_kafka_t *pk, const dq_tc_t *tc, rec_t *r)
{
        rd_kafka_headers_t *h = rd_kafka_headers_new(12);
        char num[3][32], when[32], *json = NULL;
        size_t len = 0;

        if (r->poison) {
                json = strdup("{\"schema\":1, not json");
                len = strlen(json);
        } else {
                const char *srcs[] = {"gone"};
                dq_job_t *job =
                    dq_test_job(dq_kind_parse(r->kind), r->scope, srcs, 1);
                if (*r->job) /* another record of the same job */
                        memcpy(job->id, r->job, sizeof(job->id));
                snprintf(r->job, sizeof(r->job), "%s", job->id);
                json = dq_job_serialize(job, &len);
                dq_job_destroy(job);
        }
        snprintf(num[0], sizeof(num[0]), "%d", (int)r->partition);
        snprintf(num[1], sizeof(num[1]), "%lld", (long long)r->orig_offset);
        snprintf(num[2], sizeof(num[2]), "%d", r->replay_count);
        rd_kafka_header_add(h, DQ_HDR_ATTEMPTS, -1, "4", -1);
        rd_kafka_header_add(h, DQ_HDR_ORIGINAL_TOPIC, -1, tc->topic, -1);
        rd_kafka_header_add(h, DQ_HDR_ORIGINAL_PARTITION, -1, num[0], -1);
        rd_kafka_header_add(h, DQ_HDR_ORIGINAL_OFFSET, -1, num[1], -1);
        rd_kafka_header_add(
            h, DQ_HDR_ORIGINAL_TIMESTAMP, -1,
            dq_time_format_rfc3339(r->ts - 1000, when, sizeof(when)), -1);
        rd_kafka_header_add(h, DQ_HDR_ERROR_CLASS, -1, r->cls, -1);
        rd_kafka_header_add(h, DQ_HDR_ERROR_CODE, -1, r->code, -1);
        rd_kafka_header_add(h, DQ_HDR_ERROR_MESSAGE, -1, "it failed", -1);
        rd_kafka_header_add(h, DQ_HDR_REPLAY_COUNT, -1, num[2], -1);
        cr_assert_eq(
            rd_kafka_producev(
                pk, RD_KAFKA_V_TOPIC(tc->dlq),
                RD_KAFKA_V_PARTITION(r->partition),
                RD_KAFKA_V_KEY(r->scope, strlen(r->scope)),
                RD_KAFKA_V_VALUE(json, len), RD_KAFKA_V_HEADERS(h),
                RD_KAFKA_V_TIMESTAMP(r->ts), RD_KAFKA_V_OPAQUE(&r->offset),
                RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
        free(json);
}

/* Sets a job's Redis state as the consumer would have left it. */
static void set_state(const dq_tc_t *tc, const rec_t *r)
{
        redisContext *c = dq_test_redis();
        redisReply *rep =
            redisCommand(c, "HSET %s:job:{%s}:%s state %s attempts 4 epoch 4",
                         tc->ns, r->scope, r->job, r->state);
        cr_assert(rep && rep->type == REDIS_REPLY_INTEGER);
        freeReplyObject(rep);
        redisFree(c);
}

static char *hget(const dq_tc_t *tc, const rec_t *r, const char *field)
{
        redisContext *c = dq_test_redis();
        redisReply *rep = redisCommand(c, "HGET %s:job:{%s}:%s %s", tc->ns,
                                       r->scope, r->job, field);
        char *v =
            strdup(rep && rep->type == REDIS_REPLY_STRING ? rep->str : "");
        freeReplyObject(rep);
        redisFree(c);
        return v;
}

/* Writes n records; fn fills each (i, record). */
static void write_dlq(const dq_tc_t *tc, rec_t *recs, size_t n)
{
        rd_kafka_t *pk = dq_tc_producer();
        for (size_t i = 0; i < n; i++)
                put_dlq(pk, tc, &recs[i]);
        dq_tc_flush(pk);
        rd_kafka_destroy(pk);
        for (size_t i = 0; i < n; i++) {
                cr_assert_geq(recs[i].offset, 0, "DLQ record %zu not written",
                              i);
                if (recs[i].state)
                        set_state(tc, &recs[i]);
        }
}

static const char *const kinds[] = {
    "candidate_compression", "episode_compression", "expired_principle_review"};
static const char *const codes[] = {"decay.compress.source_missing",
                                    "decay.compress.source_inactive",
                                    "decay.worker.crash_loop"};
static const char *const classes[] = {"fatal", "fatal", "crash_loop"};

/* The standard mix: n jobs over 4 scopes, 3 kinds and 3 codes, a third of
 * them 3 days old; all dead in Redis. */
static void mix(rec_t *recs, size_t n, int partitions)
{
        int64_t now = dq_now_ms();

        memset(recs, 0, n * sizeof(*recs));
        for (size_t i = 0; i < n; i++) {
                rec_t *r = &recs[i];
                snprintf(r->scope, sizeof(r->scope), "s/%zu", i % 4);
                r->kind = kinds[i % 3];
                r->code = codes[(i / 3) % 3];
                r->cls = classes[(i / 3) % 3];
                r->ts = i % 3 == 2 ? now - 3 * 86400000LL : now - 1000;
                r->partition = (int32_t)(i % 4 % partitions);
                r->orig_offset = (int64_t)i;
                r->state = "dead";
        }
}

/* Reads the jobs topic (read_committed); counts records per
 * decayq-replayed-from value in *froms (a JSON object), and returns the
 * total. Timestamps of the first and last go to *first, *last. */
static long read_main(const dq_tc_t *tc, json_t *froms, int64_t *first,
                      int64_t *last)
{
        char group[200];
        rd_kafka_t *ck;
        rd_kafka_topic_partition_list_t *l;
        long n = 0, idle = 0;

        dq_test_unique(group, sizeof(group), "ctl-reader");
        ck = dq_test_consumer(group);
        l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, tc->topic, RD_KAFKA_PARTITION_UA);
        cr_assert_eq(rd_kafka_subscribe(ck, l), 0);
        rd_kafka_topic_partition_list_destroy(l);
        if (first)
                *first = INT64_MAX, *last = 0;
        while (idle < 4000) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(ck, 200);
                rd_kafka_headers_t *h = NULL;
                const void *v;
                size_t len;
                rd_kafka_timestamp_type_t tt;
                int64_t ts;

                if (!m) {
                        idle += 200;
                        continue;
                }
                if (m->err) {
                        rd_kafka_message_destroy(m);
                        continue;
                }
                idle = 0;
                n++;
                ts = rd_kafka_message_timestamp(m, &tt);
                if (first && ts < *first)
                        *first = ts;
                if (first && ts > *last)
                        *last = ts;
                if (!rd_kafka_message_headers(m, &h) &&
                    !rd_kafka_header_get_last(h, DQ_HDR_REPLAYED_FROM, &v,
                                              &len)) {
                        char key[300];
                        snprintf(key, sizeof(key), "%.*s", (int)len,
                                 (const char *)v);
                        json_object_set_new(
                            froms, key,
                            json_integer(json_integer_value(
                                             json_object_get(froms, key)) +
                                         1));
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(ck);
        rd_kafka_destroy(ck);
        return n;
}

/*
 * Bad input
 */

Test(ctl_input, bad_input_is_a_usage_error_with_exit_2)
{
        static const char *const bad[] = {
            "dlq list --bogus",
            "dlq list --since yesterday",
            "dlq list --class broken",
            "dlq list --kind nope",
            "dlq list --code BAD!",
            "dlq list --limit 0",
            "dlq list --job 123",
            "dlq replay --rate fast",
            "dlq replay --max-replays 0",
            "dlq replay --since 1h --until 2h",
            "dlq inspect nothing",
            "dlq inspect 1:x",
            "dlq list --execute",
            "job status 01JD3Q6V2R8YB6K3ZKQ9T1M4XH",
            "job status not-an-id --scope s",
            "job cancel",
            "memory get x",
            "dlq frobnicate",
            "nothing",
        };
        run_t *r = malloc(sizeof(*r));

        for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
                ctl(NULL, r, "%s", bad[i]);
                cr_expect_eq(r->rc, 2, "'decayctl %s': exit %d, want 2", bad[i],
                             r->rc);
                cr_expect(strstr(r->err, "error: ") &&
                              strstr(r->err, "usage: decayctl"),
                          "'decayctl %s' must say what is wrong and show "
                          "usage; said: %s",
                          bad[i], r->err);
        }
        ctl(NULL, r, "dlq replay --help");
        cr_assert_eq(r->rc, 0);
        cr_assert(strstr(r->out, "--max-replays"));
        free(r);
}

/*
 * Reading the DLQ
 */

Test(ctl, filters_select_exactly_the_right_records, .fini = teardown,
     .timeout = 120)
{
        enum { N = 24 };
        dq_tc_t tc;
        rec_t recs[N + 1];
        run_t *r = malloc(sizeof(*r));
        struct {
                const char *args;
                bool (*want)(const rec_t *);
        } cases[] = {
            {"--code decay.compress.source_inactive", NULL},
            {"--class crash_loop", NULL},
            {"--kind episode_compression", NULL},
            {"--scope s/1", NULL},
            {"--since 1d", NULL},
            {"--until 1d", NULL},
            {"--since 1d --kind candidate_compression --scope s/0", NULL},
        };

        dq_tc_init(&tc, "ctlfilter", 2);
        mix(recs, N, 2);
        /* One poison record too: no job, its key for a scope. */
        memset(&recs[N], 0, sizeof(recs[N]));
        recs[N].poison = true;
        snprintf(recs[N].scope, sizeof(recs[N].scope), "s/1");
        recs[N].kind = "";
        recs[N].code = "decay.job.malformed_json";
        recs[N].cls = "fatal";
        recs[N].ts = dq_now_ms();
        write_dlq(&tc, recs, N + 1);

        for (size_t c = 0; c < sizeof(cases) / sizeof(*cases); c++) {
                json_t *seen = json_object();
                char line[1024], *save = NULL, *tok;
                long want = 0, got = 0;
                int64_t day = dq_now_ms() - 86400000LL;

                ctl(&tc, r, "dlq list --json %s", cases[c].args);
                cr_assert_eq(r->rc, 0, "%s: %s", cases[c].args, r->err);
                for (tok = strtok_r(r->out, "\n", &save); tok;
                     tok = strtok_r(NULL, "\n", &save)) {
                        json_t *o = json_loads(tok, 0, NULL);
                        cr_assert(o, "not JSON: %s", tok);
                        snprintf(line, sizeof(line), "%lld:%lld",
                                 jint(o, "partition", NULL),
                                 jint(o, "offset", NULL));
                        json_object_set_new(seen, line, json_true());
                        json_decref(o);
                        got++;
                }
                for (size_t i = 0; i <= N; i++) {
                        const rec_t *x = &recs[i];
                        bool m = true;
                        const char *a = cases[c].args;
                        if (strstr(a, "--code "))
                                m &= !strcmp(x->code,
                                             "decay.compress.source_inactive");
                        if (strstr(a, "--class "))
                                m &= !strcmp(x->cls, "crash_loop");
                        if (strstr(a, "--kind episode"))
                                m &= !strcmp(x->kind, "episode_compression");
                        if (strstr(a, "--kind candidate"))
                                m &= !strcmp(x->kind, "candidate_compression");
                        if (strstr(a, "--scope s/1"))
                                m &= !strcmp(x->scope, "s/1");
                        if (strstr(a, "--scope s/0"))
                                m &= !strcmp(x->scope, "s/0");
                        if (strstr(a, "--since"))
                                m &= x->ts >= day;
                        if (strstr(a, "--until"))
                                m &= x->ts < day;
                        snprintf(line, sizeof(line), "%d:%lld",
                                 (int)x->partition, (long long)x->offset);
                        cr_expect_eq(m, json_object_get(seen, line) != NULL,
                                     "%s: record %s (%s %s %s %s) %s",
                                     cases[c].args, line, x->scope, x->kind,
                                     x->code, x->cls,
                                     m ? "missing" : "selected wrongly");
                        want += m;
                }
                cr_assert_eq(got, want, "%s: %ld listed, %ld expected",
                             cases[c].args, got, want);
                cr_assert_gt(want, 0,
                             "a case that selects nothing proves "
                             "little");
                json_decref(seen);
        }

        /* --job and --limit. */
        ctl(&tc, r, "dlq list --json --job %s", recs[5].job);
        cr_assert_eq(r->rc, 0);
        cr_assert(strstr(r->out, recs[5].job));
        cr_assert_eq(strchr(r->out, '\n') - r->out + 1, (long)strlen(r->out),
                     "one record");
        ctl(&tc, r, "dlq list --json --limit 3");
        cr_assert_eq(r->rc, 0);
        {
                int lines = 0;
                for (char *p = r->out; *p; p++)
                        lines += *p == '\n';
                cr_assert_eq(lines, 3);
        }

        /* stats agree. */
        ctl(&tc, r, "dlq stats --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        {
                json_t *s = json_out(r);
                cr_assert_eq(jint(s, "records", NULL), N + 1);
                cr_assert_eq(jint(s, "not_a_job", NULL), 1);
                cr_assert_eq(
                    jint(s, "by_code", "decay.compress.source_missing"), 9);
                cr_assert_eq(jint(s, "by_kind", "episode_compression"), 8);
                cr_assert_eq(jint(s, "by_scope", "s/1"), 7);
                cr_assert_eq(jint(s, "age", "1d-7d"), 8);
                json_decref(s);
        }

        /* inspect by job and by position; the poison's bytes survive. */
        ctl(&tc, r, "dlq inspect %s", recs[7].job);
        cr_assert_eq(r->rc, 0);
        cr_assert(strstr(r->out, DQ_HDR_ERROR_CODE));
        cr_assert(strstr(r->out, recs[7].job));
        ctl(&tc, r, "dlq inspect --json %d:%lld", (int)recs[N].partition,
            (long long)recs[N].offset);
        cr_assert_eq(r->rc, 0, "%s", r->err);
        {
                json_t *o = json_out(r);
                cr_assert_str_eq(
                    json_string_value(json_object_get(o, "payload")),
                    "{\"schema\":1, not json");
                cr_assert_str_eq(
                    json_string_value(json_object_get(o, "not_a_job")),
                    "decay.job.malformed_json");
                json_decref(o);
        }
        ctl(&tc, r, "dlq inspect 01JD3Q6V2R8YB6K3ZKQ9T1M4XH");
        cr_assert_eq(r->rc, 1, "no such job: exit 1");
        ctl(&tc, r, "dlq inspect 0:999");
        cr_assert_eq(r->rc, 1, "no such offset: exit 1");
        free(r);
}

/*
 * Replay
 */

static void redis_dump(const dq_tc_t *tc, char *buf, size_t size)
{
        redisContext *c = dq_test_redis();
        redisReply *keys = redisCommand(c, "KEYS %s:*", tc->ns);
        size_t n = 0;

        cr_assert(keys && keys->type == REDIS_REPLY_ARRAY);
        buf[0] = '\0';
        for (size_t i = 0; i < keys->elements; i++) {
                redisReply *d =
                    redisCommand(c, "DUMP %s", keys->element[i]->str);
                int w = snprintf(
                    buf + n, size - n, "%s=%zu;", keys->element[i]->str,
                    d && d->type == REDIS_REPLY_STRING ? d->len : 0);
                if (w > 0 && (size_t)w < size - n)
                        n += (size_t)w;
                freeReplyObject(d);
        }
        freeReplyObject(keys);
        redisFree(c);
}

static int64_t high_watermark(const char *topic, int parts)
{
        rd_kafka_t *rk = dq_test_producer();
        int64_t sum = 0;
        for (int p = 0; p < parts; p++) {
                int64_t lo, hi;
                cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo,
                                                              &hi, 10000),
                             0);
                sum += hi;
        }
        rd_kafka_destroy(rk);
        return sum;
}

Test(ctl, replay_is_state_aware_loop_guarded_and_audited, .fini = teardown,
     .timeout = 180)
{
        enum { N = 12 };
        dq_tc_t tc;
        rec_t recs[N + 3];
        run_t *r = malloc(sizeof(*r));
        char before[8192], after[8192], *v;
        json_t *out, *froms;
        long replayed;

        dq_tc_init(&tc, "ctlreplay", 2);
        mix(recs, N, 2);
        recs[1].state = "completed";
        recs[2].state = "cancelled";
        recs[3].replay_count = 3; /* at the loop guard */
        recs[4].replay_count = 2; /* one more allowed */
        recs[5].state = NULL;     /* state expired: replayable */
        write_dlq(&tc, recs, N);
        /* Then: an extra copy of record 6 (the same original message), a
         * poison, and a second dead letter of job 7 from another original
         * while job 7 runs again. */
        recs[N] = recs[6];
        recs[N].ts = dq_now_ms();
        memset(&recs[N + 1], 0, sizeof(rec_t));
        recs[N + 1].poison = true;
        snprintf(recs[N + 1].scope, sizeof(recs[N + 1].scope), "s/9");
        recs[N + 1].kind = "";
        recs[N + 1].code = "decay.job.malformed_json";
        recs[N + 1].cls = "fatal";
        recs[N + 1].ts = dq_now_ms();
        recs[N + 1].orig_offset = 100;
        recs[N + 2] = recs[7];
        recs[N + 2].state = "in_progress";
        recs[N + 2].orig_offset = 101;
        write_dlq(&tc, &recs[N], 3);

        /* Dry run: counts, and nothing changes anywhere. */
        redis_dump(&tc, before, sizeof(before));
        ctl(&tc, r, "dlq replay --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        out = json_out(r);
        cr_assert_str_eq(json_string_value(json_object_get(out, "mode")),
                         "dry_run");
        /* 15 records: 12 jobs, a copy, a poison, a second one of job 7.
         * Skipped: completed 1, cancelled 1, in_progress 2 (job 7, both
         * records), extra copy 1. Refused: max_replays 1, not_a_job 1.
         * 8 would replay. */
        cr_assert_eq(jint(out, "matched", NULL), N + 3);
        cr_assert_eq(jint(out, "would_replay", NULL), 8, "%s", r->out);
        cr_assert_eq(jint(out, "skipped", "completed"), 1);
        cr_assert_eq(jint(out, "skipped", "cancelled"), 1);
        cr_assert_eq(jint(out, "skipped", "in_progress"), 2);
        cr_assert_eq(jint(out, "skipped", "extra_copy"), 1);
        cr_assert_eq(jint(out, "refused", "max_replays"), 1);
        cr_assert_eq(jint(out, "refused", "not_a_job"), 1);
        json_decref(out);
        redis_dump(&tc, after, sizeof(after));
        cr_assert_str_eq(before, after, "a dry run changed Redis");
        cr_assert_eq(high_watermark(tc.topic, 2), 0,
                     "a dry run published to the jobs topic");
        ctl(&tc, r, "dlq replay --json");
        out = json_out(r);
        cr_assert_eq(jint(out, "read", NULL), N + 3,
                     "a dry run must commit no progress");
        json_decref(out);

        /* Execute. */
        ctl(&tc, r, "dlq replay --execute --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        out = json_out(r);
        cr_assert_eq(jint(out, "replayed", NULL), 8, "%s", r->out);
        cr_assert(json_object_get(out, "audit_id"));
        json_decref(out);

        froms = json_object();
        replayed = read_main(&tc, froms, NULL, NULL);
        cr_assert_eq(replayed, 8);
        for (size_t i = 0; i < N; i++) {
                char from[300];
                bool want = i != 1 && i != 2 && i != 3 && i != 7;
                snprintf(from, sizeof(from), "%s/%d/%lld", tc.dlq,
                         (int)recs[i].partition, (long long)recs[i].offset);
                cr_assert_eq(json_integer_value(json_object_get(froms, from)),
                             want ? 1 : 0,
                             "record %zu (%s) replayed %lld "
                             "times",
                             i, from,
                             json_integer_value(json_object_get(froms, from)));
                if (!want)
                        continue;
                v = hget(&tc, &recs[i], "state");
                cr_assert_str_eq(v, "pending");
                free(v);
                v = hget(&tc, &recs[i], "attempts");
                cr_assert_str_eq(v, "0", "attempts reset");
                free(v);
                if (recs[i].state) {
                        v = hget(&tc, &recs[i], "epoch");
                        cr_assert_str_eq(v, "5", "a new epoch");
                        free(v);
                }
        }
        json_decref(froms);
        v = hget(&tc, &recs[1], "state");
        cr_assert_str_eq(v, "completed", "a completed job stays completed");
        free(v);

        /* The audit stream has the run's start and finish. */
        {
                redisContext *c = dq_test_redis();
                redisReply *a = redisCommand(c, "XRANGE %s:audit - +", tc.ns);
                cr_assert(a && a->type == REDIS_REPLY_ARRAY);
                cr_assert_eq(a->elements, 2, "start and finish entries");
                bool found = false;
                redisReply *f = a->element[1]->element[1];
                for (size_t i = 0; i + 1 < f->elements; i += 2)
                        if (!strcmp(f->element[i]->str, "counts"))
                                found = strstr(f->element[i + 1]->str,
                                               "\"replayed\":8") != NULL;
                cr_assert(found, "the finish entry counts the replay");
                freeReplyObject(a);
                redisFree(c);
        }

        /* The same command again: nothing is left to replay. */
        ctl(&tc, r, "dlq replay --execute --json");
        cr_assert_eq(r->rc, 0);
        out = json_out(r);
        cr_assert_eq(jint(out, "read", NULL), 0, "%s", r->out);
        cr_assert_eq(jint(out, "replayed", NULL), 0);
        json_decref(out);
        froms = json_object();
        cr_assert_eq(read_main(&tc, froms, NULL, NULL), 8,
                     "a second run republished something");
        json_decref(froms);
        free(r);
}

Test(ctl, rate_limit_holds_within_20_percent, .fini = teardown, .timeout = 120)
{
        enum { N = 41 };
        dq_tc_t tc;
        rec_t recs[N];
        run_t *r = malloc(sizeof(*r));
        json_t *froms = json_object();
        int64_t first, last;
        double span, want = (N - 1) / 20.0;

        dq_tc_init(&tc, "ctlrate", 2);
        mix(recs, N, 2);
        write_dlq(&tc, recs, N);
        ctl(&tc, r, "dlq replay --execute --rate 20/s");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert_eq(read_main(&tc, froms, &first, &last), N);
        span = (double)(last - first) / 1000.0;
        cr_log_info("%d records at 20/s: %.2f s from first to last (ideal "
                    "%.2f s)",
                    N, span, want);
        cr_assert(span >= want * 0.8 && span <= want * 1.2,
                  "%d records at 20/s took %.2f s; want %.2f s +-20%%", N, span,
                  want);
        json_decref(froms);
        free(r);
}

Test(ctl, replay_killed_midway_resumes_exactly_once, .fini = teardown,
     .timeout = 180)
{
        enum { N = 300 };
        dq_tc_t tc;
        static rec_t recs[N];
        run_t *r = malloc(sizeof(*r));
        char *args[] = {"dlq", "replay", "--execute", "--rate", "150/s", NULL};
        json_t *froms = json_object();
        const char *key;
        json_t *cnt;
        long total, once = 0;
        int64_t mid;
        pid_t pid;

        dq_tc_init(&tc, "ctlkill", 2);
        mix(recs, N, 2);
        write_dlq(&tc, recs, N);

        pid = ctl_spawn(&tc, "killed", args);
        dq_test_sleep_ms(1600);
        kill(pid, SIGKILL);
        cr_assert_eq(dq_tc_wait(pid, 10000), 128 + SIGKILL);
        mid = high_watermark(tc.topic, 2);
        cr_log_info("killed after %lld records were written (committed or "
                    "not)",
                    (long long)mid);
        cr_assert(mid > 0 && mid < N, "the kill must land midway (%lld)",
                  (long long)mid);

        ctl(&tc, r, "dlq replay --execute --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        total = read_main(&tc, froms, NULL, NULL);
        json_object_foreach(froms, key, cnt)
        {
                cr_expect_eq(json_integer_value(cnt), 1,
                             "%s republished %lld times", key,
                             (long long)json_integer_value(cnt));
                once += json_integer_value(cnt) == 1;
        }
        cr_assert_eq(json_object_size(froms), N, "lost: %d",
                     N - (int)json_object_size(froms));
        cr_assert_eq(total, N, "%ld committed records for %d", total, N);
        cr_assert_eq(once, N);
        json_decref(froms);
        free(r);
}

/*
 * With a running consumer
 */

Test(ctl, canary_that_fails_again_stops_the_replay, .fini = teardown,
     .timeout = 180)
{
        enum { N = 10 };
        dq_tc_t tc;
        rec_t recs[N];
        run_t *r = malloc(sizeof(*r));
        json_t *out, *froms = json_object();
        pid_t pid;

        dq_tc_init(&tc, "ctlcanary", 2);
        mix(recs, N, 2);
        for (size_t i = 0; i < N; i++)
                recs[i].kind = "candidate_compression"; /* source "gone" */
        write_dlq(&tc, recs, N);
        pid = dq_tc_spawn(&tc, "w");

        ctl(&tc, r, "dlq replay --execute --canary 2 --json");
        cr_assert_eq(r->rc, 4, "exit %d: %s", r->rc, r->err);
        cr_assert(strstr(r->err, "failed again"), "%s", r->err);
        out = json_out(r);
        cr_assert_eq(jint(out, "replayed", NULL), 2);
        cr_assert_str_eq(json_string_value(json_object_get(out, "result")),
                         "canary_failed");
        json_decref(out);
        cr_assert_eq(read_main(&tc, froms, NULL, NULL), 2,
                     "only the canary was published");
        json_decref(froms);
        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        free(r);
}

Test(ctl, cancel_works_end_to_end_with_a_running_consumer, .fini = teardown,
     .timeout = 120)
{
        dq_tc_t tc;
        rd_kafka_t *pk = dq_tc_producer();
        run_t *r = malloc(sizeof(*r));
        const char *srcs[] = {"m1"}, *srcs2[] = {"m2"};
        dq_job_t *job, *next;
        dq_record_t rec = {0};
        char *json;
        size_t len;
        json_t *out;
        pid_t pid;

        dq_tc_init(&tc, "ctlcancel", 1);
        open_store(&tc);
        dq_test_memory(store, "s/1", "m1", "candidate", "active", "one", 1);
        dq_test_memory(store, "s/1", "m2", "candidate", "active", "two", 2);
        pid = dq_tc_spawn(&tc, "w");

        /* Due in 3 s: it waits in a delay tier while we cancel it. */
        job = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs, 1);
        job->scheduled_for_ms = dq_now_ms() + 3000;
        json = dq_job_serialize(job, &len);
        dq_tc_produce(pk, tc.topic, 0, "s/1", json, len);
        free(json);

        /* M5: a scope that differs by case or by a space cancels nothing,
         * and says so. */
        ctl(&tc, r, "job cancel %s --scope S/1", job->id);
        cr_assert_eq(r->rc, 1, "%s", r->err);
        cr_assert(strstr(r->err, "has no state in scope 'S/1'"), "%s", r->err);
        ctl(&tc, r, "job cancel %s --scope s/1\x01", job->id);
        cr_assert_eq(r->rc, 2, "%s", r->err);
        /* Before its first run, only --force cancels it. */
        ctl(&tc, r, "job cancel %s --scope s/1 --reason test", job->id);
        cr_assert_eq(r->rc, 1, "%s", r->err);
        ctl(&tc, r, "job cancel %s --scope s/1 --reason test --force", job->id);
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert(strstr(r->out, "cancelled"), "%s", r->out);
        ctl(&tc, r, "job cancel %s --scope s/1", job->id);
        cr_assert_eq(r->rc, 1, "a second cancel is refused");
        cr_assert(strstr(r->err, "already cancelled"), "%s", r->err);

        /* A job behind it completes: the consumer went past it. */
        next = dq_test_job(DQ_KIND_CANDIDATE_COMPRESSION, "s/1", srcs2, 1);
        next->scheduled_for_ms = dq_now_ms() + 3500;
        json = dq_job_serialize(next, &len);
        dq_tc_produce(pk, tc.topic, 0, "s/1", json, len);
        free(json);
        for (int i = 0; i < 200; i++) {
                ctl(&tc, r, "job status %s --scope s/1 --json", next->id);
                if (r->rc == 0 && strstr(r->out, "\"state\":\"completed\""))
                        break;
                dq_test_sleep_ms(100);
        }
        cr_assert(strstr(r->out, "\"state\":\"completed\""), "%s", r->out);
        ctl(&tc, r, "job status %s --scope s/1 --json", job->id);
        cr_assert_eq(r->rc, 0);
        out = json_out(r);
        cr_assert_str_eq(json_string_value(json_object_get(out, "state")),
                         "cancelled");
        cr_assert_str_eq(json_string_value(json_object_get(
                             json_object_get(out, "fields"), "cancel_reason")),
                         "test");
        json_decref(out);
        cr_assert_eq(
            dq_store_record_get(store, DQ_REC_MEMORY, "s/1", "m1", &rec),
            DQ_OK);
        cr_assert_str_eq(dq_record_get(&rec, "status"), "active",
                         "a cancelled job has no effect");
        dq_record_release(&rec);
        cr_assert_eq(
            dq_store_record_get(store, DQ_REC_MEMORY, "s/1", "m2", &rec),
            DQ_OK);
        cr_assert_str_eq(dq_record_get(&rec, "status"), "compressed");
        dq_record_release(&rec);

        kill(pid, SIGTERM);
        cr_assert_eq(dq_tc_wait(pid, 30000), 0);
        dq_job_destroy(job);
        dq_job_destroy(next);
        rd_kafka_destroy(pk);
        free(r);
}

/*
 * Memory
 */

Test(ctl, memory_load_reports_bad_lines_and_loads_the_rest, .fini = teardown,
     .timeout = 60)
{
        dq_tc_t tc;
        run_t *r = malloc(sizeof(*r));
        char path[512];
        FILE *fp;
        json_t *o;

        dq_tc_setup(&tc, "ctlmem", 1, dq_test_bootstrap());
        snprintf(path, sizeof(path), "%s/mem.ndjson", tc.dir);
        fp = fopen(path, "w");
        cr_assert(fp);
        fputs("{\"scope\":\"s/1\",\"id\":\"c1\",\"type\":\"candidate\","
              "\"status\":\"active\",\"claim\":\"likes tea\","
              "\"created_at\":5}\n"
              "\n"
              "{\"scope\":\"s/1\",\"id\":\"e1\",\"store\":\"episode\","
              "\"content\":\"talked\",\"flag\":true}\n"
              "{\"scope\":\"s/1\"}\n"
              "{\"scope\":\"s/1\",\"id\":\"x\",\"deep\":[1]}\n"
              "not json\n"
              /* What no job can use: a scope with white space, an id with
               * braces, an unknown status or type, a time of nothing. */
              "{\"scope\":\"s/1 \",\"id\":\"c2\"}\n"
              "{\"scope\":\"s/1\",\"id\":\"c{2}\"}\n"
              "{\"scope\":\"s/1\",\"id\":\"c2\",\"status\":\"actve\"}\n"
              "{\"scope\":\"s/1\",\"id\":\"c2\",\"type\":\"memo\"}\n"
              "{\"scope\":\"s/1\",\"id\":\"c2\",\"created_at\":\"soon\"}\n"
              "{\"scope\":\"s/1\",\"id\":\"c3\",\"type\":\"candidate\","
              "\"status\":\"active\",\"created_at\":"
              "\"2026-11-23T12:00:00Z\"}\n",
              fp);
        fclose(fp);
        ctl(&tc, r, "memory load %s", path);
        cr_assert_eq(r->rc, 5, "rejected lines: exit 5 (%s)", r->err);
        cr_assert(strstr(r->err, "line 4: decay.memory.bad_id"), "%s", r->err);
        cr_assert(strstr(r->err, "line 5: decay.memory.bad_field"), "%s",
                  r->err);
        cr_assert(strstr(r->err, "line 6: decay.memory.malformed_json"), "%s",
                  r->err);
        cr_assert(strstr(r->err, "line 7: decay.memory.bad_scope"), "%s",
                  r->err);
        cr_assert(strstr(r->err, "line 8: decay.memory.bad_id"), "%s", r->err);
        cr_assert(strstr(r->err, "line 9: decay.memory.bad_status"), "%s",
                  r->err);
        cr_assert(strstr(r->err, "line 10: decay.memory.bad_type"), "%s",
                  r->err);
        cr_assert(strstr(r->err, "line 11: decay.memory.bad_time"), "%s",
                  r->err);
        cr_assert(strstr(r->err, "loaded=3 rejected=8"), "%s", r->err);
        /* An RFC 3339 time is kept as ms, as the jobs compare them. */
        ctl(&tc, r, "memory get c3 --scope s/1 --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        o = json_out(r);
        cr_assert_str_eq(json_string_value(json_object_get(o, "created_at")),
                         "1795435200000");
        json_decref(o);

        ctl(&tc, r, "memory get c1 --scope s/1 --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        o = json_out(r);
        cr_assert_str_eq(json_string_value(json_object_get(o, "claim")),
                         "likes tea");
        cr_assert_str_eq(json_string_value(json_object_get(o, "created_at")),
                         "5");
        json_decref(o);
        ctl(&tc, r, "memory get e1 --scope s/1 --episode --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        cr_assert(strstr(r->out, "\"flag\":\"true\""), "%s", r->out);
        ctl(&tc, r, "memory get e1 --scope s/1");
        cr_assert_eq(r->rc, 1, "e1 is an episode, not a memory");
        free(r);
}

/* M2: whoever can write to a topic can put escape sequences in a key, a
 * header or a quoted kind; no human-readable output passes them on. */
Test(ctl, escape_sequences_in_records_never_reach_the_terminal,
     .fini = teardown, .timeout = 120)
{
        static const char evil[] = "\x1b[2J\x1b]0;pwned\x07";
        dq_tc_t tc;
        run_t *r = malloc(sizeof(*r));
        rd_kafka_t *pk;
        rd_kafka_headers_t *h = rd_kafka_headers_new(4);
        char payload[512];
        int64_t off = -1;
        const char *cmds[] = {"dlq list", "dlq stats", "dlq inspect 0:0"};

        dq_tc_init(&tc, "ctlesc", 1);
        snprintf(payload, sizeof(payload),
                 "{\"schema\":1,\"id\":\"01JD3Q6V2R8YB6K3ZKQ9T1M4XH\","
                 "\"kind\":\"\\u001b[2J\\u009b1m\",\"scope\":\"s/a\","
                 "\"source_ids\":[\"m1\"],\"summary_method\":{\"type\":"
                 "\"deterministic_concatenate\"},\"created_at\":"
                 "\"2026-11-23T11:59:58Z\",\"created_by\":\"svc:t\"}");
        rd_kafka_header_add(h, DQ_HDR_ERROR_CLASS, -1, "fatal", -1);
        rd_kafka_header_add(h, DQ_HDR_ERROR_CODE, -1, evil, -1);
        rd_kafka_header_add(h, DQ_HDR_ERROR_MESSAGE, -1, evil, -1);
        rd_kafka_header_add(h, evil, -1, evil, -1);
        pk = dq_tc_producer();
        cr_assert_eq(rd_kafka_producev(
                         pk, RD_KAFKA_V_TOPIC(tc.dlq), RD_KAFKA_V_PARTITION(0),
                         RD_KAFKA_V_KEY(evil, strlen(evil)),
                         RD_KAFKA_V_VALUE(payload, strlen(payload)),
                         RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(&off),
                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                         RD_KAFKA_V_END),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        dq_tc_flush(pk);
        rd_kafka_destroy(pk);
        cr_assert_eq(off, 0);

        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
                ctl(&tc, r, "%s", cmds[i]);
                cr_assert_eq(r->rc, 0, "%s: exit %d: %s", cmds[i], r->rc,
                             r->err);
                cr_assert_null(strchr(r->out, '\x1b'), "%s passed ESC: %s",
                               cmds[i], r->out);
                cr_assert_null(strchr(r->err, '\x1b'), "%s passed ESC",
                               cmds[i]);
                cr_assert_null(strstr(r->out, "\xc2\x9b"),
                               "%s passed a C1 control", cmds[i]);
                cr_assert_null(strchr(r->out, '\x07'), "%s passed BEL",
                               cmds[i]);
                cr_assert(strstr(r->out, "\\x1b[2J"), "%s: %s", cmds[i],
                          r->out);
        }
        /* The JSON form carries the bytes, escaped by JSON itself. */
        ctl(&tc, r, "dlq list --json");
        cr_assert_eq(r->rc, 0, "%s", r->err);
        json_decref(json_out(r));
        cr_assert_null(strchr(r->out, '\x1b'));
        free(r);
}
