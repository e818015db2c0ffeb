/* Metrics and health; see dq_metrics.h. One mutex guards everything: the
 * main loop updates a few times per batch, and a scrape reads it all. */
#define _GNU_SOURCE
#include "dq_metrics.h"

#include <jansson.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_time.h"
#include "banned.h"

/* Histogram bucket bounds, ms. */
static const double bounds[] = {1,   2,   5,    10,   25,   50,    100,
                                250, 500, 1000, 2500, 5000, 10000, 30000};
#define BOUND_CNT (sizeof(bounds) / sizeof(*bounds))

static const struct {
        const char *name;
        const char *help;
} hists[DQ_HIST__CNT] = {
    {"decayq_processing_seconds",
     "Time from claim to settle of a job, in seconds."},
    {"decayq_end_to_end_seconds",
     "Time from the job's produce timestamp to its settle, in seconds."},
    {"decayq_redis_roundtrip_seconds",
     "Time of one pipelined Redis round trip (claims or settles), in "
     "seconds."},
};

static const struct {
        const char *name;
        const char *help;
} events[DQ_EV__CNT] = {
    {"decayq_rebalances_total", "Partition assignments and revocations."},
    {"decayq_commits_total", "Offset commits that succeeded."},
    {"decayq_commit_failures_total", "Offset commits that failed."},
};

typedef struct hist_s {
        uint64_t buckets[BOUND_CNT + 1];
        uint64_t count;
        double sum_ms;
} hist_t;

typedef struct counter_s {
        char *outcome, *kind, *code;
        uint64_t value;
} counter_t;

typedef struct lag_s {
        char *topic;
        int32_t partition;
        int64_t lag;
} lag_t;

struct dq_metrics_s {
        pthread_mutex_t lock;
        counter_t *counters;
        size_t counter_cnt, counter_cap;
        hist_t hist[DQ_HIST__CNT];
        uint64_t events[DQ_EV__CNT];
        dq_gauges_t g;
        lag_t *lags; /* from statistics */
        size_t lag_cnt;
        lag_t *extra; /* measured by the consumer (dq_metrics_extra_lags) */
        size_t extra_cnt;
        int kafka_up; /* brokers UP in the last statistics; -1: none yet */
        int64_t last_tick;
};

dq_metrics_t *dq_metrics_new(void)
{
        dq_metrics_t *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        pthread_mutex_init(&m->lock, NULL);
        m->kafka_up = -1;
        m->last_tick = dq_mono_ms();
        return m;
}

static void lags_free(lag_t **lags, size_t *cnt)
{
        for (size_t i = 0; i < *cnt; i++)
                free((*lags)[i].topic);
        free(*lags);
        *lags = NULL;
        *cnt = 0;
}

void dq_metrics_destroy(dq_metrics_t *m)
{
        if (!m)
                return;
        for (size_t i = 0; i < m->counter_cnt; i++) {
                free(m->counters[i].outcome);
                free(m->counters[i].kind);
                free(m->counters[i].code);
        }
        free(m->counters);
        lags_free(&m->lags, &m->lag_cnt);
        lags_free(&m->extra, &m->extra_cnt);
        pthread_mutex_destroy(&m->lock);
        free(m);
}

static char *dup_or_empty(const char *s)
{
        char *d = strdup(s ? s : "");
        if (!d)
                abort();
        return d;
}

/* Adds one to the counter of (outcome, kind, code). Called locked. */
static void count_locked(dq_metrics_t *m, const char *outcome, const char *kind,
                         const char *code)
{
        counter_t *c = NULL;

        kind = kind ? kind : "";
        code = code ? code : "";
        /* Few distinct label sets (outcomes x kinds x codes): a scan. */
        for (size_t i = 0; i < m->counter_cnt; i++) {
                counter_t *x = &m->counters[i];
                if (!strcmp(x->outcome, outcome) && !strcmp(x->kind, kind) &&
                    !strcmp(x->code, code)) {
                        c = x;
                        break;
                }
        }
        if (!c) {
                if (m->counter_cnt == m->counter_cap) {
                        size_t cap = m->counter_cap ? 2 * m->counter_cap : 32;
                        counter_t *n = realloc(m->counters, cap * sizeof(*n));
                        if (!n)
                                abort();
                        m->counters = n;
                        m->counter_cap = cap;
                }
                c = &m->counters[m->counter_cnt++];
                c->outcome = dup_or_empty(outcome);
                c->kind = dup_or_empty(kind);
                c->code = dup_or_empty(code);
                c->value = 0;
        }
        c->value++;
}

