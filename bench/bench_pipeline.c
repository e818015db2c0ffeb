/* decayq's end-to-end benchmark: producer and consumer throughput against
 * ceilings measured in the same run, open-loop latency, scale-out, and
 * memory and CPU cost. Run it through bench/run, which starts Kafka and
 * Redis; --help lists the sections and their knobs. */
#define _GNU_SOURCE /* asprintf */
#include <errno.h>
#include <getopt.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "dq_attest.h"
#include "dq_envelope.h"
#include "dq_kafka_produce.h"
#include "dq_conf.h"
#include "dq_kafka.h"
#include "dq_job.h"
#include "dq_producer.h"
#include "dq_store.h"
#include "dq_time.h"
#include "banned.h"

#define SCOPES      120
#define MAX_PROCS   8
#define TIERS       "5s,30s,5m,1h"
#define TIER_TOPICS 4

static const char *const tier_names[TIER_TOPICS] = {"5s", "30s", "5m", "1h"};

static const char usage_text[] =
    "usage: bench_pipeline [options]\n"
    "\n"
    "Measures decayq against Kafka and Redis and prints a table, then the\n"
    "same figures as one JSON object (also written to --json FILE).\n"
    "Every job is a candidate_compression of 3 fresh candidate memories\n"
    "with an idempotency key, so every job completes and writes a summary.\n"
    "\n"
    "Sections (--sections, comma-separated; default all):\n"
    "  produce   jobs/s of decay-produce, of the producer library and of a\n"
    "            raw librdkafka loop sending the same bytes and headers\n"
    "  consume   jobs/s of one decay-consumer over a preloaded topic, from\n"
    "            first claim to last commit, against (a) a raw librdkafka\n"
    "            group consumer reading the same topic and (b) redis-\n"
    "            benchmark pipelining the same function calls per job;\n"
    "            with consumer RSS, CPU and Redis bytes per key\n"
    "  latency   open-loop end-to-end latency (produce to settle) at 25%,\n"
    "            50% and 75% of the consume section's rate, beside the\n"
    "            Kafka path alone (a plain consumer of the same records),\n"
    "            and last that path at 50% with nothing of decayq running\n"
    "  scale     jobs/s of 1, 2 and 4 decay-consumer processes\n"
    "  slow      the slow path (not in the default): --slow-jobs jobs with\n"
    "            a 200 ms handler (debug.faults slow:200) over 1,000\n"
    "            scopes through one consumer with max.in.flight=256,\n"
    "            against 256 / 0.2 s; with rebalances and re-run jobs\n"
    "            (each must be 0); then 10 jobs of one scope, which must\n"
    "            run one at a time in offset order\n"
    "  redis     the Redis work of a job alone (not in the default): the\n"
    "            consumer's calls of --jobs jobs, 500 per pipeline, with\n"
    "            no Kafka, repeated --redis-rounds times; jobs/s, Redis\n"
    "            CPU per 1,000 jobs and Redis commands per job, with the\n"
    "            keys and memory Redis held before each round\n"
    "  llm       LLM summaries (not in the default): --llm-jobs signed\n"
    "            llm_summary jobs over 500 scopes through one consumer\n"
    "            with llm.concurrency=128, the test Chat Completions\n"
    "            server answering after 500 ms, against 128 / 0.5 s\n"
    "\n"
    "Options:\n"
    "  -b, --bootstrap H:P     Kafka (default $DQ_TEST_BOOTSTRAP)\n"
    "  -r, --redis H:P         Redis (default $DQ_TEST_REDIS_HOST:PORT)\n"
    "      --bin DIR           where decay-consumer and decay-produce are\n"
    "                          (default: build/)\n"
    "  -n, --jobs N            consume section jobs (default 1000000)\n"
    "      --produce-jobs N    produce section jobs (default 200000)\n"
    "      --scale-jobs N      scale section jobs per run (default 200000)\n"
    "      --slow-jobs N       slow section jobs (default 10000)\n"
    "      --llm-jobs N        llm section jobs (default 5000)\n"
    "      --redis-rounds N    rounds of the redis section (default 3)\n"
    "      --latency-seconds S offered-load time per rate (default 20)\n"
    "      --max-rate R        jobs/s that latency rates are taken of,\n"
    "                          when the consume section is not run\n"
    "      --partitions P      partitions of every topic (default 12)\n"
    "  -X KEY=VALUE            passed to every decay-consumer (e.g.\n"
    "                          batch.size=1000)\n"
    "      --sections LIST     see above\n"
    "      --json FILE         also write the JSON there\n"
    "      --logs DIR          consumer logs (default: a temporary dir)\n"
    "  -h, --help              this help\n"
    "\n"
    "Exit status: 0 when every section ran and every job completed; 1 when\n"
    "a job was lost or failed, or a process failed; 2 for bad usage.\n";

static struct {
        const char *bootstrap;
        char rhost[128];
        int rport;
        const char *bindir;
        const char *json_path;
        char logdir[512];
        long jobs, produce_jobs, scale_jobs, slow_jobs;
        long scopes;       /* jobs spread over this many scopes */
        const char *trace; /* every job's trace_id (slow:MS), or NULL */
        /* llm section: jobs are llm_summary, signed with this key */
        dq_attest_key_t *llm_key;
        long llm_jobs;
        int redis_rounds;
        int latency_s;
        double max_rate;
        int partitions;
        const char *xs[32];
        int xcnt;
        char run[32]; /* unique per run: topics, groups, namespace */
        long next_job;
        redisContext *redis;
        json_t *out;
        int failures;
} B;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fprintf(stderr, "bench: error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        exit(1);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void note(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fprintf(stderr, "bench: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fprintf(stderr, "bench: FAILED: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        B.failures++;
}

/*
 * Jobs: deterministic ids, scopes and sources from the job's index.
 */

static void job_ulid(long i, char out[27])
{
        static const char A[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        uint64_t ms = 1767225600000ULL; /* 2026-01-01T00:00:00Z */

        for (int k = 0; k < 10; k++)
                out[k] = A[(ms >> (45 - 5 * k)) & 31];
        for (int k = 0; k < 16; k++) {
                int shift = 75 - 5 * k;
                out[10 + k] = A[shift >= 64 ? 0 : ((uint64_t)i >> shift) & 31];
        }
        out[26] = '\0';
}

static void job_scope(long i, char *buf, size_t size)
{
        snprintf(buf, size, "bench/s%03ld", i % B.scopes);
}

static int llm_job_json(long i, char *buf, size_t size);

/* The job message for index i; returns its length. */
static int job_json(long i, char *buf, size_t size)
{
        char id[27], scope[32];

        if (B.llm_key)
                return llm_job_json(i, buf, size);
        job_ulid(i, id);
        job_scope(i, scope, sizeof(scope));
        return snprintf(buf, size,
                        "{\"schema\":1,\"id\":\"%s\","
                        "\"kind\":\"candidate_compression\",\"scope\":\"%s\","
                        "\"source_ids\":[\"c%ld-0\",\"c%ld-1\",\"c%ld-2\"],"
                        "\"summary_method\":{\"type\":"
                        "\"deterministic_concatenate\"},"
                        "\"created_at\":\"2026-01-01T00:00:00Z\","
                        "\"created_by\":\"service:bench\","
                        "%s%s%s"
                        "\"idempotency_key\":\"bench-%ld\"}",
                        id, scope, i, i, i, B.trace ? "\"trace_id\":\"" : "",
                        B.trace ? B.trace : "", B.trace ? "\"," : "", i);
}

/*
 * Redis
 */

static redisReply *rcmd(const char *fmt, ...)
{
        va_list ap;
        redisReply *r;

        va_start(ap, fmt);
        r = redisvCommand(B.redis, fmt, ap);
        va_end(ap);
        if (!r)
                die("redis: %s", B.redis->errstr);
        if (r->type == REDIS_REPLY_ERROR)
                die("redis: %s", r->str);
        return r;
}

static void rget_reply(void)
{
        redisReply *r;

        if (redisGetReply(B.redis, (void **)&r) != REDIS_OK)
                die("redis: %s", B.redis->errstr);
        if (r->type == REDIS_REPLY_ERROR)
                die("redis: %s", r->str);
        freeReplyObject(r);
}

/* Writes the 3 source memories of jobs [first, first + n). */
static void preload_memories(long first, long n)
{
        const int depth = 3000;
        int queued = 0;

        for (long i = first; i < first + n; i++) {
                char scope[32];
                job_scope(i, scope, sizeof(scope));
                for (int k = 0; k < 3; k++) {
                        char key[128], claim[64], created[32];
                        snprintf(key, sizeof(key), "%s:mem:{%s}:c%ld-%d", B.run,
                                 scope, i, k);
                        snprintf(claim, sizeof(claim),
                                 "fact %ld.%d remembered by the bench", i, k);
                        snprintf(created, sizeof(created), "%ld", 3 * i + k);
                        redisAppendCommand(B.redis,
                                           "HSET %s type candidate status "
                                           "active claim %s created_at %s",
                                           key, claim, created);
                        if (++queued == depth) {
                                while (queued--)
                                        rget_reply();
                                queued = 0;
                        }
                }
        }
        while (queued-- > 0)
                rget_reply();
}

/* A number from INFO's section, e.g. info_num("cpu", "used_cpu_user"). */
static double info_num(const char *section, const char *field)
{
        redisReply *r = rcmd("INFO %s", section);
        double v = 0;
        char *p = strstr(r->str, field);

        if (p && p[strlen(field)] == ':')
                v = strtod(p + strlen(field) + 1, NULL);
        freeReplyObject(r);
        return v;
}

static double redis_cpu_s(void)
{
        return info_num("cpu", "used_cpu_user") +
               info_num("cpu", "used_cpu_sys");
}

/* Rewrites the AOF and waits for it, so that no rewrite started by the
 * preload falls inside a measured window. */
static void aof_settle(void)
{
        /* One the preload started may be running: wait for it first. */
        for (int i = 0; i < 6000; i++) {
                if (info_num("persistence", "aof_rewrite_in_progress") == 0)
                        break;
                usleep(50000);
        }
        freeReplyObject(rcmd("BGREWRITEAOF"));
        for (int i = 0; i < 6000; i++) {
                if (info_num("persistence", "aof_rewrite_in_progress") == 0 &&
                    info_num("persistence", "aof_rewrite_scheduled") == 0)
                        return;
                usleep(50000);
        }
}

/* Rewrites of the AOF since Redis started: each one forks a child that
 * takes a core for seconds, which a measured window should name. */
static long aof_rewrites(void)
{
        return (long)info_num("persistence", "aof_rewrites");
}

/* Redis's latency monitor, which times its main thread's events over a
 * threshold: the longest fdatasync of the AOF, fork and command since the
 * last LATENCY RESET (ms, 0 when none went over). */
#define STALL_THRESHOLD_MS 5

typedef struct stalls_s {
        double fsync, fork, command;
} stalls_t;

static void stalls_watch(int threshold_ms)
{
        freeReplyObject(
            rcmd("CONFIG SET latency-monitor-threshold %d", threshold_ms));
        freeReplyObject(rcmd("LATENCY RESET"));
}

static stalls_t stalls_take(void)
{
        redisReply *r = rcmd("LATENCY LATEST");
        stalls_t st = {0};

        for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements;
             i++) {
                redisReply *e = r->element[i];
                if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
                    e->element[0]->type != REDIS_REPLY_STRING ||
                    e->element[3]->type != REDIS_REPLY_INTEGER)
                        continue;
                const char *name = e->element[0]->str;
                double max = (double)e->element[3]->integer;
                if (!strcmp(name, "aof-fsync-always"))
                        st.fsync = max;
                else if (!strcmp(name, "fork"))
                        st.fork = max;
                else if (!strcmp(name, "command") ||
                         !strcmp(name, "fast-command"))
                        st.command = max > st.command ? max : st.command;
        }
        freeReplyObject(r);
        freeReplyObject(rcmd("LATENCY RESET"));
        return st;
}

