/* The fault-injection suite: thousands of jobs of every sort through three
 * decay-consumer processes while consumers are killed with SIGKILL and
 * restarted, one is added and drained away, Redis is killed and restarted,
 * and the broker restarts. 600 of the jobs have a 2 s handler, each in a
 * scope of its own, and all go out just before the first kill -9: it hits
 * the consumer that runs the most of them, once that is 150 (or after
 * 30 s). An oracle then checks the
 * guarantees from the final Redis state, the DLQ and the consumers' claim,
 * settle and commit logs, and prints its counts; each must be 0. */
#define _GNU_SOURCE
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dq_envelope.h"
#include "dq_attest.h"
#include "dq_job.h"
#include "dq_test.h"
#include "dq_test_consumer.h"
#include "dq_test_llm.h"
#include "dq_time.h"
#include "banned.h"

#define PARTS        6
#define SCOPES       24
#define MAX_ATTEMPTS 5
#define WORKERS      3
#define WAVES        6

enum {
        C_OK,        /* completes */
        C_EPISODE,   /* episode_compression, completes */
        C_REVIEW,    /* expired_principle_review, completes */
        C_FAIL1,     /* fails once, then completes */
        C_FAIL2,     /* fails twice, then completes */
        C_SCHED,     /* scheduled 8-18 s ahead, completes */
        C_DUP_A,     /* first user of an idempotency key, completes */
        C_DUP_B,     /* second user of the key: duplicate */
        C_REDELIVER, /* its message is sent twice, completes once */
        C_ALWAYS,    /* always fails: DLQ after MAX_ATTEMPTS */
        C_LLM,       /* llm_summary without attestation: DLQ at once */
        C_MISSING,   /* a source does not exist: DLQ at once */
        C_COPIES,    /* sent 3 times in one wave and again 2 waves later */
        C_RESEND,    /* fails once; its message is sent again a wave later,
                        while it waits in its backoff */
        C_BIG,       /* padded with white space to exactly job.max.bytes */
        C_WT_SRC,    /* a source key holds a string: DLQ, command error */
        C_WT_IDEM,   /* its idempotency key holds a hash: DLQ, command error */
        C_WT_JOB,    /* its state key holds a string: DLQ, command error */
        C_SLOW,      /* a 2 s handler, in a scope of its own, completes */
        C_SIGNED,    /* llm_summary, signed: the backend writes its summary */
        C__CNT
};

static const int cat_count[C__CNT] = {
    [C_OK] = 2000,      [C_EPISODE] = 150, [C_REVIEW] = 100, [C_FAIL1] = 60,
    [C_FAIL2] = 60,     [C_SCHED] = 100,   [C_DUP_A] = 50,   [C_DUP_B] = 50,
    [C_REDELIVER] = 50, [C_ALWAYS] = 30,   [C_LLM] = 10,     [C_MISSING] = 10,
    [C_COPIES] = 40,    [C_RESEND] = 40,   [C_BIG] = 10,     [C_WT_SRC] = 5,
    [C_WT_IDEM] = 5,    [C_WT_JOB] = 5,    [C_SLOW] = 600,   [C_SIGNED] = 120,
};

/* Jobs that run a handler on a worker; the others are one Redis step. */
static bool handler_cat(int cat)
{
        return cat == C_FAIL1 || cat == C_FAIL2 || cat == C_RESEND ||
               cat == C_ALWAYS || cat == C_SLOW || cat == C_SIGNED;
}

#define JOB_MAX_BYTES 16384
#define DQ_STR_(x)    #x
#define DQ_STR(x)     DQ_STR_(x)
#define LEASE_MS      5000
#define LLM_KEY       "sk-fault-4e8d2b7f0a9c1e36"

/* The signed LLM jobs' backend and their operator's key. */
static dq_test_llm_t *llm_srv;
static dq_attest_key_t llm_key;

/* One run of a job, from a consumer's claim line. */
typedef struct run_s {
        int64_t attempt;
        int64_t at; /* the claim's time, as Redis was given it */
        char msg[96];
} run_t;

typedef struct exp_s {
        char id[DQ_ULID_LEN + 1];
        char scope[32];
        int cat;
        int64_t sched_ms;
        char *json;
        size_t len;
        int64_t offset;
        int wave; /* sent in this wave */
        /* from the logs */
        int claims;
        int64_t first_claim;
        run_t runs[16];
        int run_cnt;
        int64_t not_before[16]; /* by the attempt that failed */
        int applied;
        int dead_logged;
        int dlq_copies;
} exp_t;

typedef struct poison_s {
        const char *code;
        char *value;
        size_t len;
        int32_t partition;
        int64_t offset;
        int dlq_copies;
} poison_t;

#define POISON 30
/* Poison over the limit of the consumer's copies (job.max.bytes + 16 KiB):
 * their DLQ copies are cut. */
#define POISON_HUGE_LEN 40000

static exp_t *exps;
static size_t exp_cnt;
static poison_t poison[POISON];
static dq_tc_t tc;

static int cmp_exp(const void *a, const void *b)
{
        return strcmp(((const exp_t *)a)->id, ((const exp_t *)b)->id);
}

static exp_t *exp_find(const char *id)
{
        exp_t key;
        size_t n = strlen(id);

        if (n >= sizeof(key.id))
                return NULL;
        memcpy(key.id, id, n + 1);
        return bsearch(&key, exps, exp_cnt, sizeof(*exps), cmp_exp);
}

/*
 * Load
 */

static void hset(redisContext *r, int *pending, const char *type,
                 const char *scope, const char *id, const char *kind,
                 long long created)
{
        if (!strcmp(type, "ep"))
                redisAppendCommand(r,
                                   "HSET %s:ep:{%s}:%s status active content "
                                   "%s created_at %lld",
                                   tc.ns, scope, id, id, created);
        else
                redisAppendCommand(r,
                                   "HSET %s:mem:{%s}:%s type %s status active "
                                   "claim %s created_at %lld",
                                   tc.ns, scope, id, kind, id, created);
        (*pending)++;
}

static void drain_replies(redisContext *r, int *pending)
{
        while (*pending > 0) {
                redisReply *reply;
                cr_assert_eq(redisGetReply(r, (void **)&reply), REDIS_OK);
                cr_assert_neq(reply->type, REDIS_REPLY_ERROR, "%s", reply->str);
                freeReplyObject(reply);
                (*pending)--;
        }
}

