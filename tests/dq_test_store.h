/* Store helpers shared by the Redis store tests. */
#ifndef DQ_TEST_STORE_H
#define DQ_TEST_STORE_H

#include "dq_store.h"

/* A store on the test Redis with a namespace of its own; extra are more
 * "key=value" overrides (may be NULL). *confp gets the conf (caller frees
 * it with dq_conf_destroy). */
dq_store_t *dq_test_store(const char *worker, const char *const *extra,
                          int extra_cnt, dq_conf_t **confp);

/* A deterministic_concatenate job over the given sources. */
dq_job_t *dq_test_job(dq_kind_t kind, const char *scope,
                      const char *const *sources, size_t cnt);

/* Writes an active memory of type type (candidate, principle...) with a
 * claim and a created_at in ms. */
void dq_test_memory(dq_store_t *st, const char *scope, const char *id,
                    const char *type, const char *status, const char *claim,
                    long long created_at);

/* Waits up to ms for job's state in st to become want; fails the test
 * otherwise. */
void dq_test_wait_state(dq_store_t *st, const dq_job_t *job, const char *want,
                        long ms);

/* A numeric field of job's record in Redis; 0 when absent. */
int64_t dq_test_job_int(dq_store_t *st, const dq_job_t *job, const char *field);

#endif