typedef struct outcome_s {
        long completed, other, missing;
        int64_t first_claim, last_settle; /* ms */
        long rerun; /* completed jobs that took more than one attempt */
        int64_t *settled_at; /* per job, when asked for */
} outcome_t;

/* Reads the state of jobs [first, first + n). */
static void job_outcomes(long first, long n, outcome_t *o, bool per_job)
{
        const long depth = 2000;

        memset(o, 0, sizeof(*o));
        o->first_claim = INT64_MAX;
        if (per_job && !(o->settled_at = calloc((size_t)n, sizeof(int64_t))))
                die("out of memory");
        for (long b = 0; b < n; b += depth) {
                long m = n - b < depth ? n - b : depth;
                for (long j = 0; j < m; j++) {
                        char id[27], scope[32];
                        job_ulid(first + b + j, id);
                        job_scope(first + b + j, scope, sizeof(scope));
                        redisAppendCommand(B.redis,
                                           "HMGET %s:job:{%s}:%s state "
                                           "created_at completed_at attempts",
                                           B.run, scope, id);
                }
                for (long j = 0; j < m; j++) {
                        redisReply *r;
                        if (redisGetReply(B.redis, (void **)&r) != REDIS_OK)
                                die("redis: %s", B.redis->errstr);
                        redisReply **e = r->element;
                        if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
                            e[0]->type != REDIS_REPLY_STRING) {
                                o->missing++;
                        } else if (!strcmp(e[0]->str, "completed") &&
                                   e[1]->type == REDIS_REPLY_STRING &&
                                   e[2]->type == REDIS_REPLY_STRING) {
                                int64_t c = strtoll(e[1]->str, NULL, 10);
                                int64_t s = strtoll(e[2]->str, NULL, 10);
                                o->completed++;
                                if (e[3]->type == REDIS_REPLY_STRING &&
                                    strcmp(e[3]->str, "1"))
                                        o->rerun++;
                                if (c < o->first_claim)
                                        o->first_claim = c;
                                if (s > o->last_settle)
                                        o->last_settle = s;
                                if (per_job)
                                        o->settled_at[b + j] = s;
                        } else {
                                o->other++;
                        }
                        freeReplyObject(r);
                }
        }
}

/* MEMORY USAGE averaged over up to 1000 keys of one type. */
static double bytes_per_key(const char *type, long first, long n)
{
        long step = n / 1000 > 0 ? n / 1000 : 1, cnt = 0;
        double sum = 0;

        for (long i = first; i < first + n; i += step) {
                char id[27], scope[32], key[160];
                job_scope(i, scope, sizeof(scope));
                if (!strcmp(type, "idem")) {
                        snprintf(key, sizeof(key), "%s:idem:{%s}:bench-%ld",
                                 B.run, scope, i);
                } else {
                        job_ulid(i, id);
                        snprintf(key, sizeof(key), "%s:%s:{%s}:%s", B.run, type,
                                 scope, id);
                }
                redisReply *r = rcmd("MEMORY USAGE %s SAMPLES 0", key);
                if (r->type == REDIS_REPLY_INTEGER) {
                        sum += (double)r->integer;
                        cnt++;
                }
                freeReplyObject(r);
        }
        return cnt ? sum / (double)cnt : 0;
}

/*
 * Kafka
 */

static rd_kafka_conf_t *kconf(void)
{
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        char errstr[256];

        if (rd_kafka_conf_set(c, "bootstrap.servers", B.bootstrap, errstr,
                              sizeof(errstr)) != RD_KAFKA_CONF_OK)
                die("%s", errstr);
        return c;
}

static void kset(rd_kafka_conf_t *c, const char *k, const char *v)
{
        char errstr[256];

        if (rd_kafka_conf_set(c, k, v, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK)
                die("%s", errstr);
}

/* Creates <name>.jobs, .dlq and the delay tiers. */
static void make_topics(const char *name)
{
        char errstr[512], *t[2 + TIER_TOPICS];
        rd_kafka_t *rk;

        if (asprintf(&t[0], "%s.%s.jobs", B.run, name) < 0 ||
            asprintf(&t[1], "%s.%s.dlq", B.run, name) < 0)
                die("out of memory");
        for (int i = 0; i < TIER_TOPICS; i++)
                if (asprintf(&t[2 + i], "%s.%s.delay.%s", B.run, name,
                             tier_names[i]) < 0)
                        die("out of memory");
        if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, kconf(), errstr,
                                sizeof(errstr))))
                die("%s", errstr);
        for (int tries = 0;; tries++) {
                if (dq_kafka_create_topics(rk, (const char *const *)t,
                                           2 + TIER_TOPICS, B.partitions,
                                           DQ_COPY_MAX_BYTES(1 << 20), 30000,
                                           errstr, sizeof(errstr)) == DQ_OK)
                        break;
                if (tries == 5)
                        die("creating topics: %s", errstr);
                sleep(1);
        }
        rd_kafka_destroy(rk);
        for (int i = 0; i < 2 + TIER_TOPICS; i++)
                free(t[i]);
}

static char *topic_of(const char *name, const char *what)
{
        char *t;

        if (asprintf(&t, "%s.%s.%s", B.run, name, what) < 0)
                die("out of memory");
        return t;
}

/*
 * The producer library, used to preload and to offer load.
 */

typedef struct sent_s {
        long acked, failed;
} sent_t;

static void lib_dr(const dq_delivery_t *d, void *opaque)
{
        sent_t *s = opaque;

        if (d->err == DQ_OK)
                s->acked++;
        else
                s->failed++;
}

static dq_producer_t *lib_producer(const char *topic, sent_t *sent)
{
        char errstr[512], xb[256], xt[256];
        char *X[] = {xb, xt};
        dq_conf_t *conf;
        dq_producer_t *p;

        snprintf(xb, sizeof(xb), "kafka.bootstrap.servers=%s", B.bootstrap);
        snprintf(xt, sizeof(xt), "topic.jobs=%s", topic);
        if (!(conf = dq_conf_load(NULL, X, 2, errstr, sizeof(errstr))))
                die("%s", errstr);
        if (!(p = dq_producer_new(conf, lib_dr, sent, errstr, sizeof(errstr))))
                die("%s", errstr);
        dq_conf_destroy(conf);
        return p;
}

static void lib_send(dq_producer_t *p, long i)
{
        char buf[2048], errstr[256];
        dq_reject_t rej;
        int len = job_json(i, buf, sizeof(buf));

        if (dq_producer_send(p, buf, (size_t)len, NULL, NULL, &rej, errstr,
                             sizeof(errstr)) != DQ_OK)
                die("send job %ld: %s %s", i, rej.code ? rej.code : "", errstr);
}

static void lib_finish(dq_producer_t *p, sent_t *sent, long n)
{
        if (dq_producer_flush(p, 120000) != DQ_OK || sent->acked != n)
                die("producer: %ld of %ld acknowledged", sent->acked, n);
}

/* Publishes jobs [first, first + n) to topic with the producer library. */
static void preload_jobs(const char *topic, long first, long n)
{
        sent_t sent = {0};
        dq_producer_t *p = lib_producer(topic, &sent);

        for (long i = first; i < first + n; i++) {
                lib_send(p, i);
                if ((i & 1023) == 0)
                        dq_producer_poll(p, 0);
        }
        lib_finish(p, &sent, n);
        dq_producer_destroy(p);
}

/* A fresh set of topics holding jobs [first, first + n), with their
 * memories in Redis. */