/* Adds ms to histogram h. Called locked. */
static void observe_locked(dq_metrics_t *m, dq_hist_t h, double ms)
{
        hist_t *x = &m->hist[h];
        size_t b = 0;

        if (ms < 0)
                ms = 0;
        while (b < BOUND_CNT && ms > bounds[b])
                b++;
        x->buckets[b]++;
        x->count++;
        x->sum_ms += ms;
}

void dq_metrics_count(dq_metrics_t *m, const char *outcome, const char *kind,
                      const char *code)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        count_locked(m, outcome, kind, code);
        pthread_mutex_unlock(&m->lock);
}

void dq_metrics_observe(dq_metrics_t *m, dq_hist_t h, double ms)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        observe_locked(m, h, ms);
        pthread_mutex_unlock(&m->lock);
}

void dq_metrics_settle(dq_metrics_t *m, const char *outcome, const char *kind,
                       const char *code, double processing_ms,
                       double end_to_end_ms)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        count_locked(m, outcome, kind, code);
        if (processing_ms >= 0)
                observe_locked(m, DQ_HIST_PROCESSING, processing_ms);
        if (end_to_end_ms >= 0)
                observe_locked(m, DQ_HIST_END_TO_END, end_to_end_ms);
        pthread_mutex_unlock(&m->lock);
}

void dq_metrics_event(dq_metrics_t *m, dq_event_t ev)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        m->events[ev]++;
        pthread_mutex_unlock(&m->lock);
}

void dq_metrics_gauges(dq_metrics_t *m, const dq_gauges_t *g)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        m->g = *g;
        pthread_mutex_unlock(&m->lock);
}

void dq_metrics_tick(dq_metrics_t *m)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        m->last_tick = dq_mono_ms();
        pthread_mutex_unlock(&m->lock);
}

void dq_metrics_stats(dq_metrics_t *m, const char *json, size_t len)
{
        json_t *root = m ? json_loadb(json, len, 0, NULL) : NULL;
        json_t *topics, *brokers, *t, *p, *b;
        const char *tname, *pname, *bname;
        lag_t *lags = NULL;
        size_t cnt = 0, cap = 0;
        int up = 0;

        if (!root)
                goto out;
        topics = json_object_get(root, "topics");
        json_object_foreach(topics, tname, t)
        {
                json_object_foreach(json_object_get(t, "partitions"), pname, p)
                {
                        long part = strtol(pname, NULL, 10);
                        json_t *lag = json_object_get(p, "consumer_lag");
                        const char *fs = json_string_value(
                            json_object_get(p, "fetch_state"));

                        if (part < 0 || !json_is_integer(lag) ||
                            json_integer_value(lag) < 0 ||
                            (fs && !strcmp(fs, "none")))
                                continue;
                        if (cnt == cap) {
                                cap = cap ? 2 * cap : 16;
                                lag_t *n = realloc(lags, cap * sizeof(*n));
                                if (!n)
                                        abort();
                                lags = n;
                        }
                        lags[cnt].topic = dup_or_empty(tname);
                        lags[cnt].partition = (int32_t)part;
                        lags[cnt].lag = json_integer_value(lag);
                        cnt++;
                }
        }
        brokers = json_object_get(root, "brokers");
        json_object_foreach(brokers, bname, b)
        {
                const char *st = json_string_value(json_object_get(b, "state"));
                json_t *id = json_object_get(b, "nodeid");
                if (st && !strcmp(st, "UP") && json_integer_value(id) >= 0)
                        up++;
        }
        pthread_mutex_lock(&m->lock);
        lags_free(&m->lags, &m->lag_cnt);
        m->lags = lags;
        m->lag_cnt = cnt;
        m->kafka_up = up;
        pthread_mutex_unlock(&m->lock);
        lags = NULL;
out:
        json_decref(root);
        free(lags);
}

