/* decay-planner: finds what should decay and publishes the decay jobs.
 *
 * A pass walks the registry of scopes and, for each scope and enabled
 * policy, runs decayq_plan in Redis: the memories of the scope's index
 * that are due in the current window (Redis TIME rounded down to
 * plan.interval) and held by no open planned job are chunked into jobs
 * whose ids derive from (scope, policy, window, chunk). Each job is
 * published through the producer library (idempotent, acks=all) and, once
 * its delivery report says so, marked delivered in Redis. A job that was
 * not delivered is reported and proposed again by the next pass; a
 * planner that dies mid-pass loses nothing, since the next pass proposes
 * the same jobs and the consumer's claim collapses the copies (G13).
 *
 * Any number of planners may run: they agree on the window because it
 * comes from Redis, and on the jobs because Redis records them.
 * @locality one thread: the planner's. */
#ifndef DQ_PLANNER_H
#define DQ_PLANNER_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dq_conf.h"
#include "dq_err.h"

typedef struct dq_planner_s dq_planner_t;

/* What one pass did. */
typedef struct dq_pass_s {
        int64_t window;      /* start of the window planned, Redis ms */
        int64_t started;     /* Redis ms */
        int64_t took_ms;     /* by the planner's monotonic clock */
        int64_t missed;      /* windows since the last pass, minus this one */
        int64_t scopes;      /* scopes planned */
        int64_t filtered;    /* scopes plan.scope.filter left out */
        int64_t bad_scope;   /* registry entries no job can name: skipped */
        int64_t due;         /* memories due and free */
        int64_t proposed;    /* memories in new jobs */
        int64_t jobs;        /* jobs published (new and again) */
        int64_t republished; /* jobs never delivered before: sent again */
        int64_t delivered;
        int64_t failed;   /* not delivered: reported, sent again next pass */
        int64_t held;     /* due memories an open job holds */
        int64_t skipped;  /* index entries dropped: gone, inactive, bad id */
        int64_t debt;     /* due, free and not proposed */
        int64_t next_due; /* earliest next_due of a scope; 0: none */
        bool complete;    /* false: stopped (signal) or failed midway */
} dq_pass_t;

/* Creates a planner from conf: a Redis store and a producer. name goes
 * into each job's created_by ("planner:<name>"). NULL with errstr set on
 * failure (bad policy keys included). */
dq_planner_t *dq_planner_new(const dq_conf_t *conf, const char *name,
                             char *errstr, size_t errstr_size);

/* Frees planner; NULL is a no-op. */
void dq_planner_destroy(dq_planner_t *planner);

/* Runs one pass; *stop (may be NULL) set by a signal handler stops it
 * between batches of scopes, each chunk published whole or not at all.
 * Returns DQ_OK when the pass completed or was stopped (out->complete
 * says which); DQ_ERR_UNAVAILABLE when Redis failed (out says how far it
 * got). Jobs Kafka did not take are counted in out->failed. */
dq_err_t dq_planner_pass(dq_planner_t *planner, volatile sig_atomic_t *stop,
                         dq_pass_t *out);

/* Runs passes until *stop: one at start, then one each window (by Redis
 * TIME), plus one trailing pass for any decayctl plan run trigger seen;
 * triggers that arrive during a pass coalesce into one. After downtime it
 * catches up with one pass. Returns 0 after a clean stop, 1 when the last
 * pass did not complete. */
int dq_planner_run(dq_planner_t *planner, volatile sig_atomic_t *stop);

/* Logs the 'stage=pass' line of pass number pass. */
void dq_planner_log_pass(long pass, const dq_pass_t *o, dq_err_t err);

/* The planner's own clock (wall ms), which only its logs and skew metric
 * use: planning runs on Redis TIME. DQ_TEST_CLOCK_OFFSET_MS shifts it, so
 * that tests can run planners whose clocks disagree. */
int64_t dq_planner_clock_ms(void);

#endif