static void preload(const char *name, long first, long n)
{
        char *topic = topic_of(name, "jobs");
        int64_t t0 = bench_mono_us();

        make_topics(name);
        note("%s: preloading %ld jobs and %ld memories", name, n, 3 * n);
        preload_memories(first, n);
        preload_jobs(topic, first, n);
        aof_settle();
        note("%s: preloaded in %.1f s", name,
             (double)(bench_mono_us() - t0) / 1e6);
        free(topic);
}

/*
 * decay-consumer processes and the committed offsets of their group
 */

typedef struct fleet_s {
        int cnt;
        pid_t pid[MAX_PROCS];
        char group[96];
        rd_kafka_t *watch; /* same group.id, never joins */
        rd_kafka_topic_partition_list_t *parts;
        int64_t end;      /* sum of high watermarks */
        int64_t peak_rss; /* largest sample, any process */
        int64_t last_rss; /* last sample before done, process 0 */
        double cpu_s;     /* all processes, at done */
} fleet_t;

static void fleet_start(fleet_t *f, const char *name, int cnt)
{
        char *argv[64], *own[32];
        int a = 0, o = 0;
        char errstr[512], log[600];

        memset(f, 0, sizeof(*f));
        f->cnt = cnt;
        snprintf(f->group, sizeof(f->group), "%s.%s", B.run, name);

#define OWN(...)                                        \
        do {                                            \
                if (asprintf(&own[o], __VA_ARGS__) < 0) \
                        die("out of memory");           \
                argv[a++] = "-X";                       \
                argv[a++] = own[o++];                   \
        } while (0)
        if (asprintf(&argv[a++], "%s/consumer/decay-consumer", B.bindir) < 0)
                die("out of memory");
        OWN("kafka.bootstrap.servers=%s", B.bootstrap);
        OWN("kafka.group.id=%s", f->group);
        OWN("topic.jobs=%s.%s.jobs", B.run, name);
        OWN("topic.dlq=%s.%s.dlq", B.run, name);
        OWN("topic.delay.prefix=%s.%s.delay.", B.run, name);
        OWN("delay.tiers=%s", TIERS);
        OWN("redis.host=%s", B.rhost);
        OWN("redis.port=%d", B.rport);
        OWN("redis.namespace=%s", B.run);
        OWN("summary.interval=0");
#undef OWN
        for (int i = 0; i < B.xcnt; i++) {
                argv[a++] = "-X";
                argv[a++] = (char *)B.xs[i];
        }
        argv[a] = NULL;
        for (int i = 0; i < cnt; i++) {
                snprintf(log, sizeof(log), "%s/%s.%d.log", B.logdir, name, i);
                if ((f->pid[i] = bench_spawn(argv, log)) < 0)
                        die("spawn %s: %s", argv[0], strerror(errno));
        }
        free(argv[0]);
        for (int i = 0; i < o; i++)
                free(own[i]);

        /* The watcher reads the group's committed offsets. */
        rd_kafka_conf_t *kc = kconf();
        kset(kc, "group.id", f->group);
        if (!(f->watch =
                  rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr))))
                die("%s", errstr);
        char *topic = topic_of(name, "jobs");
        f->parts = rd_kafka_topic_partition_list_new(B.partitions);
        for (int p = 0; p < B.partitions; p++) {
                int64_t lo, hi;
                rd_kafka_topic_partition_list_add(f->parts, topic, p);
                if (rd_kafka_query_watermark_offsets(f->watch, topic, p, &lo,
                                                     &hi, 10000))
                        die("watermarks of %s[%d]", topic, p);
                f->end += hi;
        }
        free(topic);
}

/* Committed messages of the group, summed over partitions. */
static int64_t fleet_committed(fleet_t *f)
{
        int64_t sum = 0;

        if (rd_kafka_committed(f->watch, f->parts, 10000))
                return -1;
        for (int i = 0; i < f->parts->cnt; i++)
                if (f->parts->elems[i].offset >= 0)
                        sum += f->parts->elems[i].offset;
        return sum;
}

static void fleet_sample(fleet_t *f)
{
        for (int i = 0; i < f->cnt; i++) {
                int64_t rss = bench_rss(f->pid[i]);
                if (rss > f->peak_rss)
                        f->peak_rss = rss;
                if (i == 0 && rss > 0)
                        f->last_rss = rss;
        }
}

/* Waits until the group has committed every message, sampling memory on
 * the way; returns the wall time (ms) at which it saw that, or 0 if a
 * process died or nothing moved for 60 s. *steady gets the rate between
 * 10% and 90% of the messages committed. */
static int64_t fleet_wait(fleet_t *f, const char *name, double *steady)
{
        int64_t last = -1, moved = dq_mono_ms(), t10 = 0, t90 = 0, c10 = 0,
                c90 = 0, next_note = dq_mono_ms() + 5000;

        for (;;) {
                int64_t c = fleet_committed(f);
                int64_t now = dq_mono_ms();
                if (c != last) {
                        last = c;
                        moved = now;
                }
                if (!t10 && c >= f->end / 10) {
                        t10 = now;
                        c10 = c;
                }
                if (!t90 && c >= f->end * 9 / 10) {
                        t90 = now;
                        c90 = c;
                }
                if (c >= f->end) {
                        for (int i = 0; i < f->cnt; i++) {
                                double cpu = bench_cpu_s(f->pid[i]);
                                if (cpu > 0)
                                        f->cpu_s += cpu;
                        }
                        *steady = t90 > t10 ? (double)(c90 - c10) * 1000.0 /
                                                  (double)(t90 - t10)
                                            : 0;
                        return dq_now_ms();
                }
                for (int i = 0; i < f->cnt; i++) {
                        int status;
                        if (waitpid(f->pid[i], &status, WNOHANG) == f->pid[i]) {
                                fail("%s: consumer %d exited (status %d); "
                                     "see %s/%s.%d.log",
                                     name, i, status, B.logdir, name, i);
                                f->pid[i] = 0;
                                return 0;
                        }
                }
                if (now - moved > 60000) {
                        fail("%s: no commit progress for 60 s at %lld of "
                             "%lld",
                             name, (long long)c, (long long)f->end);
                        return 0;
                }
                if (now >= next_note) {
                        note("%s: %lld of %lld committed", name, (long long)c,
                             (long long)f->end);
                        next_note = now + 5000;
                }
                fleet_sample(f);
                usleep(20000);
        }
}

static void fleet_stop(fleet_t *f, const char *name)
{
        for (int i = 0; i < f->cnt; i++) {
                if (!f->pid[i])
                        continue;
                int status = bench_stop(f->pid[i], 30000);
                if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        fail("%s: consumer %d did not drain cleanly "
                             "(status %d)",
                             name, i, status);
        }
        rd_kafka_topic_partition_list_destroy(f->parts);
        rd_kafka_destroy(f->watch);
}

typedef struct consumed_s {
        double rate, steady, cpu_s, redis_cpu_s;
        int64_t peak_rss, last_rss;
        long completed, rerun;
        long rewrites; /* AOF rewrites during the run */
} consumed_t;

/* Runs cnt consumers over jobs [first, first + n) already in topics
 * `name`, and checks that every job completed. */
static bool consume(const char *name, int cnt, long first, long n,
                    consumed_t *out)
{
        fleet_t f;
        outcome_t o;
        double rcpu0 = redis_cpu_s();
        long rw0 = aof_rewrites();
        int64_t done;

        memset(out, 0, sizeof(*out));
        note("%s: %d decay-consumer process%s over %ld jobs", name, cnt,
             cnt > 1 ? "es" : "", n);
        fleet_start(&f, name, cnt);
        done = fleet_wait(&f, name, &out->steady);
        out->redis_cpu_s = redis_cpu_s() - rcpu0;
        out->rewrites = aof_rewrites() - rw0;
        fleet_stop(&f, name);
        if (!done)
                return false;
        job_outcomes(first, n, &o, false);
        out->completed = o.completed;
        out->rerun = o.rerun;
        if (o.completed != n) {
                fail("%s: %ld of %ld jobs completed (%ld other, %ld "
                     "without state)",
                     name, o.completed, n, o.other, o.missing);
                return false;
        }
        out->rate = (double)n * 1000.0 / (double)(done - o.first_claim);
        out->cpu_s = f.cpu_s;
        out->peak_rss = f.peak_rss;
        out->last_rss = f.last_rss;
        return true;
}

/*
 * Ceiling (b): the Redis calls of jobs [first, first + n) alone, exactly as
 * a consumer makes them (one decayq_run per job, through the store,
 * batch.size per pipeline), with no Kafka in between. Returns jobs/s;
 * *cpu gets Redis CPU-s per 1,000 jobs.
 */