void dq_metrics_extra_lags(dq_metrics_t *m, const char *const *topics,
                           const int32_t *partitions, const int64_t *lags,
                           size_t n)
{
        lag_t *l;

        if (!m)
                return;
        if (!(l = calloc(n ? n : 1, sizeof(*l))))
                abort();
        for (size_t i = 0; i < n; i++) {
                l[i].topic = dup_or_empty(topics[i]);
                l[i].partition = partitions[i];
                l[i].lag = lags[i];
        }
        pthread_mutex_lock(&m->lock);
        lags_free(&m->extra, &m->extra_cnt);
        m->extra = l;
        m->extra_cnt = n;
        pthread_mutex_unlock(&m->lock);
}

static bool has_lag(const dq_metrics_t *m, const lag_t *x)
{
        for (size_t i = 0; i < m->lag_cnt; i++)
                if (m->lags[i].partition == x->partition &&
                    !strcmp(m->lags[i].topic, x->topic))
                        return true;
        return false;
}

/* A growable text buffer. */
typedef struct buf_s {
        char *p;
        size_t len, cap;
} buf_t;

__attribute__((format(printf, 2, 3))) static void put(buf_t *b, const char *fmt,
                                                      ...)
{
        va_list ap;
        int n;

        for (;;) {
                size_t room = b->cap - b->len;
                va_start(ap, fmt);
                n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
                va_end(ap);
                if (n < 0)
                        return;
                if ((size_t)n < room) {
                        b->len += (size_t)n;
                        return;
                }
                b->cap = b->cap ? 2 * b->cap + (size_t)n : 4096 + (size_t)n;
                b->p = realloc(b->p, b->cap);
                if (!b->p)
                        abort();
        }
}

/* Label values are ours (kinds, codes, topics): escape anyway. */
static void put_label(buf_t *b, const char *name, const char *v, bool first)
{
        put(b, "%s%s=\"", first ? "" : ",", name);
        for (; *v; v++) {
                if (*v == '"' || *v == '\\')
                        put(b, "\\%c", *v);
                else if (*v == '\n')
                        put(b, "\\n");
                else
                        put(b, "%c", *v);
        }
        put(b, "\"");
}