static void build_jobs(redisContext *r, int64_t t0)
{
        size_t n = 0, total = 0;
        int pending = 0;

        for (int c = 0; c < C__CNT; c++)
                total += (size_t)cat_count[c];
        exps = calloc(total, sizeof(*exps));
        cr_assert(exps);

        for (int c = 0; c < C__CNT; c++) {
                for (int i = 0; i < cat_count[c]; i++, n++) {
                        exp_t *e = &exps[n];
                        dq_job_t *job = dq_job_new();
                        int nsrc = c == C_REVIEW ? 1 : c == C_EPISODE ? 2 : 3;
                        char sid[64];
                        dq_reject_t rej;

                        e->cat = c;
                        e->wave = -1; /* not sent yet */
                        /* A pair shares scope and key: A is sent first. */
                        if (c == C_DUP_B)
                                memcpy(
                                    e->scope,
                                    exps[n - (size_t)cat_count[C_DUP_A]].scope,
                                    sizeof(e->scope));
                        else if (c == C_SLOW)
                                snprintf(e->scope, sizeof(e->scope),
                                         "fault/slow%03d", i);
                        else
                                snprintf(e->scope, sizeof(e->scope),
                                         "fault/s%02d", (int)(n % SCOPES));
                        job->kind = c == C_EPISODE ? DQ_KIND_EPISODE_COMPRESSION
                                    : c == C_REVIEW
                                        ? DQ_KIND_EXPIRED_PRINCIPLE_REVIEW
                                        : DQ_KIND_CANDIDATE_COMPRESSION;
                        job->method = c == C_LLM || c == C_SIGNED
                                          ? DQ_METHOD_LLM_SUMMARY
                                          : DQ_METHOD_DETERMINISTIC_CONCATENATE;
                        job->created_at_ms = dq_now_ms();
                        dq_ulid_new(job->created_at_ms, job->id);
                        job->scope = strdup(e->scope);
                        job->created_by = strdup("test:fault");
                        job->source_ids = calloc((size_t)nsrc, sizeof(char *));
                        for (int s = 0; s < nsrc; s++) {
                                snprintf(sid, sizeof(sid), "m_%s_%d", job->id,
                                         s);
                                job->source_ids[job->source_cnt++] =
                                    strdup(sid);
                                if (c == C_MISSING && s == 1)
                                        continue; /* never written */
                                if (c == C_WT_SRC && s == 1) {
                                        redisAppendCommand(
                                            r, "SET %s:mem:{%s}:%s not-a-hash",
                                            tc.ns, e->scope, sid);
                                        pending++;
                                        continue;
                                }
                                hset(r, &pending, c == C_EPISODE ? "ep" : "mem",
                                     e->scope, sid,
                                     c == C_REVIEW ? "principle" : "candidate",
                                     (long long)(1000 - s));
                        }
                        if (c == C_FAIL1 || c == C_RESEND)
                                job->trace_id = strdup("fail-until:1");
                        else if (c == C_FAIL2)
                                job->trace_id = strdup("fail-until:2");
                        else if (c == C_ALWAYS)
                                job->trace_id = strdup("fail-always");
                        else if (c == C_SLOW)
                                job->trace_id = strdup("slow:2000");
                        if (c == C_SCHED)
                                job->scheduled_for_ms =
                                    t0 + 8000 + (int64_t)(rand() % 10000);
                        if (c == C_DUP_A || c == C_DUP_B) {
                                char key[32];
                                snprintf(key, sizeof(key), "idem-%d", i);
                                job->idempotency_key = strdup(key);
                        }
                        if (c == C_WT_IDEM) {
                                char key[32];
                                snprintf(key, sizeof(key), "wt-idem-%d", i);
                                job->idempotency_key = strdup(key);
                                redisAppendCommand(r,
                                                   "HSET %s:idem:{%s}:%s f v",
                                                   tc.ns, e->scope, key);
                                pending++;
                        }
                        if (c == C_WT_JOB) {
                                redisAppendCommand(
                                    r, "SET %s:job:{%s}:%s not-a-hash", tc.ns,
                                    e->scope, job->id);
                                pending++;
                        }
                        if (c == C_SIGNED) {
                                char err[256];
                                cr_assert(
                                    dq_attest_sign(job, &llm_key, "test-model",
                                                   64, t0 - 60000, t0 + 3600000,
                                                   err, sizeof(err)),
                                    "%s", err);
                        }
                        cr_assert(dq_job_validate(job, &rej), "%s",
                                  rej.message);
                        memcpy(e->id, job->id, sizeof(e->id));
                        e->sched_ms = job->scheduled_for_ms;
                        e->json = dq_job_serialize(job, &e->len);
                        if (c == C_BIG) {
                                /* At the limit: the same job, in white
                                 * space up to job.max.bytes. */
                                char *big = malloc(JOB_MAX_BYTES);
                                cr_assert(big && e->len < JOB_MAX_BYTES);
                                memcpy(big, e->json, e->len - 1);
                                memset(big + e->len - 1, ' ',
                                       JOB_MAX_BYTES - e->len);
                                big[JOB_MAX_BYTES - 1] = '}';
                                free(e->json);
                                e->json = big;
                                e->len = JOB_MAX_BYTES;
                        }
                        dq_job_destroy(job);
                        if (pending > 1000)
                                drain_replies(r, &pending);
                }
        }
        /* DUP pairs: B[i] shares A[i]'s scope. */
        size_t a0 = 0, b0 = 0;
        for (int c = 0; c < C_DUP_A; c++)
                a0 += (size_t)cat_count[c];
        b0 = a0 + (size_t)cat_count[C_DUP_A];
        for (int i = 0; i < cat_count[C_DUP_B]; i++)
                cr_assert_str_eq(exps[a0 + i].scope, exps[b0 + i].scope);
        drain_replies(r, &pending);
        exp_cnt = n;
}

static void build_poison(void)
{
        static const char *bad_utf8 = "{\"schema\":1,\"id\":\"\xff\xfe\"}";
        for (int i = 0; i < POISON; i++) {
                poison_t *p = &poison[i];
                p->partition = i % PARTS;
                switch (i % 5) {
                case 0:
                        p->code = "decay.job.malformed_json";
                        p->value = strdup("{\"schema\":1,\"id\":");
                        break;
                case 1:
                        p->code = "decay.job.too_large";
                        p->len = i % 10 == 1 ? POISON_HUGE_LEN : 20000;
                        p->value = malloc(p->len + 1);
                        memset(p->value, ' ', p->len);
                        p->value[0] = '{';
                        p->value[p->len - 1] = '}';
                        p->value[p->len] = '\0';
                        break;
                case 2:
                        p->code = "decay.job.invalid_utf8";
                        p->value = strdup(bad_utf8);
                        break;
                case 3:
                        p->code = "decay.job.unsupported_schema";
                        p->value = strdup("{\"schema\":2}");
                        break;
                default:
                        p->code = "decay.job.malformed_json";
                        p->value = strdup("not json at all");
                        break;
                }
                if (!p->len)
                        p->len = strlen(p->value);
        }
}