static double store_ceiling(long first, long n, int batch, double *cpu)
{
        char host[160], port[64], ns[96], errstr[512], json[1024];
        char *X[] = {host, port, ns, "redis.allow.unsafe=false"};
        dq_conf_t *conf;
        dq_store_t *st;
        dq_store_run_t *runs = calloc((size_t)batch, sizeof(*runs));
        dq_job_t **jobs = calloc((size_t)batch, sizeof(*jobs));
        char(*msgs)[48] = calloc((size_t)batch, sizeof(*msgs));
        long done = 0;
        double rcpu0;
        int64_t t0;

        snprintf(host, sizeof(host), "redis.host=%s", B.rhost);
        snprintf(port, sizeof(port), "redis.port=%d", B.rport);
        snprintf(ns, sizeof(ns), "redis.namespace=%s", B.run);
        conf = dq_conf_load(NULL, X, 4, errstr, sizeof(errstr));
        if (!conf || !runs || !jobs || !msgs ||
            !(st = dq_store_new(conf, "bench-ceiling", errstr, sizeof(errstr))))
                die("store ceiling: %s", errstr);
        rcpu0 = redis_cpu_s();
        t0 = bench_mono_us();
        for (long b = first; b < first + n; b += batch) {
                int m = (int)(first + n - b < batch ? first + n - b : batch);
                for (int i = 0; i < m; i++) {
                        dq_reject_t rej;
                        int len = job_json(b + i, json, sizeof(json));
                        if (!(jobs[i] = dq_job_parse(json, (size_t)len, 1 << 20,
                                                     &rej)))
                                die("store ceiling: %s", rej.message);
                        snprintf(msgs[i], sizeof(msgs[i]), "ceiling/0/%ld",
                                 b + i);
                        runs[i] =
                            (dq_store_run_t){.claim = {.job = jobs[i],
                                                       .msg = msgs[i],
                                                       .copy_attempts = -1}};
                }
                if (dq_store_run(st, runs, (size_t)m, dq_now_ms()) != DQ_OK)
                        die("store ceiling: redis failed");
                for (int i = 0; i < m; i++) {
                        done += runs[i].claim.status == DQ_CLAIM_CLAIMED &&
                                runs[i].settle.err == DQ_OK;
                        dq_job_destroy(jobs[i]);
                }
        }
        double secs = (double)(bench_mono_us() - t0) / 1e6;
        *cpu = (redis_cpu_s() - rcpu0) * 1000.0 / (double)n;
        dq_store_destroy(st);
        dq_conf_destroy(conf);
        free(runs);
        free(jobs);
        free(msgs);
        if (done != n)
                fail("store ceiling: %ld of %ld jobs completed", done, n);
        return (double)n / secs;
}

/*
 * Ceiling (a): a plain group consumer that only reads.
 */

/* A plain group consumer of topic from its start, committing nothing; c
 * (consumed) may carry settings of its own. */
static rd_kafka_t *group_consumer(rd_kafka_conf_t *c, const char *group,
                                  const char *topic)
{
        char errstr[512];
        rd_kafka_t *rk;
        rd_kafka_topic_partition_list_t *sub;

        kset(c, "group.id", group);
        kset(c, "auto.offset.reset", "earliest");
        kset(c, "partition.assignment.strategy", "range");
        kset(c, "enable.auto.commit", "false");
        if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof(errstr))))
                die("%s", errstr);
        rd_kafka_poll_set_consumer(rk);
        sub = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(sub, topic, RD_KAFKA_PARTITION_UA);
        if (rd_kafka_subscribe(rk, sub))
                die("subscribe %s", topic);
        rd_kafka_topic_partition_list_destroy(sub);
        return rk;
}

static double raw_consume(const char *name, long n)
{
        char group[128];
        rd_kafka_t *rk;
        char *topic = topic_of(name, "jobs");
        int64_t t0 = 0, t1 = 0;
        long got = 0;

        snprintf(group, sizeof(group), "%s.%s.raw", B.run, name);
        rk = group_consumer(kconf(), group, topic);
        int64_t deadline = dq_mono_ms() + 120000;
        while (got < n && dq_mono_ms() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
                if (!m)
                        continue;
                if (!m->err) {
                        if (!got)
                                t0 = bench_mono_us();
                        got++;
                        t1 = bench_mono_us();
                }
                rd_kafka_message_destroy(m);
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
        free(topic);
        if (got < n) {
                fail("raw consumer read %ld of %ld", got, n);
                return 0;
        }
        return (double)n * 1e6 / (double)(t1 - t0 + 1);
}

/*
 * Output
 */

static void row(const char *what, double v, const char *unit)
{
        /* Counts as they are; fractions to 3 figures or so. */
        printf("  %-52s %14.*f %s\n", what,
               v == (double)(long long)v ? 0
               : v < 1                   ? 3
               : v < 10                  ? 2
                                         : 0,
               v, unit);
}

/* Sets o[k] to v (stolen); a value that cannot be built or set ends the
 * run, so that results.json is never short of a figure. */
static void jset(json_t *o, const char *k, json_t *v)
{
        if (!o || !v || json_object_set_new(o, k, v))
                die("cannot record '%s' in the results", k);
}

static void jappend(json_t *a, json_t *v)
{
        if (!a || !v || json_array_append_new(a, v))
                die("cannot record a row in the results");
}

static json_t *section(const char *name)
{
        json_t *s = json_object();

        jset(B.out, name, s);
        return s;
}

static void jnum(json_t *o, const char *k, double v)
{
        jset(o, k, json_real(round(v * 1000) / 1000));
}

/*
 * Section: produce
 */

static double raw_produce(const char *topic, long first, long n)
{
        char errstr[512], buf[1024];
        rd_kafka_conf_t *c = kconf();
        rd_kafka_t *rk;
        int64_t t0;

        /* The producer library's settings. */
        kset(c, "enable.idempotence", "true");
        kset(c, "acks", "all");
        kset(c, "linger.ms", "5");
        kset(c, "compression.codec", "lz4");
        if (!(rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr))))
                die("%s", errstr);
        t0 = bench_mono_us();
        for (long i = first; i < first + n; i++) {
                char scope[32];
                int len = job_json(i, buf, sizeof(buf));
                rd_kafka_headers_t *h = rd_kafka_headers_new(2);
                job_scope(i, scope, sizeof(scope));
                rd_kafka_header_add(h, DQ_HDR_SCHEMA, -1, DQ_ENVELOPE_SCHEMA,
                                    -1);
                rd_kafka_resp_err_t err =
                    dq_kafka_produce(rk, &(dq_kafka_record_t){
                                             .topic = topic,
                                             .partition = RD_KAFKA_PARTITION_UA,
                                             .key = scope,
                                             .key_len = strlen(scope),
                                             .value = buf,
                                             .len = (size_t)len,
                                             .headers = h,
                                         });
                if (err)
                        die("produce: %s", rd_kafka_err2str(err));
                rd_kafka_poll(rk, 0);
        }
        if (rd_kafka_flush(rk, 120000))
                die("raw producer: flush timed out");
        double rate = (double)n * 1e6 / (double)(bench_mono_us() - t0);
        rd_kafka_destroy(rk);
        return rate;
}

static double lib_produce(const char *topic, long first, long n)
{
        sent_t sent = {0};
        dq_producer_t *p = lib_producer(topic, &sent);
        int64_t t0 = bench_mono_us();

        for (long i = first; i < first + n; i++) {
                lib_send(p, i);
                dq_producer_poll(p, 0);
        }
        lib_finish(p, &sent, n);
        double rate = (double)n * 1e6 / (double)(bench_mono_us() - t0);
        dq_producer_destroy(p);
        return rate;
}

static double cli_produce(const char *topic, long first, long n)
{
        char path[600], cmd[2048], buf[1024];
        FILE *f;
        int64_t t0;
        int status;

        snprintf(path, sizeof(path), "%s/produce.ndjson", B.logdir);
        if (!(f = fopen(path, "w")))
                die("%s: %s", path, strerror(errno));
        for (long i = first; i < first + n; i++) {
                job_json(i, buf, sizeof(buf));
                fprintf(f, "%s\n", buf);
        }
        fclose(f);
        snprintf(cmd, sizeof(cmd),
                 "%s/producer/decay-produce -q -X "
                 "kafka.bootstrap.servers=%s -t %s -f %s >%s/produce.log 2>&1",
                 B.bindir, B.bootstrap, topic, path, B.logdir);
        t0 = bench_mono_us();
        status = system(cmd);
        double rate = (double)n * 1e6 / (double)(bench_mono_us() - t0);
        if (status != 0) {
                fail("decay-produce exited %d; see %s/produce.log", status,
                     B.logdir);
                return 0;
        }
        unlink(path);
        return rate;
}

static void run_produce(void)
{
        long n = B.produce_jobs, first;
        json_t *s = section("produce");
        char *t_raw, *t_lib, *t_cli;

        make_topics("p-raw");
        make_topics("p-lib");
        make_topics("p-cli");
        t_raw = topic_of("p-raw", "jobs");
        t_lib = topic_of("p-lib", "jobs");
        t_cli = topic_of("p-cli", "jobs");
        first = B.next_job;
        B.next_job += n;
        note("produce: %ld jobs each: raw librdkafka, library, decay-produce",
             n);
        double raw = raw_produce(t_raw, first, n);
        double lib = lib_produce(t_lib, first, n);
        double cli = cli_produce(t_cli, first, n);
        char sample[1024];
        int size = job_json(first, sample, sizeof(sample));
        printf("\nproducer throughput (%ld jobs of %d bytes, %d partitions, "
               "acks=all, idempotent, lz4, linger 5 ms)\n",
               n, size, B.partitions);
        row("raw librdkafka produce loop (ceiling)", raw, "jobs/s");
        row("producer library (validates each job)", lib, "jobs/s");
        row("decay-produce CLI (reads NDJSON, whole process)", cli, "jobs/s");
        row("library / raw", lib / raw, "");
        row("decay-produce / raw", cli / raw, "");
        jset(s, "jobs", json_integer(n));
        jnum(s, "raw_jobs_per_s", raw);
        jnum(s, "library_jobs_per_s", lib);
        jnum(s, "cli_jobs_per_s", cli);
        jnum(s, "library_ratio", lib / raw);
        jnum(s, "cli_ratio", cli / raw);
        free(t_raw);
        free(t_lib);
        free(t_cli);
}

/*
 * Section: consume
 */

