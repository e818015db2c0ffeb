/* The metrics' private parts, shared by collection (dq_metrics.c) and
 * the exposition (dq_metrics_render.c). */
#ifndef DQ_METRICS_INT_H
#define DQ_METRICS_INT_H

#include <pthread.h>
#include <stdint.h>

#include "dq_metrics.h"

/* Histogram bucket bounds, ms. */
#define BOUND_CNT 14
extern const double dq_metrics_bounds[BOUND_CNT];

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
        /* LLM calls ("call", class, code) and tokens ("tokens", model,
         * prompt|completion). */
        counter_t *llm;
        size_t llm_cnt, llm_cap;
        hist_t hist[DQ_HIST__CNT];
        uint64_t events[DQ_EV__CNT];
        dq_gauges_t g;
        lag_t *lags; /* from statistics */
        size_t lag_cnt;
        lag_t *extra; /* measured by the consumer (dq_metrics_extra_lags) */
        size_t extra_cnt;
        int kafka_up; /* brokers UP in the last statistics; -1: none yet */
        /* ...of them, with requests waiting and nothing received for
         * silent_after_ms: connected, and not answering (frozen). */
        int kafka_silent;
        int64_t silent_after_ms;
        int64_t last_tick;
};

#endif