/* Sends the jobs in [from, to) of a shuffled order, plus a share of the
 * poison; redelivered jobs go twice, back to back. The slow jobs all go
 * in wave 1. */
static void send_wave(rd_kafka_t *rk, size_t *order, size_t from, size_t to,
                      int poison_from, int poison_to, int wave)
{
        for (size_t i = 0; i < exp_cnt && wave == 1; i++)
                if (exps[i].cat == C_SLOW) {
                        exps[i].wave = wave;
                        dq_tc_send(rk, tc.topic, -1, exps[i].scope,
                                   exps[i].json, exps[i].len, &exps[i].offset);
                }
        for (size_t k = from; k < to; k++) {
                exp_t *e = &exps[order[k]];
                if (e->cat == C_SLOW)
                        continue;
                e->wave = wave;
                dq_tc_send(rk, tc.topic, -1, e->scope, e->json, e->len,
                           &e->offset);
                if (e->cat == C_REDELIVER)
                        dq_tc_send(rk, tc.topic, -1, e->scope, e->json, e->len,
                                   NULL);
                for (int n = 0; e->cat == C_COPIES && n < 2; n++)
                        dq_tc_send(rk, tc.topic, -1, e->scope, e->json, e->len,
                                   NULL);
        }
        /* The same messages again, across the faults between waves: the
         * copies of two waves back, and the retried jobs of the last one,
         * most of which wait in their backoff now. */
        for (size_t i = 0; i < exp_cnt && wave > 0; i++) {
                exp_t *e = &exps[i];
                if (e->len && e->wave >= 0 &&
                    ((e->cat == C_COPIES && e->wave == wave - 2) ||
                     (e->cat == C_RESEND && e->wave == wave - 1)))
                        dq_tc_send(rk, tc.topic, -1, e->scope, e->json, e->len,
                                   NULL);
        }
        for (int i = poison_from; i < poison_to; i++)
                dq_tc_send(rk, tc.topic, poison[i].partition, "poison",
                           poison[i].value, poison[i].len, &poison[i].offset);
        dq_tc_flush(rk);
}

/*
 * The oracle
 */

/* The value of " key=" in line into buf (up to a space). */
static bool kv(const char *line, const char *key, char *buf, size_t size)
{
        char pat[64];
        const char *p;
        size_t n = 0;

        snprintf(pat, sizeof(pat), " %s=", key);
        p = strstr(line, pat);
        if (!p)
                return false;
        p += strlen(pat);
        while (p[n] && p[n] != ' ' && p[n] != '\n' && n + 1 < size) {
                buf[n] = p[n];
                n++;
        }
        buf[n] = '\0';
        return true;
}

typedef struct commit_s {
        int topic;
        int32_t partition;
        int64_t offset;
        int64_t ts;
} commit_t;

typedef struct logs_s {
        /* The runs open in the log being read: claimed, not yet settled
         * (G10: two of one scope must never be open at once, unless both
         * are one Redis step each). */
        exp_t **open;
        size_t open_cnt, open_cap;
        int concurrent;     /* claims of a scope while another of it ran */
        size_t most_killed; /* handlers running when a log ended */
        int64_t *settled[3][PARTS]; /* earliest settle time, by offset */
        int64_t high[3][PARTS];
        commit_t *commits;
        size_t commit_cnt, commit_cap;
        int abandoned;
} logs_t;

static int topic_index(const char *t)
{
        if (!strcmp(t, tc.topic))
                return 0;
        if (!strcmp(t, tc.tier_topic[0]))
                return 1;
        if (!strcmp(t, tc.tier_topic[1]))
                return 2;
        return -1;
}

static void open_run(logs_t *lg, exp_t *e)
{
        for (size_t i = 0; i < lg->open_cnt; i++) {
                exp_t *o = lg->open[i];
                if (o != e && !strcmp(o->scope, e->scope) &&
                    (handler_cat(o->cat) || handler_cat(e->cat))) {
                        lg->concurrent++;
                        cr_log_warn("scope %s: job %s claimed while job %s "
                                    "ran",
                                    e->scope, e->id, o->id);
                }
        }
        if (lg->open_cnt == lg->open_cap) {
                lg->open_cap = lg->open_cap ? lg->open_cap * 2 : 256;
                lg->open = realloc(lg->open, lg->open_cap * sizeof(*lg->open));
                cr_assert(lg->open);
        }
        lg->open[lg->open_cnt++] = e;
}

static void close_run(logs_t *lg, const char *job)
{
        for (size_t i = 0; i < lg->open_cnt; i++)
                if (!strcmp(lg->open[i]->id, job)) {
                        lg->open[i] = lg->open[--lg->open_cnt];
                        return;
                }
}