static void run_consume(void)
{
        long n = B.jobs, first = B.next_job;
        json_t *s = section("consume");
        consumed_t c;

        B.next_job += n;
        preload("consume", first, n);
        if (!consume("consume", 1, first, n, &c))
                return;
        note("consume: ceiling (a), a raw group consumer");
        double raw = raw_consume("consume", n);
        /* In the same database, after the consumer's jobs: it pays for
         * the same keyspace size. */
        long cn = n < 200000 ? n : 200000, cfirst = B.next_job;
        double ceil_cpu = 0;
        B.next_job += cn;
        note("consume: ceiling (b), the same Redis calls alone, %ld jobs", cn);
        preload_memories(cfirst, cn);
        aof_settle();
        double redis = store_ceiling(cfirst, cn, 500, &ceil_cpu);
        double ceil = raw < redis ? raw : redis;
        double state_b = bytes_per_key("job", first, n);
        double idem_b = bytes_per_key("idem", first, n);

        B.max_rate = c.rate;
        printf("\nconsumer throughput (%ld preloaded jobs, 1 process, first "
               "claim to last commit)\n",
               n);
        row("decay-consumer", c.rate, "jobs/s");
        row("decay-consumer, 10% to 90% committed", c.steady, "jobs/s");
        row("(a) raw librdkafka group consumer, read only", raw, "jobs/s");
        row("(b) the same Redis calls alone, 500 per pipeline", redis,
            "jobs/s");
        row("ratio to min(a, b)", c.rate / ceil, "");
        printf("\nmemory and cost\n");
        row("consumer RSS, steady state (end of run)",
            (double)c.last_rss / 1048576.0, "MiB");
        row("consumer RSS, peak", (double)c.peak_rss / 1048576.0, "MiB");
        row("consumer CPU per 1,000 jobs", c.cpu_s * 1000.0 / (double)n,
            "CPU-s");
        row("Redis CPU per 1,000 jobs", c.redis_cpu_s * 1000.0 / (double)n,
            "CPU-s");
        row("Redis CPU per 1,000 jobs, the calls alone (b)", ceil_cpu, "CPU-s");
        row("Redis AOF rewrites during the run (each a forked child)",
            (double)c.rewrites, "");
        row("Redis bytes per retained job state (MEMORY USAGE)", state_b, "B");
        row("Redis bytes per idempotency key (MEMORY USAGE)", idem_b, "B");
        jset(s, "jobs", json_integer(n));
        jnum(s, "jobs_per_s", c.rate);
        jnum(s, "steady_jobs_per_s", c.steady);
        jnum(s, "raw_consume_jobs_per_s", raw);
        jnum(s, "redis_ceiling_jobs_per_s", redis);
        jnum(s, "redis_ceiling_cpu_s_per_1000_jobs", ceil_cpu);
        jnum(s, "ratio_to_ceiling", c.rate / ceil);
        jnum(s, "rss_steady_bytes", (double)c.last_rss);
        jnum(s, "rss_peak_bytes", (double)c.peak_rss);
        jnum(s, "cpu_s_per_1000_jobs", c.cpu_s * 1000.0 / (double)n);
        jnum(s, "redis_cpu_s_per_1000_jobs",
             c.redis_cpu_s * 1000.0 / (double)n);
        jset(s, "aof_rewrites", json_integer(c.rewrites));
        jnum(s, "redis_bytes_per_job_state", state_b);
        jnum(s, "redis_bytes_per_idempotency_key", idem_b);
}

/*
 * Section: redis
 */

/* The calls of commands other than FCALL and the bench's own, from INFO
 * commandstats: the commands the functions ran. */
static long inner_calls(void)
{
        redisReply *r = rcmd("INFO commandstats");
        long calls = 0;

        for (char *p = r->str; (p = strstr(p, "cmdstat_"));) {
                char name[64];
                long c;
                if (sscanf(p, "cmdstat_%63[^:]:calls=%ld", name, &c) == 2 &&
                    strcmp(name, "fcall") && strcmp(name, "info") &&
                    strncmp(name, "config", 6) && strcmp(name, "ping"))
                        calls += c;
                p += 8;
        }
        freeReplyObject(r);
        return calls;
}

static void run_redis(void)
{
        json_t *s = section("redis"), *rounds = json_array();
        double best_rate = 0, best_cpu = 0;
        long n = B.jobs, cmds = 0;

        if (!rounds || json_object_set_new(s, "rounds", rounds))
                die("%s", "out of memory");
        printf("\nRedis work of a job alone (%ld jobs a round, one "
               "decayq_run each, 500 per pipeline, no Kafka)\n",
               n);
        for (int i = 0; i < B.redis_rounds; i++) {
                long first = B.next_job;
                double cpu = 0, rate, mem;
                char what[64];
                json_t *o = json_object();
                redisReply *keys;

                B.next_job += n;
                note("redis: round %d of %d, %ld jobs", i + 1, B.redis_rounds,
                     n);
                preload_memories(first, n);
                aof_settle();
                freeReplyObject(rcmd("CONFIG RESETSTAT"));
                keys = rcmd("DBSIZE");
                mem = info_num("memory", "used_memory");
                rate = store_ceiling(first, n, 500, &cpu);
                cmds = inner_calls();
                /* What a job costs grows with the keyspace it works in. */
                snprintf(what, sizeof(what), "round %d: keys in Redis before",
                         i + 1);
                row(what, (double)keys->integer, "");
                snprintf(what, sizeof(what),
                         "round %d: Redis memory before (used_memory)", i + 1);
                row(what, mem / 1048576.0, "MiB");
                snprintf(what, sizeof(what), "round %d: jobs/s", i + 1);
                row(what, rate, "jobs/s");
                snprintf(what, sizeof(what),
                         "round %d: Redis CPU per 1,000 jobs", i + 1);
                row(what, cpu, "CPU-s");
                if (!o || json_array_append_new(rounds, o))
                        die("%s", "out of memory");
                jset(o, "keys_before", json_integer(keys->integer));
                jnum(o, "used_memory_before_bytes", mem);
                jnum(o, "jobs_per_s", rate);
                jnum(o, "redis_cpu_s_per_1000_jobs", cpu);
                freeReplyObject(keys);
                if (rate > best_rate)
                        best_rate = rate;
                if (!best_cpu || cpu < best_cpu)
                        best_cpu = cpu;
        }
        row("best jobs/s", best_rate, "jobs/s");
        row("least Redis CPU per 1,000 jobs", best_cpu, "CPU-s");
        row("Redis commands per job inside decayq_run",
            (double)cmds / (double)n, "");
        jset(s, "jobs", json_integer(n));
        jnum(s, "jobs_per_s", best_rate);
        jnum(s, "redis_cpu_s_per_1000_jobs", best_cpu);
        jnum(s, "commands_per_job", (double)cmds / (double)n);
}

/*
 * Section: latency
 */

static int cmp_i64(const void *a, const void *b)
{
        int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
        return x < y ? -1 : x > y;
}

static double pct(const int64_t *v, long n, double p)
{
        long i = (long)ceil(p / 100.0 * (double)n) - 1;
        return (double)v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

/*
 * The Kafka path alone, beside the consumer: a plain group consumer of its
 * own reads the latency topic, with decay-consumer's fetch settings, and
 * notes for each record its produce timestamp and how old it was when it
 * could first be read. What lies under every end-to-end figure before
 * decayq does anything.
 */
typedef struct watch_s {
        pthread_t tid;
        rd_kafka_t *rk;
        atomic_int stop;
        int64_t *ts, *age; /* per record read: produce time, age then (ms) */
        long cap;
        atomic_long cnt;
} watch_t;

static void *watch_main(void *arg)
{
        watch_t *w = arg;

        while (!atomic_load(&w->stop)) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(w->rk, 100);
                long i = atomic_load(&w->cnt);
                if (!m)
                        continue;
                if (!m->err && i < w->cap) {
                        w->ts[i] = rd_kafka_message_timestamp(m, NULL);
                        w->age[i] = dq_now_ms() - w->ts[i];
                        atomic_store(&w->cnt, i + 1);
                }
                rd_kafka_message_destroy(m);
        }
        return NULL;
}

static void watch_start(watch_t *w, const char *topic, long cap)
{
        char group[128], errstr[256];
        rd_kafka_conf_t *c = kconf();

        memset(w, 0, sizeof(*w));
        w->cap = cap;
        w->ts = calloc((size_t)cap, sizeof(*w->ts));
        w->age = calloc((size_t)cap, sizeof(*w->age));
        if (!w->ts || !w->age)
                die("%s", "out of memory");
        snprintf(group, sizeof(group), "%s.latency.watch", B.run);
        if (dq_kafka_conf_prefetch(c, errstr, sizeof(errstr)) != DQ_OK)
                die("%s", errstr);
        w->rk = group_consumer(c, group, topic);
        if (pthread_create(&w->tid, NULL, watch_main, w))
                die("%s", "pthread_create failed");
}

static void watch_stop(watch_t *w)
{
        atomic_store(&w->stop, 1);
        pthread_join(w->tid, NULL);
        rd_kafka_consumer_close(w->rk);
        rd_kafka_destroy(w->rk);
        free(w->ts);
        free(w->age);
}

/* Waits up to 30 s until w has read cnt records; false if it has not. */
static bool watch_wait(watch_t *w, long cnt)
{
        for (int i = 0; i < 600 && atomic_load(&w->cnt) < cnt; i++)
                usleep(50000);
        return atomic_load(&w->cnt) >= cnt;
}

/* The p50 and p99 age of the records produced in [from, to) ms. */
static void watch_pct(watch_t *w, int64_t from, int64_t to, double *p50,
                      double *p99)
{
        long cnt = atomic_load(&w->cnt), n = 0;
        int64_t *v = malloc((size_t)(cnt ? cnt : 1) * sizeof(*v));

        if (!v)
                die("%s", "out of memory");
        for (long i = 0; i < cnt; i++)
                if (w->ts[i] >= from && w->ts[i] < to)
                        v[n++] = w->age[i];
        qsort(v, (size_t)n, sizeof(*v), cmp_i64);
        *p50 = n ? pct(v, n, 50) : -1;
        *p99 = n ? pct(v, n, 99) : -1;
        free(v);
}

