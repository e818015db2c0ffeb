/* The Prometheus text exposition of the metrics (dq_metrics_render()). */
#include "dq_metrics_int.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_time.h"
#include "banned.h"

static const struct {
        const char *name;
        const char *help;
} hists[DQ_HIST__CNT] = {
    {"decayq_processing_seconds",
     "Time from claim to settle of a job, in seconds."},
    {"decayq_end_to_end_seconds",
     "Time from the job's produce timestamp to its settle, in seconds."},
    {"decayq_redis_roundtrip_seconds",
     "Time from sending one pipelined Redis round trip (claims, runs or "
     "settles) to reading its last reply, in seconds. Runs left in flight "
     "while the loop reads the next batch include the time their replies "
     "waited to be read."},
    {"decayq_llm_call_seconds", "Time of one LLM backend call, in seconds."},
    {"decayq_read_age_seconds",
     "Time from a job record's produce timestamp to the consumer reading "
     "it, in seconds (the jobs topic; delay-tier copies are not counted)."},
};

static const struct {
        const char *name;
        const char *help;
} events[DQ_EV__CNT] = {
    {"decayq_rebalances_total", "Partition assignments and revocations."},
    {"decayq_commits_total", "Offset commits that succeeded."},
    {"decayq_commit_failures_total", "Offset commits that failed."},
};

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
        put(&b, "# HELP decayq_llm_calls_total LLM backend calls by class "
                "(ok, retryable, fatal, no_blame) and reason code.\n"
                "# TYPE decayq_llm_calls_total counter\n");
        for (size_t i = 0; i < m->llm_cnt; i++) {
                const counter_t *c = &m->llm[i];
                if (strcmp(c->outcome, "call"))
                        continue;
                put(&b, "decayq_llm_calls_total{");
                put_label(&b, "class", c->kind, true);
                put_label(&b, "code", c->code, false);
                put(&b, "} %llu\n", (unsigned long long)c->value);
        }
        put(&b, "# HELP decayq_llm_tokens_total Tokens the LLM backend "
                "reported, by model and type (prompt, completion).\n"
                "# TYPE decayq_llm_tokens_total counter\n");
        for (size_t i = 0; i < m->llm_cnt; i++) {
                const counter_t *c = &m->llm[i];
                if (strcmp(c->outcome, "tokens"))
                        continue;
                put(&b, "decayq_llm_tokens_total{");
                put_label(&b, "model", c->kind, true);
                put_label(&b, "type", c->code, false);
                put(&b, "} %llu\n", (unsigned long long)c->value);
        }
        put(&b, "# HELP decayq_llm_circuit_open 1 while the LLM backend's "
                "circuit is open (401, 403, insufficient quota).\n"
                "# TYPE decayq_llm_circuit_open gauge\n"
                "decayq_llm_circuit_open{");
        put_label(&b, "code", m->g.llm_circuit_code, true);
        put(&b, "} %d\n", m->g.llm_circuit_open);
        for (int h = 0; h < DQ_HIST__CNT; h++) {
                const hist_t *x = &m->hist[h];
                uint64_t cum = 0;
                put(&b, "# HELP %s %s\n# TYPE %s histogram\n", hists[h].name,
                    hists[h].help, hists[h].name);
                for (size_t i = 0; i < BOUND_CNT; i++) {
                        cum += x->buckets[i];
                        put(&b, "%s_bucket{le=\"%g\"} %llu\n", hists[h].name,
                            dq_metrics_bounds[i] / 1000.0,
                            (unsigned long long)cum);
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
            "# HELP decayq_kafka_brokers_silent Brokers connected with "
            "requests waiting and nothing received for 15 s or more "
            "(fetch.wait.max.ms + 5 s when longer).\n"
            "# TYPE decayq_kafka_brokers_silent gauge\n"
            "decayq_kafka_brokers_silent %d\n"
            "# HELP decayq_loop_idle_seconds Time since the main loop last "
            "made progress.\n"
            "# TYPE decayq_loop_idle_seconds gauge\n"
            "decayq_loop_idle_seconds %.3f\n",
            m->g.assigned, m->g.paused, m->g.in_flight, m->g.draining,
            m->g.redis_ok, m->g.critical, m->g.copies_failing,
            m->g.parts_blocked, m->g.fatal, m->kafka_up, m->kafka_silent,
            (double)(now - m->last_tick) / 1000.0);
        pthread_mutex_unlock(&m->lock);
        *lenp = b.len;
        return b.p;
}