static void parse_line(logs_t *lg, const char *line)
{
        char stage[32], v[128], topic[256], job[64];
        int64_t ts;
        exp_t *e;

        if (!dq_time_parse_rfc3339(line, 24, &ts) ||
            !kv(line, "stage", stage, sizeof(stage)))
                return;
        /* A run ends with its outcome: completed, retried or failed (its
         * delay or DLQ copy follows: stage dispatch), dead, or handed
         * back. */
        if ((!strcmp(stage, "settle") || !strcmp(stage, "retry") ||
             !strcmp(stage, "dispatch") || !strcmp(stage, "dead")) &&
            kv(line, "job", job, sizeof(job)))
                close_run(lg, job);
        if (!strcmp(stage, "claim") && kv(line, "status", v, sizeof(v)) &&
            !strcmp(v, "claimed") && kv(line, "job", job, sizeof(job)) &&
            (e = exp_find(job))) {
                char at[32], att[16];
                open_run(lg, e);
                e->claims++;
                if (!e->first_claim || ts < e->first_claim)
                        e->first_claim = ts;
                if (e->run_cnt < 16 && kv(line, "at", at, sizeof(at)) &&
                    kv(line, "attempt", att, sizeof(att))) {
                        run_t *r = &e->runs[e->run_cnt++];
                        r->at = atoll(at);
                        r->attempt = atoll(att);
                        kv(line, "msg", r->msg, sizeof(r->msg));
                }
        } else if (!strcmp(stage, "retry") &&
                   kv(line, "job", job, sizeof(job)) && (e = exp_find(job))) {
                char nb[32], att[16];
                if (kv(line, "not_before", nb, sizeof(nb)) &&
                    kv(line, "attempt", att, sizeof(att)) && atoi(att) > 0 &&
                    atoi(att) < 16)
                        e->not_before[atoi(att)] = atoll(nb);
        } else if (!strcmp(stage, "dead") &&
                   kv(line, "job", job, sizeof(job)) && (e = exp_find(job))) {
                e->dead_logged++;
        } else if (!strcmp(stage, "settle") &&
                   kv(line, "effect", v, sizeof(v)) &&
                   kv(line, "job", job, sizeof(job)) && (e = exp_find(job))) {
                e->applied++;
        } else if (!strcmp(stage, "settle") &&
                   kv(line, "topic", topic, sizeof(topic)) &&
                   kv(line, "outcome", v, sizeof(v))) {
                char ps[16], os[32];
                int ti = topic_index(topic);
                if (!strcmp(v, "abandoned")) {
                        lg->abandoned++;
                        return;
                }
                if (ti < 0 || !kv(line, "partition", ps, sizeof(ps)) ||
                    !kv(line, "offset", os, sizeof(os)))
                        return;
                int p = atoi(ps);
                int64_t o = atoll(os);
                if (p < 0 || p >= PARTS || o < 0 || o >= lg->high[ti][p])
                        return;
                if (!lg->settled[ti][p][o] || ts < lg->settled[ti][p][o])
                        lg->settled[ti][p][o] = ts;
        } else if (!strcmp(stage, "commit") &&
                   kv(line, "result", v, sizeof(v)) && !strcmp(v, "ok") &&
                   kv(line, "topic", topic, sizeof(topic))) {
                char ps[16], os[32];
                int ti = topic_index(topic);
                if (ti < 0 || !kv(line, "partition", ps, sizeof(ps)) ||
                    !kv(line, "offset", os, sizeof(os)))
                        return;
                if (lg->commit_cnt == lg->commit_cap) {
                        lg->commit_cap =
                            lg->commit_cap ? lg->commit_cap * 2 : 1024;
                        lg->commits = realloc(
                            lg->commits, lg->commit_cap * sizeof(commit_t));
                        cr_assert(lg->commits);
                }
                lg->commits[lg->commit_cnt++] =
                    (commit_t){ti, atoi(ps), atoll(os), ts};
        }
}

static void read_logs(logs_t *lg)
{
        DIR *d = opendir(tc.dir);
        struct dirent *de;
        char path[1024], *line = NULL;
        size_t cap = 0;

        cr_assert(d);
        while ((de = readdir(d))) {
                FILE *fp;
                if (!strstr(de->d_name, ".log"))
                        continue;
                snprintf(path, sizeof(path), "%s/%s", tc.dir, de->d_name);
                fp = fopen(path, "r");
                cr_assert(fp, "%s", path);
                lg->open_cnt = 0; /* a log of its own process */
                while (getline(&line, &cap, fp) > 0)
                        parse_line(lg, line);
                fclose(fp);
                /* Runs still open at the end: a kill -9 cut them. */
                size_t cut = 0;
                for (size_t i = 0; i < lg->open_cnt; i++)
                        cut += handler_cat(lg->open[i]->cat);
                if (cut > lg->most_killed)
                        lg->most_killed = cut;
        }
        free(line);
        closedir(d);
}

static const char *hdr(rd_kafka_headers_t *h, const char *name, char *buf,
                       size_t size)
{
        const void *v;
        size_t len;

        if (!h || rd_kafka_header_get_last(h, name, &v, &len) || !v)
                return "";
        if (len >= size)
                len = size - 1;
        memcpy(buf, v, len);
        buf[len] = '\0';
        return buf;
}

typedef struct dlq_counts_s {
        int records, missing, unexpected, bad_headers, extra_copies;
        int completed_in_dlq; /* a job both completed and dead-lettered */
        int truncated;        /* poison copies cut to fit */
} dlq_counts_t;

static bool dead_cat(int cat)
{
        return cat == C_ALWAYS || cat == C_LLM || cat == C_MISSING ||
               cat == C_WT_SRC || cat == C_WT_IDEM || cat == C_WT_JOB;
}

/* Reads the whole DLQ; checks that it holds exactly the poison messages and
 * the failing jobs, each with the right headers. */