/* Waits until every job of [first, first + n) is completed. */
static bool wait_settled(long first, long n, outcome_t *o)
{
        for (int i = 0; i < 600; i++) {
                job_outcomes(first, n, o, true);
                if (o->completed == n)
                        return true;
                free(o->settled_at);
                o->settled_at = NULL;
                usleep(200000);
        }
        fail("latency: %ld of %ld jobs completed", o->completed, n);
        return false;
}

static void offer(dq_producer_t *p, double rate, long first, long n,
                  int64_t *intended)
{
        struct timespec ts;
        int64_t wall0 = dq_now_ms() * 1000, mono0;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        mono0 = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        for (long i = 0; i < n; i++) {
                int64_t at = mono0 + (int64_t)((double)i * 1e9 / rate);
                struct timespec due = {.tv_sec = at / 1000000000,
                                       .tv_nsec = at % 1000000000};
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due,
                                       NULL) == EINTR)
                        ;
                /* Latency counts from when the job was due, not from when
                 * it went out: a stalled sender cannot hide a delay. */
                intended[i] = wall0 + (at - mono0) / 1000;
                lib_send(p, first + i);
                dq_producer_poll(p, 0);
        }
}

/*
 * The Kafka path with nothing of decayq running: the same producer and the
 * same plain consumer as beside the consumer, at one rate, on a topic of
 * its own, once decay-consumer has stopped. No due-to-settle figure on this
 * machine can go under it. Returns false when the records were not all
 * read.
 */
static bool kafka_floor(double rate, double *p50, double *p99)
{
        long n = (long)(rate * B.latency_s), first = B.next_job;
        int64_t *due = calloc((size_t)n, sizeof(*due)), from, to;
        char *topic;
        sent_t sent = {0};
        watch_t w;
        bool ok;

        if (!due)
                die("%s", "out of memory");
        B.next_job += n + 1;
        make_topics("kafka");
        topic = topic_of("kafka", "jobs");
        dq_producer_t *p = lib_producer(topic, &sent);
        watch_start(&w, topic, n + 1);
        /* One record through first: the group has joined and the
         * producer knows the partitions' leader. */
        lib_send(p, first);
        dq_producer_flush(p, 30000);
        watch_wait(&w, 1);
        note("latency: the Kafka path alone, %.0f records/s for %d s", rate,
             B.latency_s);
        from = dq_now_ms();
        offer(p, rate, first + 1, n, due);
        dq_producer_flush(p, 60000);
        to = dq_now_ms() + 1;
        if (!(ok = watch_wait(&w, n + 1)))
                fail("latency: the Kafka path alone: %ld of %ld records read",
                     atomic_load(&w.cnt) - 1, n);
        watch_pct(&w, from, to, p50, p99);
        watch_stop(&w);
        dq_producer_destroy(p);
        free(topic);
        free(due);
        return ok;
}

static void run_latency(void)
{
        static const double loads[] = {0.25, 0.50, 0.75};
        json_t *s = section("latency"), *arr = json_array();
        long total = 0, first = B.next_job, at;
        fleet_t f;
        outcome_t o;
        sent_t sent = {0};
        char *topic;
        double idle50, idle99;

        if (B.max_rate <= 0) {
                fail("latency: no maximum rate (run consume, or give "
                     "--max-rate)");
                return;
        }
        for (int k = 0; k < 3; k++)
                total += (long)(loads[k] * B.max_rate * B.latency_s);
        total += 1; /* warm-up job */
        B.next_job += total;
        make_topics("latency");
        note("latency: preloading %ld memories", 3 * total);
        preload_memories(first, total);
        aof_settle();
        topic = topic_of("latency", "jobs");
        dq_producer_t *p = lib_producer(topic, &sent);
        watch_t w;
        watch_start(&w, topic, total);
        fleet_start(&f, "latency", 1);

        /* One job through first: the group has joined and Redis is warm;
         * the watching consumer has read it too. */
        lib_send(p, first);
        dq_producer_flush(p, 30000);
        if (!wait_settled(first, 1, &o)) {
                fleet_stop(&f, "latency");
                watch_stop(&w);
                return;
        }
        watch_wait(&w, 1);
        free(o.settled_at);
        at = first + 1;

        printf("\nend-to-end latency, open loop (due time to settle, ms; %d "
               "s per rate; 1 consumer; rewrites: Redis AOF rewrites in the "
               "window;\nkafka: a plain consumer beside it, produce "
               "timestamp to first read;\nfsync, fork, cmd: Redis's "
               "longest AOF fdatasync, fork and command in the window, ms, "
               "0 if none over %d)\n",
               B.latency_s, STALL_THRESHOLD_MS);
        printf("  %-8s %9s %8s %8s %8s %8s %8s %8s %8s %9s %9s %6s %6s %6s\n",
               "load", "jobs/s", "jobs", "p50", "p90", "p99", "p99.9", "max",
               "rewrites", "kafka p50", "kafka p99", "fsync", "fork", "cmd");
        for (int k = 0; k < 3; k++) {
                double rate = loads[k] * B.max_rate;
                long n = (long)(rate * B.latency_s);
                int64_t *due = calloc((size_t)n, sizeof(*due));
                if (!due)
                        die("out of memory");
                long rw0, rewrites;
                /* Each rate starts from a rewritten AOF, as the first
                 * does: the AOF of a small bench keyspace doubles within
                 * a minute, one of a deployment's keyspace in hours, and
                 * a rewrite forks a child that takes one of the 2 cores.
                 * A rewrite that still falls inside a window is counted
                 * in its row. */
                if (k > 0)
                        aof_settle();
                rw0 = aof_rewrites();
                stalls_watch(STALL_THRESHOLD_MS);
                note("latency: %.0f%% load, %.0f jobs/s for %d s",
                     loads[k] * 100, rate, B.latency_s);
                int64_t from = dq_now_ms();
                offer(p, rate, at, n, due);
                dq_producer_flush(p, 60000);
                int64_t to = dq_now_ms() + 1;
                if (!wait_settled(at, n, &o)) {
                        free(due);
                        break;
                }
                rewrites = aof_rewrites() - rw0;
                stalls_t st = stalls_take();
                double k50, k99;
                watch_pct(&w, from, to, &k50, &k99);
                for (long i = 0; i < n; i++)
                        due[i] = o.settled_at[i] - due[i] / 1000;
                qsort(due, (size_t)n, sizeof(*due), cmp_i64);
                double q[5] = {pct(due, n, 50), pct(due, n, 90),
                               pct(due, n, 99), pct(due, n, 99.9),
                               (double)due[n - 1]};
                printf("  %-8.0f %9.0f %8ld %8.0f %8.0f %8.0f %8.0f %8.0f "
                       "%8ld %9.0f %9.0f %6.0f %6.0f %6.0f\n",
                       loads[k] * 100, rate, n, q[0], q[1], q[2], q[3], q[4],
                       rewrites, k50, k99, st.fsync, st.fork, st.command);
                json_t *r = json_object();
                jnum(r, "load", loads[k]);
                jnum(r, "offered_jobs_per_s", rate);
                jset(r, "jobs", json_integer(n));
                jnum(r, "p50_ms", q[0]);
                jnum(r, "p90_ms", q[1]);
                jnum(r, "p99_ms", q[2]);
                jnum(r, "p99_9_ms", q[3]);
                jnum(r, "max_ms", q[4]);
                jset(r, "aof_rewrites", json_integer(rewrites));
                jnum(r, "kafka_p50_ms", k50);
                jnum(r, "kafka_p99_ms", k99);
                jnum(r, "redis_fsync_max_ms", st.fsync);
                jnum(r, "redis_fork_max_ms", st.fork);
                jnum(r, "redis_command_max_ms", st.command);
                jappend(arr, r);
                free(o.settled_at);
                free(due);
                at += n;
        }
        stalls_watch(0);
        fleet_sample(&f);
        jset(s, "rates", arr);
        jnum(s, "max_jobs_per_s", B.max_rate);
        jnum(s, "rss_bytes", (double)f.last_rss);
        fleet_stop(&f, "latency");
        watch_stop(&w);
        dq_producer_destroy(p);
        free(topic);
        /* Last, on a broker the rates have warmed (its JIT, its heap), with
         * the consumer stopped and no AOF rewrite running. */
        aof_settle();
        if (kafka_floor(loads[1] * B.max_rate, &idle50, &idle99)) {
                printf("  the Kafka path alone, nothing of decayq running, "
                       "%.0f records/s: p50 %.0f ms, p99 %.0f ms\n",
                       loads[1] * B.max_rate, idle50, idle99);
                jnum(s, "kafka_alone_idle_p50_ms", idle50);
                jnum(s, "kafka_alone_idle_p99_ms", idle99);
        }
}

/*
 * Section: scale
 */

static void run_scale(void)
{
        static const int procs[] = {1, 2, 4};
        json_t *s = section("scale"), *arr = json_array();
        long n = B.scale_jobs;
        double base = 0;

        printf("\nscale (%ld preloaded jobs per run, %d partitions)\n", n,
               B.partitions);
        printf("  %-10s %14s %14s %11s\n", "processes", "jobs/s",
               "steady jobs/s", "efficiency");
        for (int k = 0; k < 3; k++) {
                char name[32];
                long first = B.next_job;
                consumed_t c;

                B.next_job += n;
                snprintf(name, sizeof(name), "scale-%d", procs[k]);
                preload(name, first, n);
                if (!consume(name, procs[k], first, n, &c))
                        continue;
                if (k == 0)
                        base = c.rate;
                double eff = base > 0 ? c.rate / (base * procs[k]) : 0;
                printf("  %-10d %14.0f %14.0f %11.2f\n", procs[k], c.rate,
                       c.steady, eff);
                json_t *r = json_object();
                jset(r, "processes", json_integer(procs[k]));
                jnum(r, "jobs_per_s", c.rate);
                jnum(r, "steady_jobs_per_s", c.steady);
                jnum(r, "efficiency", eff);
                jnum(r, "cpu_s_per_1000_jobs", c.cpu_s * 1000.0 / (double)n);
                jappend(arr, r);
        }
        jset(s, "jobs", json_integer(n));
        jset(s, "runs", arr);
}