char *dq_metrics_render(dq_metrics_t *m, size_t *lenp)
{
        buf_t b = {0};
        int64_t now = dq_mono_ms();

        pthread_mutex_lock(&m->lock);
        put(&b, "# HELP decayq_jobs_total Job messages by outcome, kind and "
                "error code.\n# TYPE decayq_jobs_total counter\n");
        for (size_t i = 0; i < m->counter_cnt; i++) {
                const counter_t *c = &m->counters[i];
                put(&b, "decayq_jobs_total{");
                put_label(&b, "outcome", c->outcome, true);
                put_label(&b, "kind", c->kind, false);
                put_label(&b, "code", c->code, false);
                put(&b, "} %llu\n", (unsigned long long)c->value);
        }
        for (int h = 0; h < DQ_HIST__CNT; h++) {
                const hist_t *x = &m->hist[h];
                uint64_t cum = 0;
                put(&b, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name,
                    hists[h].help, hists[h].name);
                for (size_t i = 0; i < BOUND_CNT; i++) {
                        cum += x->buckets[i];
                        put(&b, "%s_bucket{le=\"%g\"} %llu\n", hists[h].name,
                            bounds[i] / 1000.0, (unsigned long long)cum);
                }
                cum += x->buckets[BOUND_CNT];
                put(&b, "%s_bucket{le=\"+Inf\"} %llu\n", hists[h].name,
                    (unsigned long long)cum);
                put(&b, "%s_sum %.6f\n%s_count %llu\n", hists[h].name,
                    x->sum_ms / 1000.0, hists[h].name,
                    (unsigned long long)x->count);
        }
        for (int e = 0; e < DQ_EV__CNT; e++)
                put(&b, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n",
                    events[e].name, events[e].help, events[e].name,
                    events[e].name, (unsigned long long)m->events[e]);
        put(&b, "# HELP decayq_consumer_lag Messages behind the end of each "
                "assigned partition (librdkafka statistics).\n"
                "# TYPE decayq_consumer_lag gauge\n");
        for (size_t i = 0; i < m->lag_cnt + m->extra_cnt; i++) {
                const lag_t *x =
                    i < m->lag_cnt ? &m->lags[i] : &m->extra[i - m->lag_cnt];
                if ((i >= m->lag_cnt && has_lag(m, x)) || x->lag < 0)
                        continue;
                put(&b, "decayq_consumer_lag{");
                put_label(&b, "topic", x->topic, true);
                put(&b, ",partition=\"%d\"} %lld\n", (int)x->partition,
                    (long long)x->lag);
        }
        put(&b,
            "# HELP decayq_assigned_partitions Partitions assigned.\n"
            "# TYPE decayq_assigned_partitions gauge\n"
            "decayq_assigned_partitions %d\n"
            "# HELP decayq_paused_partitions Partitions paused (delay tiers "
            "not due, Redis outage).\n"
            "# TYPE decayq_paused_partitions gauge\n"
            "decayq_paused_partitions %d\n"
            "# HELP decayq_in_flight_jobs Messages read and not yet "
            "settled.\n"
            "# TYPE decayq_in_flight_jobs gauge\n"
            "decayq_in_flight_jobs %d\n"
            "# HELP decayq_draining 1 while draining after SIGTERM.\n"
            "# TYPE decayq_draining gauge\n"
            "decayq_draining %d\n"
            "# HELP decayq_redis_up 1 when Redis answers.\n"
            "# TYPE decayq_redis_up gauge\n"
            "decayq_redis_up %d\n"
            "# HELP decayq_critical 1 while paused past critical.after.\n"
            "# TYPE decayq_critical gauge\n"
            "decayq_critical %d\n"
            "# HELP decayq_copies_failing Delay or DLQ copies whose send "
            "failed, waiting to be sent again.\n"
            "# TYPE decayq_copies_failing gauge\n"
            "decayq_copies_failing %d\n"
            "# HELP decayq_partitions_blocked Partitions paused because the "
            "DLQ or a delay tier lacks their partition.\n"
            "# TYPE decayq_partitions_blocked gauge\n"
            "decayq_partitions_blocked %d\n"
            "# HELP decayq_fatal 1 after a fatal Kafka client error; the "
            "process exits.\n"
            "# TYPE decayq_fatal gauge\n"
            "decayq_fatal %d\n"
            "# HELP decayq_kafka_brokers_up Brokers connected (librdkafka "
            "statistics; -1 before the first).\n"
            "# TYPE decayq_kafka_brokers_up gauge\n"
            "decayq_kafka_brokers_up %d\n"
            "# HELP decayq_loop_idle_seconds Time since the main loop last "
            "made progress.\n"
            "# TYPE decayq_loop_idle_seconds gauge\n"
            "decayq_loop_idle_seconds %.3f\n",
            m->g.assigned, m->g.paused, m->g.in_flight, m->g.draining,
            m->g.redis_ok, m->g.critical, m->g.copies_failing,
            m->g.parts_blocked, m->g.fatal, m->kafka_up,
            (double)(now - m->last_tick) / 1000.0);
        pthread_mutex_unlock(&m->lock);
        *lenp = b.len;
        return b.p;
}

bool dq_metrics_ready(dq_metrics_t *m, char *why, size_t why_size)
{
        const char *no = NULL;

        char buf[96];

        pthread_mutex_lock(&m->lock);
        if (m->g.fatal)
                no = "kafka: fatal error, exiting";
        else if (m->g.draining)
                no = "draining";
        else if (m->kafka_up == 0)
                no = "kafka: no broker connected";
        else if (!m->g.joined)
                no = "group: not joined";
        else if (!m->g.redis_ok)
                no = "redis: unreachable";
        else if (m->g.critical)
                no = "critical pause";
        else if (m->g.copies_failing) {
                snprintf(buf, sizeof(buf),
                         "copies: %d failed to send, retrying",
                         m->g.copies_failing);
                no = buf;
        } else if (m->g.parts_blocked) {
                snprintf(buf, sizeof(buf),
                         "partitions: %d blocked, the DLQ or a delay tier "
                         "lacks them",
                         m->g.parts_blocked);
                no = buf;
        }
        pthread_mutex_unlock(&m->lock);
        snprintf(why, why_size, "%s", no ? no : "ready");
        return !no;
}

bool dq_metrics_alive(dq_metrics_t *m, int64_t stall_ms, int64_t *since_ms)
{
        int64_t since;

        pthread_mutex_lock(&m->lock);
        since = dq_mono_ms() - m->last_tick;
        pthread_mutex_unlock(&m->lock);
        if (since_ms)
                *since_ms = since;
        return since <= stall_ms;
}