static void check_dlq(rd_kafka_t *rk, dlq_counts_t *dc, char (*states)[16])
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(PARTS);
        int64_t high[PARTS], left = 0;
        char b1[256], b2[256];

        for (int p = 0; p < PARTS; p++) {
                int64_t lo;
                cr_assert_eq(rd_kafka_query_watermark_offsets(
                                 rk, tc.dlq, p, &lo, &high[p], 10000),
                             0);
                left += high[p];
                rd_kafka_topic_partition_list_add(l, tc.dlq, p)->offset = 0;
        }
        cr_assert_eq(rd_kafka_assign(rk, l), 0);
        rd_kafka_topic_partition_list_destroy(l);

        long long deadline = dq_test_now_ms() + 30000;
        while (left > 0 && dq_test_now_ms() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
                rd_kafka_headers_t *h = NULL;
                dq_reject_t rej;
                dq_job_t *job;
                bool bad = false;

                if (!m)
                        continue;
                if (m->err) {
                        rd_kafka_message_destroy(m);
                        continue;
                }
                left--;
                dc->records++;
                rd_kafka_message_headers(m, &h);
                const char *cls = hdr(h, DQ_HDR_ERROR_CLASS, b1, sizeof(b1));
                char code[128] = "", att[32] = "";
                hdr(h, DQ_HDR_ERROR_CODE, code, sizeof(code));
                hdr(h, DQ_HDR_ATTEMPTS, att, sizeof(att));
                if (strcmp(hdr(h, DQ_HDR_ORIGINAL_TOPIC, b2, sizeof(b2)),
                           tc.topic) ||
                    atoi(hdr(h, DQ_HDR_ORIGINAL_PARTITION, b2, sizeof(b2))) !=
                        m->partition ||
                    strcmp(hdr(h, DQ_HDR_CONSUMER_GROUP, b2, sizeof(b2)),
                           tc.group) ||
                    strcmp(hdr(h, DQ_HDR_REPLAY_COUNT, b2, sizeof(b2)), "0") ||
                    !*hdr(h, DQ_HDR_WORKER, b2, sizeof(b2)) ||
                    !*hdr(h, DQ_HDR_FIRST_FAILED_AT, b2, sizeof(b2)) ||
                    !*hdr(h, DQ_HDR_ORIGINAL_TIMESTAMP, b2, sizeof(b2)) ||
                    !*hdr(h, DQ_HDR_ERROR_MESSAGE, b2, sizeof(b2)))
                        bad = true;

                job = dq_job_parse(m->payload, m->len, JOB_MAX_BYTES, &rej);
                if (!job) {
                        int64_t oo = atoll(
                            hdr(h, DQ_HDR_ORIGINAL_OFFSET, b2, sizeof(b2)));
                        poison_t *p = NULL;
                        for (int i = 0; i < POISON; i++)
                                if (poison[i].partition == m->partition &&
                                    poison[i].offset == oo)
                                        p = &poison[i];
                        if (!p) {
                                dc->unexpected++;
                        } else {
                                if (p->dlq_copies++)
                                        dc->extra_copies++;
                                if (p->len == POISON_HUGE_LEN) {
                                        /* Cut to fit, and saying so. */
                                        dc->truncated++;
                                        if (strcmp(hdr(h, DQ_HDR_TRUNCATED, b2,
                                                       sizeof(b2)),
                                                   "payload") ||
                                            atoll(hdr(h, DQ_HDR_ORIGINAL_SIZE,
                                                      b2, sizeof(b2))) !=
                                                (long long)p->len ||
                                            m->len >= p->len ||
                                            memcmp(m->payload, p->value,
                                                   m->len))
                                                bad = true;
                                } else if (m->len != p->len ||
                                           memcmp(m->payload, p->value,
                                                  p->len)) {
                                        bad = true;
                                }
                                if (strcmp(cls, "fatal") ||
                                    strcmp(code, p->code))
                                        bad = true;
                        }
                } else {
                        exp_t *e = exp_find(job->id);
                        if (e && !strcmp(states[e - exps], "completed")) {
                                dc->completed_in_dlq++;
                                cr_log_warn("job %s completed and is in the "
                                            "DLQ too (%s %s)",
                                            job->id, cls, code);
                        }
                        if (!e || !dead_cat(e->cat)) {
                                dc->unexpected++;
                                cr_log_warn("unexpected DLQ job %s (%s %s)",
                                            job->id, cls, code);
                        } else {
                                if (e->dlq_copies++)
                                        dc->extra_copies++;
                                if (m->len != e->len ||
                                    memcmp(m->payload, e->json, e->len))
                                        bad = true;
                                if (e->cat == C_ALWAYS &&
                                    !(!strcmp(cls, "retryable") &&
                                      !strcmp(
                                          code,
                                          "decay.debug.injected_failure")) &&
                                    !(!strcmp(cls, "crash_loop") &&
                                      !strcmp(code, "decay.job.crash_loop")))
                                        bad = true;
                                if (e->cat == C_ALWAYS &&
                                    atoi(att) != MAX_ATTEMPTS)
                                        bad = true;
                                if (e->cat == C_LLM &&
                                    (strcmp(cls, "fatal") ||
                                     strcmp(code, "decay.llm_summary."
                                                  "requires_operator_"
                                                  "attestation")))
                                        bad = true;
                                if ((e->cat == C_WT_SRC ||
                                     e->cat == C_WT_IDEM ||
                                     e->cat == C_WT_JOB) &&
                                    (strcmp(cls, "fatal") ||
                                     strcmp(code, "decay.store.command_error")))
                                        bad = true;
                                if (e->cat == C_MISSING &&
                                    (strcmp(cls, "fatal") ||
                                     strcmp(code,
                                            "decay.compress.source_missing")))
                                        bad = true;
                        }
                        dq_job_destroy(job);
                }
                if (bad) {
                        dc->bad_headers++;
                        cr_log_warn("DLQ record %d:%lld has wrong headers "
                                    "(class %s, code %s)",
                                    (int)m->partition, (long long)m->offset,
                                    cls, code);
                }
                rd_kafka_message_destroy(m);
        }
        cr_assert_eq(left, 0, "could not read the whole DLQ");
        for (int i = 0; i < POISON; i++)
                if (!poison[i].dlq_copies)
                        dc->missing++;
        for (size_t i = 0; i < exp_cnt; i++)
                if (dead_cat(exps[i].cat) && !exps[i].dlq_copies)
                        dc->missing++;
}

/* The expected terminal state of a category. */
static const char *want_state(int cat)
{
        switch (cat) {
        case C_ALWAYS:
        case C_LLM:
        case C_MISSING:
        case C_WT_SRC:
        case C_WT_IDEM:
                return "dead";
        case C_WT_JOB:
                return "wrongtype"; /* its state key holds a string still */
        case C_DUP_B:
                return "duplicate";
        default:
                return "completed";
        }
}

static bool terminal(const char *s)
{
        return !strcmp(s, "completed") || !strcmp(s, "dead") ||
               !strcmp(s, "duplicate") || !strcmp(s, "cancelled") ||
               !strcmp(s, "wrongtype");
}

/* Judges every run of a job from the claim lines, not the final state: a
 * run before scheduled_for or before the not-before time of the attempt
 * it follows is early; a run by another record while the last run's claim
 * was live (no retry between, lease not out) spent an attempt on a
 * duplicate delivery. */
static void judge_runs(const exp_t *e, int *early, int *dup_attempts)
{
        for (int i = 0; i < e->run_cnt; i++) {
                const run_t *r = &e->runs[i];
                int64_t nb = r->attempt >= 2 && r->attempt < 16
                                 ? e->not_before[r->attempt - 1]
                                 : 0;
                if ((e->sched_ms && r->at < e->sched_ms) ||
                    (nb && r->at < nb)) {
                        (*early)++;
                        cr_log_warn("job %s: attempt %lld ran at %lld, before "
                                    "%lld",
                                    e->id, (long long)r->attempt,
                                    (long long)r->at,
                                    (long long)(nb ? nb : e->sched_ms));
                }
                for (int j = 0; j < e->run_cnt; j++) {
                        const run_t *p = &e->runs[j];
                        if (p->attempt + 1 != r->attempt ||
                            !strcmp(p->msg, r->msg) ||
                            (p->attempt < 16 && e->not_before[p->attempt]) ||
                            r->at >= p->at + LEASE_MS)
                                continue;
                        (*dup_attempts)++;
                        cr_log_warn("job %s: attempt %lld by %s while attempt "
                                    "%lld by %s held a live claim",
                                    e->id, (long long)r->attempt, r->msg,
                                    (long long)p->attempt, p->msg);
                }
        }
}