/*
 * Section: slow
 */

/* Lines of a consumer log that contain what, before the signal that
 * stopped it (leaving the group revokes its partitions). */
static long log_lines(const char *name, int proc, const char *what)
{
        char path[600], *line = NULL;
        size_t cap = 0;
        long n = 0;
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s.%d.log", B.logdir, name, proc);
        if (!(f = fopen(path, "r")))
                return -1;
        while (getline(&line, &cap, f) > 0 && !strstr(line, "stage=signal"))
                n += strstr(line, what) != NULL;
        free(line);
        fclose(f);
        return n;
}

/* Runs jobs [first, first + n) with handler trace over scopes scopes
 * through one consumer; false when a job did not complete. */
static bool slow_run(const char *name, long first, long n, long scopes,
                     consumed_t *c)
{
        long saved = B.scopes;
        int xcnt = B.xcnt;
        bool ok;

        B.scopes = scopes;
        B.trace = "slow:200";
        if (B.xcnt + 2 > 32)
                die("too many -X options");
        B.xs[B.xcnt++] = "debug.faults=true";
        B.xs[B.xcnt++] = "max.in.flight=256";
        preload(name, first, n);
        ok = consume(name, 1, first, n, c);
        B.xcnt = xcnt;
        B.trace = NULL;
        B.scopes = saved;
        return ok;
}

static void run_slow(void)
{
        const double handler_s = 0.2, in_flight = 256;
        const double ceil = in_flight / handler_s;
        json_t *s = section("slow");
        long n = B.slow_jobs, first = B.next_job;
        long revoked, assigned;
        consumed_t c;

        B.next_job += n;
        if (!slow_run("slow", first, n, 1000, &c))
                return;
        revoked = log_lines("slow", 0, "event=revoked");
        assigned = log_lines("slow", 0, "event=assigned");
        if (revoked != 0 || assigned != 1)
                fail("slow: %ld assignments and %ld revokes (want 1 and 0)",
                     assigned, revoked);
        if (c.rerun)
                fail("slow: %ld jobs ran more than once (a lease lost)",
                     c.rerun);
        printf("\nslow path (%ld jobs with a 200 ms handler over 1,000 "
               "scopes, 1 process, max.in.flight=256)\n",
               n);
        row("decay-consumer", c.rate, "jobs/s");
        row("ceiling, max.in.flight / handler time", ceil, "jobs/s");
        row("ratio to the ceiling", c.rate / ceil, "");
        row("consumer CPU per 1,000 jobs", c.cpu_s * 1000.0 / (double)n,
            "CPU-s");
        row("consumer RSS, peak", (double)c.peak_rss / 1048576.0, "MiB");
        row("revokes before the stop", (double)revoked, "");
        row("jobs run more than once", (double)c.rerun, "");
        jset(s, "jobs", json_integer(n));
        jnum(s, "jobs_per_s", c.rate);
        jnum(s, "ceiling_jobs_per_s", ceil);
        jnum(s, "ratio_to_ceiling", c.rate / ceil);
        jnum(s, "cpu_s_per_1000_jobs", c.cpu_s * 1000.0 / (double)n);
        jnum(s, "rss_peak_bytes", (double)c.peak_rss);
        jset(s, "revokes", json_integer(revoked));
        jset(s, "rerun", json_integer(c.rerun));

        /* Ten jobs of one scope: one at a time, in offset order. */
        enum { ORDER = 10 };
        int64_t start[ORDER], end[ORDER];
        long bad = 0;
        first = B.next_job;
        B.next_job += ORDER;
        if (!slow_run("order", first, ORDER, 1, &c))
                return;
        for (int i = 0; i < ORDER; i++) {
                char id[27], scope[32];
                redisReply *r;
                job_ulid(first + i, id);
                B.scopes = 1;
                job_scope(first + i, scope, sizeof(scope));
                B.scopes = SCOPES;
                r = rcmd("HMGET %s:job:{%s}:%s started_at completed_at", B.run,
                         scope, id);
                start[i] = r->element[0]->str ? atoll(r->element[0]->str) : 0;
                end[i] = r->element[1]->str ? atoll(r->element[1]->str) : 0;
                freeReplyObject(r);
                if (!start[i] || end[i] < start[i] ||
                    (i && start[i] < end[i - 1]))
                        bad++;
        }
        if (bad)
                fail("order: %ld of %d jobs of one scope overlapped the one "
                     "before or ran out of order",
                     bad, ORDER);
        printf("\none scope, %d jobs with a 200 ms handler\n", ORDER);
        row("ran one at a time, in offset order", bad ? 0 : 1, "(1 = yes)");
        row("first start to last completion",
            (double)(end[ORDER - 1] - start[0]), "ms");
        jset(s, "order_jobs", json_integer(ORDER));
        jset(s, "order_violations", json_integer(bad));
        jnum(s, "order_span_ms", (double)(end[ORDER - 1] - start[0]));
}

/*
 * Section: llm
 */

#define LLM_MODEL "bench-model"

/* Job i as a signed llm_summary job (the llm section). */
static int llm_job_json(long i, char *buf, size_t size)
{
        char id[27], scope[32], plain[1024], err[256] = "", *out = NULL;
        dq_reject_t rej;
        dq_job_t *job;
        size_t len = 0;
        int64_t now = dq_now_ms();

        job_ulid(i, id);
        job_scope(i, scope, sizeof(scope));
        snprintf(plain, sizeof(plain),
                 "{\"schema\":1,\"id\":\"%s\","
                 "\"kind\":\"candidate_compression\",\"scope\":\"%s\","
                 "\"source_ids\":[\"c%ld-0\",\"c%ld-1\",\"c%ld-2\"],"
                 "\"summary_method\":{\"type\":\"llm_summary\"},"
                 "\"created_at\":\"2026-01-01T00:00:00Z\","
                 "\"created_by\":\"service:bench\","
                 "\"idempotency_key\":\"bench-%ld\"}",
                 id, scope, i, i, i, i);
        if (!(job = dq_job_parse(plain, strlen(plain), 1 << 20, &rej)))
                die("llm job %ld: %s", i, rej.message);
        if (!dq_attest_sign(job, B.llm_key, LLM_MODEL, 128, now - 60000,
                            now + 6 * 3600 * 1000LL, err, sizeof(err)) ||
            !(out = dq_job_serialize(job, &len)) || len >= size)
                die("llm job %ld: cannot sign (%s)", i, err);
        memcpy(buf, out, len + 1);
        free(out);
        dq_job_destroy(job);
        return (int)len;
}

/* Starts the test Chat Completions server answering after delay_ms;
 * writes its base URL to url. */
static pid_t llm_server(int delay_ms, char *url, size_t size)
{
        char *argv[8], delay[16], log[600];
        pid_t pid;
        int64_t until = dq_mono_ms() + 10000;

        snprintf(delay, sizeof(delay), "%d", delay_ms);
        if (asprintf(&argv[0], "%s/tests/dq-test-llm", B.bindir) < 0)
                die("out of memory");
        argv[1] = "--model";
        argv[2] = LLM_MODEL;
        argv[3] = "--delay-ms";
        argv[4] = delay;
        argv[5] = NULL;
        snprintf(log, sizeof(log), "%s/llm-server.log", B.logdir);
        if ((pid = bench_spawn(argv, log)) < 0)
                die("spawn %s: %s", argv[0], strerror(errno));
        free(argv[0]);
        while (dq_mono_ms() < until) {
                FILE *f = fopen(log, "r");
                url[0] = '\0';
                if (f) {
                        if (fgets(url, (int)size, f))
                                url[strcspn(url, "\n")] = '\0';
                        fclose(f);
                }
                if (!strncmp(url, "http://", 7))
                        return pid;
                usleep(20000);
        }
        die("the test LLM server did not start; see %s", log);
        return -1;
}

