/* The planner's private parts, shared by dq_planner.c (a pass) and
 * dq_planner_run.c (the daemon: schedule, triggers, metrics). */
#ifndef DQ_PLANNER_INT_H
#define DQ_PLANNER_INT_H

#include <pthread.h>

#include "dq_http.h"
#include "dq_memory.h"
#include "dq_planner.h"
#include "dq_producer.h"
#include "dq_store.h"

#define DQ_PLAN_POLICY_CNT 3

/* Totals and the last pass, for /metrics; the listener's thread reads
 * them under lock. */
typedef struct dq_plan_metrics_s {
        pthread_mutex_t lock;
        int64_t passes, passes_failed;
        int64_t scopes, due, proposed, jobs, republished, failed, skipped;
        int64_t bad_scope;
        dq_pass_t last;
        int64_t last_end_mono; /* 0: no pass yet */
        int64_t clock_skew_ms; /* planner clock - Redis TIME */
        int64_t tick_mono;     /* the loop's last sign of life */
        bool redis_up;
        char why[160]; /* not ready: why */
} dq_plan_metrics_t;

struct dq_planner_s {
        const dq_conf_t *conf;
        dq_store_t *store;
        dq_producer_t *producer;
        char *created_by;
        dq_plan_policy_t policies[DQ_PLAN_POLICY_CNT];
        size_t policy_cnt;
        int64_t last_window; /* of the last pass, for missed windows */
        int64_t trigger;     /* the trigger value the pass answers */
        dq_plan_metrics_t m;
        dq_http_t *http;
};

/* Records a finished pass (or a failed one) in the metrics. */
void dq_plan_metrics_pass(dq_planner_t *p, const dq_pass_t *pass, bool ok,
                          const char *why);

#endif