/* Reads each job's state, attempts and result; returns how many are
 * terminal. */
static size_t redis_states(redisContext *r, char (*states)[16],
                           int64_t *attempts)
{
        size_t done = 0;

        for (size_t i = 0; i < exp_cnt; i++)
                redisAppendCommand(r, "HMGET %s:job:{%s}:%s state attempts",
                                   tc.ns, exps[i].scope, exps[i].id);
        for (size_t i = 0; i < exp_cnt; i++) {
                redisReply *rep;
                if (redisGetReply(r, (void **)&rep) != REDIS_OK)
                        cr_assert_fail("redis: %s", r->errstr);
                if (rep->type == REDIS_REPLY_ERROR) {
                        /* WRONGTYPE: a state key made a string on purpose
                         * (C_WT_JOB); its end is its DLQ record. */
                        snprintf(states[i], 16, "wrongtype");
                        attempts[i] = 0;
                        done++;
                        freeReplyObject(rep);
                        continue;
                }
                snprintf(states[i], 16, "%s",
                         rep->element[0]->str ? rep->element[0]->str : "");
                attempts[i] =
                    rep->element[1]->str ? atoll(rep->element[1]->str) : 0;
                if (terminal(states[i]))
                        done++;
                freeReplyObject(rep);
        }
        return done;
}

/* Effects: each completed compression's summary exists and its sources
 * point at it; each completed review opened exactly one review entry. */
static int check_effects(redisContext *r, char (*states)[16])
{
        int bad = 0;

        for (size_t i = 0; i < exp_cnt; i++) {
                exp_t *e = &exps[i];
                redisReply *rep;

                if (strcmp(states[i], "completed"))
                        continue;
                if (e->cat == C_REVIEW) {
                        rep = redisCommand(r, "XRANGE %s:reviews:{%s} - +",
                                           tc.ns, e->scope);
                        int n = 0;
                        for (size_t k = 0; k < rep->elements; k++) {
                                redisReply *f = rep->element[k]->element[1];
                                for (size_t j = 0; j + 1 < f->elements; j += 2)
                                        if (!strcmp(f->element[j]->str,
                                                    "job_id") &&
                                            !strcmp(f->element[j + 1]->str,
                                                    e->id))
                                                n++;
                        }
                        freeReplyObject(rep);
                        if (n != 1)
                                bad++;
                        continue;
                }
                rep = redisCommand(r, "HGET %s:mem:{%s}:sum_%s job_id", tc.ns,
                                   e->scope, e->id);
                if (!rep->str || strcmp(rep->str, e->id))
                        bad++;
                freeReplyObject(rep);
                rep = redisCommand(r, "HGET %s:%s:{%s}:m_%s_0 compressed_into",
                                   tc.ns, e->cat == C_EPISODE ? "ep" : "mem",
                                   e->scope, e->id);
                if (!rep->str || strncmp(rep->str, "sum_", 4) ||
                    strcmp(rep->str + 4, e->id))
                        bad++;
                freeReplyObject(rep);
        }
        return bad;
}

/*
 * The run
 */

static pid_t workers[WORKERS];
static int incarnation[WORKERS];

static void spawn(int w)
{
        char name[32];
        snprintf(name, sizeof(name), "c%d-%d", w, incarnation[w]++);
        workers[w] = dq_tc_spawn(&tc, name);
}

static void kill9(int w, const char *when)
{
        cr_log_info("fault: kill -9 of worker %d (%s)", w, when);
        kill(workers[w], SIGKILL);
        cr_assert_eq(dq_tc_wait(workers[w], 5000), 128 + SIGKILL);
        dq_test_sleep_ms(500 + rand() % 1000);
        spawn(w);
}

static void kill9_random(const char *when)
{
        kill9(rand() % WORKERS, when);
}

/* Waits up to ms for one worker to run want of the slow jobs (or for the
 * time to pass); returns the worker that runs the most. */
static int wait_slow_running(redisContext *r, int want, long ms)
{
        long long deadline = dq_test_now_ms() + ms;
        int running[WORKERS], best = 0;

        do {
                memset(running, 0, sizeof(running));
                for (size_t i = 0; i < exp_cnt; i++)
                        if (exps[i].cat == C_SLOW)
                                redisAppendCommand(
                                    r, "HMGET %s:job:{%s}:%s state claimed_by",
                                    tc.ns, exps[i].scope, exps[i].id);
                for (size_t i = 0; i < exp_cnt; i++) {
                        redisReply *rep;
                        int w;
                        if (exps[i].cat != C_SLOW)
                                continue;
                        cr_assert_eq(redisGetReply(r, (void **)&rep), REDIS_OK);
                        if (rep->type == REDIS_REPLY_ARRAY &&
                            rep->elements == 2 && rep->element[0]->str &&
                            !strcmp(rep->element[0]->str, "in_progress") &&
                            rep->element[1]->str &&
                            sscanf(rep->element[1]->str, "c%d-", &w) == 1 &&
                            w >= 0 && w < WORKERS)
                                running[w]++;
                        freeReplyObject(rep);
                }
                for (int w = 0; w < WORKERS; w++)
                        if (running[w] > running[best])
                                best = w;
                if (running[best] < want)
                        dq_test_sleep_ms(50);
        } while (running[best] < want && dq_test_now_ms() < deadline);
        cr_log_info("fault: worker %d runs %d slow jobs", best, running[best]);
        return best;
}

static void sleep_rand(long lo, long hi)
{
        dq_test_sleep_ms(lo + rand() % (hi - lo + 1));
}

/* The backend of the signed LLM jobs, answering after 200 ms, and the
 * consumers' settings for it. */