static void run_llm(void)
{
        const double call_s = 0.5, cap = 128;
        const double ceil = cap / call_s;
        json_t *s = section("llm");
        long n = B.llm_jobs, first = B.next_job, saved = B.scopes;
        int xcnt = B.xcnt;
        dq_attest_key_t key;
        unsigned char pk[DQ_ATTEST_PK_LEN];
        char url[256], line[256], path[600];
        static char xurl[300], xsigners[700];
        consumed_t c;
        pid_t srv;
        FILE *f;
        bool ok;

        B.next_job += n;
        if (!dq_attest_keygen("bench@ops", &key, pk) ||
            !dq_attest_signers_line(&key, line, sizeof(line)))
                die("cannot make a signing key");
        snprintf(path, sizeof(path), "%s/allowed_signers", B.logdir);
        if (!(f = fopen(path, "w")))
                die("%s: %s", path, strerror(errno));
        fprintf(f, "%s\n", line);
        fclose(f);
        srv = llm_server((int)(call_s * 1000), url, sizeof(url));
        snprintf(xurl, sizeof(xurl), "llm.base.url=%s", url);
        snprintf(xsigners, sizeof(xsigners), "llm.allowed.signers=%s", path);
        if (B.xcnt + 6 > 32)
                die("too many -X options");
        B.xs[B.xcnt++] = xurl;
        B.xs[B.xcnt++] = "llm.model=" LLM_MODEL;
        B.xs[B.xcnt++] = xsigners;
        B.xs[B.xcnt++] = "llm.concurrency=128";
        B.xs[B.xcnt++] = "max.in.flight=256";
        B.xs[B.xcnt++] = "llm.timeout=30s";
        B.scopes = 500;
        B.llm_key = &key;
        preload("llm", first, n);
        ok = consume("llm", 1, first, n, &c);
        B.llm_key = NULL;
        B.scopes = saved;
        B.xcnt = xcnt;
        bench_stop(srv, 10000);
        memset(&key, 0, sizeof(key));
        if (!ok)
                return;
        printf("\nLLM summaries (%ld signed jobs over 500 scopes, the test "
               "server answering after 500 ms, llm.concurrency=128)\n",
               n);
        row("decay-consumer", c.rate, "jobs/s");
        row("ceiling, llm.concurrency / call time", ceil, "jobs/s");
        row("ratio to the ceiling", c.rate / ceil, "");
        row("consumer CPU per 1,000 jobs", c.cpu_s * 1000.0 / (double)n,
            "CPU-s");
        row("consumer RSS, peak", (double)c.peak_rss / 1048576.0, "MiB");
        row("jobs run more than once", (double)c.rerun, "");
        jset(s, "jobs", json_integer(n));
        jnum(s, "jobs_per_s", c.rate);
        jnum(s, "ceiling_jobs_per_s", ceil);
        jnum(s, "ratio_to_ceiling", c.rate / ceil);
        jnum(s, "cpu_s_per_1000_jobs", c.cpu_s * 1000.0 / (double)n);
        jnum(s, "rss_peak_bytes", (double)c.peak_rss);
        jset(s, "rerun", json_integer(c.rerun));
}

/*
 * main
 */

static long num_arg(const char *opt, const char *v, long min)
{
        char *end;
        errno = 0;
        long n = strtol(v, &end, 10);

        if (errno || end == v || *end || n < min) {
                fprintf(stderr,
                        "bench: error: %s: expected an integer >= %ld, got "
                        "'%s'\n\n%s",
                        opt, min, v, usage_text);
                exit(2);
        }
        return n;
}

static void usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

static void usage_error(const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        fprintf(stderr, "bench: error: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n\n%s", usage_text);
        va_end(ap);
        exit(2);
}

static void host_port(const char *v, char *host, size_t size, int *port)
{
        const char *colon = strrchr(v, ':');

        if (!colon || colon == v || (size_t)(colon - v) >= size)
                usage_error("--redis: expected HOST:PORT, got '%s'", v);
        memcpy(host, v, (size_t)(colon - v));
        host[colon - v] = '\0';
        *port = (int)num_arg("--redis", colon + 1, 1);
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"bootstrap", required_argument, NULL, 'b'},
            {"redis", required_argument, NULL, 'r'},
            {"bin", required_argument, NULL, 'B'},
            {"jobs", required_argument, NULL, 'n'},
            {"produce-jobs", required_argument, NULL, 'P'},
            {"scale-jobs", required_argument, NULL, 'S'},
            {"slow-jobs", required_argument, NULL, 'W'},
            {"llm-jobs", required_argument, NULL, 'G'},
            {"redis-rounds", required_argument, NULL, 'Q'},
            {"latency-seconds", required_argument, NULL, 'L'},
            {"max-rate", required_argument, NULL, 'M'},
            {"partitions", required_argument, NULL, 'p'},
            {"sections", required_argument, NULL, 's'},
            {"json", required_argument, NULL, 'j'},
            {"logs", required_argument, NULL, 'l'},
            {"help", no_argument, NULL, 'h'},
            {NULL, 0, NULL, 0}};
        const char *sections = "produce,consume,latency,scale";
        const char *env;
        int opt;

        B.bootstrap = getenv("DQ_TEST_BOOTSTRAP");
        snprintf(B.rhost, sizeof(B.rhost), "%s",
                 (env = getenv("DQ_TEST_REDIS_HOST")) ? env : "127.0.0.1");
        B.rport = (env = getenv("DQ_TEST_REDIS_PORT")) ? atoi(env) : 6379;
        B.bindir = "build";
        B.jobs = 1000000;
        B.produce_jobs = 200000;
        B.scale_jobs = 200000;
        B.slow_jobs = 10000;
        B.llm_jobs = 5000;
        B.redis_rounds = 3;
        B.scopes = SCOPES;
        B.latency_s = 20;
        B.partitions = 12;

        while ((opt = getopt_long(argc, argv, "b:r:n:X:h", opts, NULL)) != -1) {
                switch (opt) {
                case 'b':
                        B.bootstrap = optarg;
                        break;
                case 'r':
                        host_port(optarg, B.rhost, sizeof(B.rhost), &B.rport);
                        break;
                case 'B':
                        B.bindir = optarg;
                        break;
                case 'n':
                        B.jobs = num_arg("--jobs", optarg, 100);
                        break;
                case 'P':
                        B.produce_jobs = num_arg("--produce-jobs", optarg, 100);
                        break;
                case 'S':
                        B.scale_jobs = num_arg("--scale-jobs", optarg, 100);
                        break;
                case 'W':
                        B.slow_jobs = num_arg("--slow-jobs", optarg, 10);
                        break;
                case 'G':
                        B.llm_jobs = num_arg("--llm-jobs", optarg, 10);
                        break;
                case 'Q':
                        if (num_arg("--redis-rounds", optarg, 1) > 100)
                                usage_error("--redis-rounds: at most 100, "
                                            "got '%s'",
                                            optarg);
                        B.redis_rounds = atoi(optarg);
                        break;
                case 'L':
                        B.latency_s =
                            (int)num_arg("--latency-seconds", optarg, 1);
                        break;
                case 'M':
                        B.max_rate = (double)num_arg("--max-rate", optarg, 1);
                        break;
                case 'p':
                        B.partitions = (int)num_arg("--partitions", optarg, 1);
                        break;
                case 's':
                        sections = optarg;
                        break;
                case 'j':
                        B.json_path = optarg;
                        break;
                case 'l':
                        snprintf(B.logdir, sizeof(B.logdir), "%s", optarg);
                        break;
                case 'X':
                        if (!strchr(optarg, '=') || B.xcnt == 32)
                                usage_error("-X: expected KEY=VALUE, got '%s'",
                                            optarg);
                        B.xs[B.xcnt++] = optarg;
                        break;
                case 'h':
                        fputs(usage_text, stdout);
                        return 0;
                default:
                        fprintf(stderr, "\n%s", usage_text);
                        return 2;
                }
        }
        if (optind < argc)
                usage_error("unexpected argument '%s'", argv[optind]);
        if (!B.bootstrap)
                usage_error("%s", "no Kafka: give --bootstrap or set "
                                  "DQ_TEST_BOOTSTRAP");
        for (const char *p = sections; *p;) {
                size_t len = strcspn(p, ",");
                if (!((len == 7 && !strncmp(p, "produce", 7)) ||
                      (len == 7 && !strncmp(p, "consume", 7)) ||
                      (len == 7 && !strncmp(p, "latency", 7)) ||
                      (len == 5 && !strncmp(p, "scale", 5)) ||
                      (len == 4 && !strncmp(p, "slow", 4)) ||
                      (len == 5 && !strncmp(p, "redis", 5)) ||
                      (len == 3 && !strncmp(p, "llm", 3))))
                        usage_error("--sections: unknown section in '%s'",
                                    sections);
                p += len + (p[len] == ',');
        }
        if (B.logdir[0] && mkdir(B.logdir, 0755) && errno != EEXIST)
                die("%s: %s", B.logdir, strerror(errno));
        if (!B.logdir[0]) {
                snprintf(B.logdir, sizeof(B.logdir), "%s/decayq-bench.XXXXXX",
                         (env = getenv("TMPDIR")) ? env : "/tmp");
                if (!mkdtemp(B.logdir))
                        die("mkdtemp: %s", strerror(errno));
        }
        /* As long as the default namespace "decayq", so that key sizes are
         * what a deployment sees. */
        snprintf(B.run, sizeof(B.run), "b%05d", (int)getpid() % 100000);
        struct timeval tv = {30, 0};
        if (!(B.redis = redisConnectWithTimeout(B.rhost, B.rport, tv)) ||
            B.redis->err)
                die("redis %s:%d: %s", B.rhost, B.rport,
                    B.redis ? B.redis->errstr : "out of memory");
        B.out = json_object();
        jset(B.out, "machine", json_string(bench_machine()));
        printf("decayq benchmark: %s; logs in %s\n", bench_machine(), B.logdir);
        fflush(stdout);

        if (strstr(sections, "produce"))
                run_produce();
        fflush(stdout);
        if (strstr(sections, "consume"))
                run_consume();
        fflush(stdout);
        if (strstr(sections, "latency"))
                run_latency();
        fflush(stdout);
        if (strstr(sections, "scale"))
                run_scale();
        fflush(stdout);
        if (strstr(sections, "slow"))
                run_slow();
        if (strstr(sections, "redis"))
                run_redis();
        if (strstr(sections, "llm"))
                run_llm();

        jset(B.out, "failures", json_integer(B.failures));
        char *js = json_dumps(B.out, JSON_COMPACT);
        printf("\n%s\n", js);
        if (B.json_path) {
                FILE *f = fopen(B.json_path, "w");
                if (!f || fprintf(f, "%s\n", js) < 0 || fclose(f))
                        die("%s: %s", B.json_path, strerror(errno));
        }
        free(js);
        json_decref(B.out);
        redisFree(B.redis);
        return B.failures ? 1 : 0;
}
