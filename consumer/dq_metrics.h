/* decay-consumer's metrics and health, kept by the main loop and read by
 * the HTTP listener's thread: counters, latency histograms, gauges, lag
 * from librdkafka statistics, and the readiness conditions. Every call is
 * thread-safe, and a no-op on NULL (no listener: nothing is kept). */
#ifndef DQ_METRICS_H
#define DQ_METRICS_H

#include "dq_http.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dq_metrics_s dq_metrics_t;

typedef enum dq_hist_e {
        DQ_HIST_PROCESSING, /* claim to settle of a batch's job, ms */
        DQ_HIST_END_TO_END, /* produce timestamp to settle, ms */
        DQ_HIST_REDIS,      /* one pipelined Redis round trip, ms */
        DQ_HIST_LLM,        /* one LLM backend call, ms */
        DQ_HIST_READ_AGE,   /* produce timestamp to read, jobs topic, ms */
        DQ_HIST__CNT
} dq_hist_t;

typedef enum dq_event_e {
        DQ_EV_REBALANCE,
        DQ_EV_COMMIT,
        DQ_EV_COMMIT_FAILED,
        DQ_EV__CNT
} dq_event_t;

/* Gauges and readiness inputs, set by the main loop. */
typedef struct dq_gauges_s {
        int assigned;  /* partitions */
        int paused;    /* partitions paused (delay tiers, Redis outage) */
        int in_flight; /* messages read and not yet settled */
        bool joined;   /* the group assigned us (possibly nothing) */
        bool redis_ok; /* Redis answers and holds the functions */
        bool critical; /* paused past critical.after */
        bool draining;
        /* Copies whose send failed, waiting to be sent again: their
         * messages cannot settle until they are. */
        int copies_failing;
        /* Partitions paused because their copies cannot be placed (the
         * DLQ or a tier has fewer partitions). */
        int parts_blocked;
        /* librdkafka raised a fatal error: the process must exit. */
        bool fatal;
        /* The LLM backend refused us (401, 403, insufficient quota): LLM
         * jobs wait without spending attempts. */
        bool llm_circuit_open;
        char llm_circuit_code[64];
} dq_gauges_t;

dq_metrics_t *dq_metrics_new(void);
void dq_metrics_destroy(dq_metrics_t *m);

/* A connected broker with requests waiting that has sent nothing for this
 * long is not answering (frozen, or partitioned away behind an open
 * connection): /readyz says so long before librdkafka's socket.timeout.ms
 * or the session timeout would. */
#define DQ_METRICS_SILENT_AFTER 15000
void dq_metrics_silent_after(dq_metrics_t *m, int64_t ms);

/* Counts one job event under label outcome: "consumed", "claimed",
 * "abandoned", or how a message settled (the engine's outcome names:
 * "completed", "retried", "deferred", "dead", "duplicate", "cancelled",
 * "skipped", "superseded"); kind and code may be NULL. */
void dq_metrics_count(dq_metrics_t *m, const char *outcome, const char *kind,
                      const char *code);

void dq_metrics_observe(dq_metrics_t *m, dq_hist_t h, double ms);

/* One LLM backend call: its class (ok, retryable, fatal, no_blame) and
 * code, its time, and the tokens the model reported. */
void dq_metrics_llm_call(dq_metrics_t *m, const char *cls, const char *code,
                         double ms, const char *model, int64_t prompt_tokens,
                         int64_t completion_tokens);

/* A settled job: its count, and its processing and end-to-end times (each
 * skipped when negative), under one lock. */
void dq_metrics_settle(dq_metrics_t *m, const char *outcome, const char *kind,
                       const char *code, double processing_ms,
                       double end_to_end_ms);
void dq_metrics_event(dq_metrics_t *m, dq_event_t ev);
void dq_metrics_gauges(dq_metrics_t *m, const dq_gauges_t *g);

/* The main loop made progress (for /healthz). */
void dq_metrics_tick(dq_metrics_t *m);

/* Reads consumer lag and broker states from a librdkafka statistics JSON
 * document. */
void dq_metrics_stats(dq_metrics_t *m, const char *json, size_t len);

/* Lags the consumer measured itself, for assigned partitions that
 * statistics do not cover (paused before any fetch): replaces the earlier
 * set. Strings are copied. */
void dq_metrics_extra_lags(dq_metrics_t *m, const char *const *topics,
                           const int32_t *partitions, const int64_t *lags,
                           size_t n);

/* The Prometheus text exposition; the caller frees it. */
char *dq_metrics_render(dq_metrics_t *m, size_t *lenp);

/* Ready: no fatal error, Kafka connected, group joined, Redis reachable,
 * not draining, not in a critical pause, every copy sent and no partition
 * blocked. When not, why names the first condition that fails. */
bool dq_metrics_ready(dq_metrics_t *m, char *why, size_t why_size);

/* Alive: the main loop ticked within stall_ms. */
bool dq_metrics_alive(dq_metrics_t *m, int64_t stall_ms, int64_t *since_ms);

/* The listener's view of m: render, ready and alive above. */
dq_http_probe_t dq_metrics_probe(dq_metrics_t *m);

#endif