static void llm_setup(void)
{
        dq_test_llm_opts_t o = {
            .model = "test-model", .api_key = LLM_KEY, .delay_ms = 200};
        unsigned char pk[DQ_ATTEST_PK_LEN];
        char line[256], path[512], kv[700];
        FILE *fp;

        cr_assert((llm_srv = dq_test_llm_start(&o)));
        cr_assert(dq_attest_keygen("fault@ops", &llm_key, pk));
        cr_assert(dq_attest_signers_line(&llm_key, line, sizeof(line)));
        snprintf(path, sizeof(path), "%s/allowed_signers", tc.dir);
        cr_assert((fp = fopen(path, "w")));
        fprintf(fp, "%s\n", line);
        fclose(fp);
        snprintf(kv, sizeof(kv), "llm.base.url=%s", dq_test_llm_url(llm_srv));
        dq_tc_arg(&tc, kv);
        dq_tc_arg(&tc, "llm.model=test-model");
        dq_tc_arg(&tc, "llm.api.key=" LLM_KEY);
        snprintf(kv, sizeof(kv), "llm.allowed.signers=%s", path);
        dq_tc_arg(&tc, kv);
        dq_tc_arg(&tc, "llm.concurrency=32");
}

/* The API key in any consumer log line, or in --dump-config. */
/* Log lines of a store call that found replies of runs in flight still
 * owed (the consumer must read them first: dq_batch_land()). */
static int replies_owed(void)
{
        char cmd[1024];

        snprintf(cmd, sizeof(cmd),
                 "grep -rl -- 'event=replies_owed' '%s' >/dev/null", tc.dir);
        return system(cmd) == 0;
}

static int key_leaks(void)
{
        char cmd[2048], prog[512];
        int leaks = 0;

        snprintf(cmd, sizeof(cmd), "grep -rl -- '%s' '%s' >/dev/null", LLM_KEY,
                 tc.dir);
        leaks += system(cmd) == 0;
        snprintf(cmd, sizeof(cmd),
                 "%s -X llm.api.key=%s -X llm.base.url=http://x/v1 "
                 "--dump-config 2>&1 | grep -q -- '%s'",
                 dq_test_program("consumer/decay-consumer", prog, sizeof(prog)),
                 LLM_KEY, LLM_KEY);
        leaks += system(cmd) == 0;
        return leaks;
}

