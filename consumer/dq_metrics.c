/* Metrics and health; see dq_metrics.h. One mutex guards everything: the
 * main loop updates a few times per batch, and a scrape reads it all. */
#define _GNU_SOURCE
#include "dq_metrics_int.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_time.h"
#include "banned.h"

/* Histogram bucket bounds, ms. */
const double dq_metrics_bounds[BOUND_CNT] = {
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000};

dq_metrics_t *dq_metrics_new(void)
{
        dq_metrics_t *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        pthread_mutex_init(&m->lock, NULL);
        m->kafka_up = -1;
        m->silent_after_ms = DQ_METRICS_SILENT_AFTER;
        m->last_tick = dq_mono_ms();
        return m;
}

void dq_metrics_silent_after(dq_metrics_t *m, int64_t ms)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        m->silent_after_ms = ms;
        pthread_mutex_unlock(&m->lock);
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
        for (size_t i = 0; i < m->llm_cnt; i++) {
                free(m->llm[i].outcome);
                free(m->llm[i].kind);
                free(m->llm[i].code);
        }
        free(m->llm);
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

/* Adds n to the counter of labels (a, b, c) in table v. Called locked. */
static void bump(counter_t **v, size_t *cnt, size_t *cap, const char *a,
                 const char *b, const char *c, uint64_t n)
{
        counter_t *x = NULL;

        b = b ? b : "";
        c = c ? c : "";
        /* Few distinct label sets (outcomes x kinds x codes): a scan. */
        for (size_t i = 0; i < *cnt; i++) {
                counter_t *y = &(*v)[i];
                if (!strcmp(y->outcome, a) && !strcmp(y->kind, b) &&
                    !strcmp(y->code, c)) {
                        x = y;
                        break;
                }
        }
        if (!x) {
                if (*cnt == *cap) {
                        size_t k = *cap ? 2 * *cap : 32;
                        counter_t *nv = realloc(*v, k * sizeof(*nv));
                        if (!nv)
                                abort();
                        *v = nv;
                        *cap = k;
                }
                x = &(*v)[(*cnt)++];
                x->outcome = dup_or_empty(a);
                x->kind = dup_or_empty(b);
                x->code = dup_or_empty(c);
                x->value = 0;
        }
        x->value += n;
}

static void count_locked(dq_metrics_t *m, const char *outcome, const char *kind,
                         const char *code)
{
        bump(&m->counters, &m->counter_cnt, &m->counter_cap, outcome, kind,
             code, 1);
}

/* Adds ms to histogram h. Called locked. */
static void observe_locked(dq_metrics_t *m, dq_hist_t h, double ms)
{
        hist_t *x = &m->hist[h];
        size_t b = 0;

        if (ms < 0)
                ms = 0;
        while (b < BOUND_CNT && ms > dq_metrics_bounds[b])
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

void dq_metrics_llm_call(dq_metrics_t *m, const char *cls, const char *code,
                         double ms, const char *model, int64_t prompt_tokens,
                         int64_t completion_tokens)
{
        if (!m)
                return;
        pthread_mutex_lock(&m->lock);
        bump(&m->llm, &m->llm_cnt, &m->llm_cap, "call", cls, code, 1);
        if (prompt_tokens > 0)
                bump(&m->llm, &m->llm_cnt, &m->llm_cap, "tokens", model,
                     "prompt", (uint64_t)prompt_tokens);
        if (completion_tokens > 0)
                bump(&m->llm, &m->llm_cnt, &m->llm_cap, "tokens", model,
                     "completion", (uint64_t)completion_tokens);
        observe_locked(m, DQ_HIST_LLM, ms);
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
        int up = 0, silent = 0;

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
                json_int_t waiting =
                    json_integer_value(json_object_get(b, "waitresp_cnt"));
                json_int_t rxidle_us =
                    json_integer_value(json_object_get(b, "rxidle"));

                if (!st || strcmp(st, "UP") || json_integer_value(id) < 0)
                        continue;
                up++;
                if (waiting > 0 && rxidle_us / 1000 >= m->silent_after_ms)
                        silent++;
        }
        pthread_mutex_lock(&m->lock);
        lags_free(&m->lags, &m->lag_cnt);
        m->lags = lags;
        m->lag_cnt = cnt;
        m->kafka_up = up;
        m->kafka_silent = silent;
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

bool dq_metrics_ready(dq_metrics_t *m, char *why, size_t why_size)
{
        const char *no = NULL;

        char buf[160];

        pthread_mutex_lock(&m->lock);
        if (m->g.fatal)
                no = "kafka: fatal error, exiting";
        else if (m->g.draining)
                no = "draining";
        else if (m->kafka_up == 0)
                no = "kafka: no broker connected";
        else if (m->kafka_silent > 0) {
                snprintf(buf, sizeof(buf),
                         "kafka: %d broker(s) connected but not answering "
                         "(requests waiting, nothing received for %llds)",
                         m->kafka_silent,
                         (long long)(m->silent_after_ms / 1000));
                no = buf;
        } else if (!m->g.joined)
                no = "group: not joined";
        else if (!m->g.redis_ok)
                no = "redis: unreachable";
        else if (m->g.critical)
                no = "critical pause";
        else if (m->g.llm_circuit_open) {
                snprintf(buf, sizeof(buf),
                         "llm: circuit open (%s); LLM jobs wait, others run",
                         m->g.llm_circuit_code);
                no = buf;
        } else if (m->g.copies_failing) {
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

static char *probe_render(void *opaque, size_t *lenp)
{
        return dq_metrics_render(opaque, lenp);
}

static bool probe_ready(void *opaque, char *why, size_t why_size)
{
        return dq_metrics_ready(opaque, why, why_size);
}

static bool probe_alive(void *opaque, int64_t stall_ms, int64_t *since_ms)
{
        return dq_metrics_alive(opaque, stall_ms, since_ms);
}

dq_http_probe_t dq_metrics_probe(dq_metrics_t *m)
{
        return (dq_http_probe_t){.render = probe_render,
                                 .ready = probe_ready,
                                 .alive = probe_alive,
                                 .opaque = m};
}