Test(fault, guarantees_hold_under_faults, .timeout = 400)
{
        long long start = dq_test_now_ms();
        unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
        redisContext *r = dq_test_redis();
        rd_kafka_t *pk, *ck;
        size_t *order;
        char(*states)[16];
        int64_t *attempts;
        logs_t lg = {0};
        dlq_counts_t dc = {0};
        char buf[64];

        srand(seed);
        cr_log_info("fault suite: seed %u", seed);
        dq_tc_init(&tc, "fault", PARTS);
        snprintf(buf, sizeof(buf), "max.attempts=%d", MAX_ATTEMPTS);
        dq_tc_arg(&tc, buf);
        dq_tc_arg(&tc, "job.max.bytes=" DQ_STR(JOB_MAX_BYTES));
        dq_tc_arg(&tc, "batch.size=50");
        dq_tc_arg(&tc, "redis.timeout=1s");
        dq_tc_arg(&tc, "critical.after=2s");
        dq_tc_arg(&tc, "drain.timeout=10s");
        dq_tc_arg(&tc, "lease=5s");
        llm_setup();

        build_jobs(r, dq_now_ms());
        build_poison();
        order = malloc(exp_cnt * sizeof(*order));
        for (size_t i = 0; i < exp_cnt; i++)
                order[i] = i;
        /* Shuffle, then put the DUP jobs back in category order, so that
         * each DUP_A goes out ahead of its DUP_B. */
        for (size_t i = exp_cnt - 1; i > 0; i--) {
                size_t j = (size_t)rand() % (i + 1);
                size_t t = order[i];
                order[i] = order[j];
                order[j] = t;
        }
        for (size_t i = 0, k = 0; i < exp_cnt; i++)
                if (exps[i].cat == C_DUP_A || exps[i].cat == C_DUP_B)
                        for (; k < exp_cnt; k++)
                                if (exps[order[k]].cat == C_DUP_A ||
                                    exps[order[k]].cat == C_DUP_B) {
                                        order[k++] = i;
                                        break;
                                }

        /* The jobs go out in waves, one before each fault, so that every
         * fault hits consumers with work in flight. */
        pk = dq_tc_producer();
#define WAVE(k)                                                      \
        send_wave(pk, order, exp_cnt *(k) / WAVES,                   \
                  exp_cnt * ((k) + 1) / WAVES, POISON * (k) / WAVES, \
                  POISON * ((k) + 1) / WAVES, (k))
        WAVE(0);
        for (int w = 0; w < WORKERS; w++)
                spawn(w);
        dq_test_sleep_ms(1500);

        WAVE(1);
        kill9(wait_slow_running(r, 150, 30000),
              "while 150 or more handlers run");

        /* Scale up, then drain the extra consumer away. */
        WAVE(2);
        pid_t extra = dq_tc_spawn(&tc, "extra");
        sleep_rand(2500, 4000);
        cr_log_info("fault: SIGTERM of the extra consumer");
        kill(extra, SIGTERM);
        cr_assert_eq(dq_tc_wait(extra, 30000), 0,
                     "the drained consumer must exit 0 (all settled)");

        WAVE(3);
        sleep_rand(100, 800);
        kill9_random("after rebalance");

        WAVE(4);
        sleep_rand(100, 500);
        cr_log_info("fault: kill -9 of Redis");
        dq_test_services("redis-kill");
        dq_test_sleep_ms(2500);
        dq_test_services("redis-start");
        redisFree(r);
        r = dq_test_redis();

        WAVE(5);
        sleep_rand(100, 1000);
        cr_log_info("fault: broker restart");
        dq_test_services("kafka-restart");

        sleep_rand(500, 2000);
        kill9_random("after broker restart");

        /* Wait for every job to be terminal and every offset committed. */
        states = calloc(exp_cnt, sizeof(*states));
        attempts = calloc(exp_cnt, sizeof(*attempts));
        ck = dq_test_consumer(tc.group);
        long long deadline = dq_test_now_ms() + 150000;
        size_t done = 0;
        for (;;) {
                done = redis_states(r, states, attempts);
                if (done == exp_cnt && dq_tc_caught_up(ck, &tc, tc.topic) &&
                    dq_tc_caught_up(ck, &tc, tc.tier_topic[0]) &&
                    dq_tc_caught_up(ck, &tc, tc.tier_topic[1]))
                        break;
                if (dq_test_now_ms() > deadline)
                        break;
                dq_test_sleep_ms(1000);
        }
        rd_kafka_destroy(ck);
        cr_log_info("settled: %zu of %zu jobs terminal", done, exp_cnt);

        for (int w = 0; w < WORKERS; w++)
                kill(workers[w], SIGTERM);
        for (int w = 0; w < WORKERS; w++)
                cr_expect_eq(dq_tc_wait(workers[w], 30000), 0,
                             "worker %d did not drain cleanly", w);

        /* The oracle. */
        for (int t = 0; t < 3; t++) {
                const char *topic = t == 0 ? tc.topic : tc.tier_topic[t - 1];
                for (int p = 0; p < PARTS; p++) {
                        int64_t lo;
                        cr_assert_eq(
                            rd_kafka_query_watermark_offsets(
                                pk, topic, p, &lo, &lg.high[t][p], 10000),
                            0);
                        lg.settled[t][p] =
                            calloc((size_t)lg.high[t][p] + 1, sizeof(int64_t));
                }
        }
        qsort(exps, exp_cnt, sizeof(*exps), cmp_exp);
        done = redis_states(r, states, attempts);
        read_logs(&lg);

        int lost = 0, wrong = 0, over = 0, early = 0, twice = 0, dup_att = 0;
        int committed_early = 0, unsettled_at_end = 0;
        for (size_t i = 0; i < exp_cnt; i++) {
                exp_t *e = &exps[i];
                if (!terminal(states[i])) {
                        lost++;
                        cr_log_warn("lost: job %s (cat %d) state '%s'", e->id,
                                    e->cat, states[i]);
                } else if (strcmp(states[i], want_state(e->cat))) {
                        wrong++;
                        cr_log_warn("job %s (cat %d) is %s, expected %s", e->id,
                                    e->cat, states[i], want_state(e->cat));
                }
                if (attempts[i] > MAX_ATTEMPTS || e->claims > MAX_ATTEMPTS)
                        over++;
                judge_runs(e, &early, &dup_att);
                if (e->applied > 1 || (e->applied && e->dead_logged))
                        twice++;
        }
        twice += check_effects(r, states);

        for (size_t i = 0; i < lg.commit_cnt; i++) {
                commit_t *c = &lg.commits[i];
                for (int64_t o = 0;
                     o < c->offset && o < lg.high[c->topic][c->partition];
                     o++) {
                        int64_t s = lg.settled[c->topic][c->partition][o];
                        if (!s || s > c->ts) {
                                committed_early++;
                                lg.settled[c->topic][c->partition][o] = -1;
                        }
                }
        }
        for (int t = 0; t < 3; t++)
                for (int p = 0; p < PARTS; p++)
                        for (int64_t o = 0; o < lg.high[t][p]; o++)
                                if (!lg.settled[t][p][o])
                                        unsettled_at_end++;

        ck = dq_test_consumer("fault-dlq-reader");
        check_dlq(ck, &dc, states);
        rd_kafka_consumer_close(ck);
        rd_kafka_destroy(ck);

        int leaks = key_leaks(), owed = replies_owed(), signed_done = 0;
        for (size_t i = 0; i < exp_cnt; i++)
                signed_done +=
                    exps[i].cat == C_SIGNED && !strcmp(states[i], "completed");
        printf(
            "fault suite LLM jobs: signed=%d completed=%d backend_calls=%lld "
            "api_key_leaks=%d\nfault suite store: replies_owed=%d\n",
            cat_count[C_SIGNED], signed_done,
            (long long)dq_test_llm_calls(llm_srv), leaks, owed);
        printf("fault suite oracle (seed %u, %.1f s): jobs=%zu poison=%d "
               "commits=%zu\n"
               "  lost=%d duplicated_effects=%d committed_early=%d "
               "over_attempts=%d attempts_on_duplicates=%d ran_early=%d "
               "wrong_outcome=%d ran_concurrently_in_a_scope=%d\n"
               "  dlq_records=%d dlq_missing=%d dlq_unexpected=%d "
               "dlq_bad_headers=%d completed_in_dlq=%d (truncated copies: "
               "%d, extra DLQ copies after crashes: %d)\n"
               "  messages never settled=%d, handed back unsettled=%d, "
               "most handlers running in a killed consumer=%zu\n",
               seed, (double)(dq_test_now_ms() - start) / 1000.0, exp_cnt,
               POISON, lg.commit_cnt, lost, twice, committed_early, over,
               dup_att, early, wrong, lg.concurrent, dc.records, dc.missing,
               dc.unexpected, dc.bad_headers, dc.completed_in_dlq, dc.truncated,
               dc.extra_copies, unsettled_at_end, lg.abandoned, lg.most_killed);
        fflush(stdout);

        cr_expect_eq(lost, 0, "lost jobs");
        cr_expect_eq(twice, 0, "effects applied twice");
        cr_expect_eq(committed_early, 0, "offsets committed past unsettled");
        cr_expect_eq(over, 0, "runs over max_attempts");
        cr_expect_eq(early, 0, "runs before scheduled_for or not-before");
        cr_expect_eq(dup_att, 0, "attempts spent on duplicate deliveries");
        cr_expect_eq(dc.completed_in_dlq, 0, "completed jobs in the DLQ");
        cr_expect_gt(dc.truncated, 0, "no oversized poison was cut");
        cr_expect_eq(wrong, 0, "jobs with a wrong terminal state");
        cr_expect_eq(lg.concurrent, 0, "two jobs of a scope ran at once");
        cr_expect_eq(dc.missing, 0, "DLQ records missing");
        cr_expect_eq(dc.unexpected, 0, "unexpected DLQ records");
        cr_expect_eq(dc.bad_headers, 0, "DLQ records with wrong headers");
        cr_expect_eq(unsettled_at_end, 0, "messages never settled");
        cr_expect_gt(lg.commit_cnt, 0);
        cr_expect_gt(lg.most_killed, 0, "no kill -9 hit a running handler");
        cr_expect_eq(leaks, 0, "the LLM API key is in a log or the dump");
        cr_expect_eq(owed, 0, "a store call found replies of runs in flight");
        cr_expect_eq(signed_done, cat_count[C_SIGNED]);
        dq_test_llm_stop(llm_srv);

        rd_kafka_destroy(pk);
        redisFree(r);
        for (size_t i = 0; i < exp_cnt; i++)
                free(exps[i].json);
        for (int i = 0; i < POISON; i++)
                free(poison[i].value);
        for (int t = 0; t < 3; t++)
                for (int p = 0; p < PARTS; p++)
                        free(lg.settled[t][p]);
        free(lg.commits);
        free(lg.open);
        free(exps);
        free(order);
        free(states);
        free(attempts);
}
