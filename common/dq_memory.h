/* The memory store's planner side: per-scope indexes of what may decay,
 * kept in the same Redis steps that write and compress memories; the
 * registry of scopes; and the planner's calls (one pass of one scope and
 * policy, marks of delivery, status). Keys are in dq_functions.lua. */
#ifndef DQ_MEMORY_H
#define DQ_MEMORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dq_err.h"
#include "dq_job.h"
#include "dq_store.h"

/* What writing or re-deriving one record did to its index entry. */
typedef struct dq_index_result_s {
        /* added | fixed | unchanged | removed | none | skipped */
        char action[16];
        /* skipped: no_created_at, bad_created_at or bad_expires_at (the
         * record should be indexed and cannot be);
         * "gone" when the record no longer exists */
        char reason[32];
} dq_index_result_t;

/* dq_store_record_put(), which also says what happened to the index entry
 * (res may be NULL). */
dq_err_t dq_memory_put(dq_store_t *st, dq_rec_kind_t kind, const char *scope,
                       const char *id, const char *const *kv, size_t pairs,
                       dq_index_result_t *res);

/* Re-derives the index entries of n records of a scope from the records
 * themselves, in one round trip (decayctl memory reindex). */
dq_err_t dq_memory_reindex(dq_store_t *st, dq_rec_kind_t kind,
                           const char *scope, char *const *ids, size_t n,
                           dq_index_result_t *res);

/* A page of ids: records of one kind in one scope (SCAN of the keyspace,
 * its pattern escaped), entries of one index (ZSCAN), or scopes of the
 * registry (SSCAN). Start with *cursor 0; the walk is over when it is 0
 * again. The caller frees each id and the array. */
dq_err_t dq_memory_scan_records(dq_store_t *st, dq_rec_kind_t kind,
                                const char *scope, uint64_t *cursor,
                                char ***ids, size_t *n);
dq_err_t dq_memory_scan_index(dq_store_t *st, const char *index,
                              const char *scope, uint64_t *cursor, char ***ids,
                              size_t *n);
dq_err_t dq_memory_scan_scopes(dq_store_t *st, uint64_t *cursor, char ***ids,
                               size_t *n);
void dq_memory_ids_free(char **ids, size_t n);

/* Adds a scope to the registry ("<ns>:scopes"), which the planner walks. */
dq_err_t dq_memory_register(dq_store_t *st, const char *scope);

/* A planning policy: which memories of a kind decay, how many a job. */
typedef struct dq_plan_policy_s {
        const char *name; /* "candidates": part of the job ids it derives */
        dq_kind_t kind;
        int64_t min_age_ms; /* principles: 0, past expires_at */
        int64_t min_sources;
        int64_t max_sources;
        dq_method_t method;
} dq_plan_policy_t;

/* One job a pass proposes. */
typedef struct dq_plan_job_s {
        char id[DQ_ULID_LEN + 1];
        char *idempotency_key;
        char *method;
        int64_t created_at; /* Redis time of the proposal */
        char **sources;
        size_t source_cnt;
} dq_plan_job_t;

/* One pass over one scope and policy (the decayq_plan function). */
typedef struct dq_plan_s {
        const char *scope;              /* in */
        const dq_plan_policy_t *policy; /* in */
        /* out: DQ_OK; DQ_ERR_UNAVAILABLE (unknown: ask again);
         * DQ_ERR_REJECTED (the server refused it: message) */
        dq_err_t err;
        char message[256];
        int64_t window;      /* its start, ms: Redis TIME rounded down */
        int64_t now;         /* Redis TIME, ms */
        int64_t next_due;    /* start of the window the next memory is due in;
                              * 0: none */
        int64_t open;        /* planned jobs still running */
        int64_t released;    /* planned jobs that ended, holds released */
        int64_t republished; /* never delivered: proposed again */
        int64_t held;        /* due memories a running job holds */
        int64_t gone;        /* index entries whose memory is gone */
        int64_t stale;       /* ...whose memory is no longer active */
        int64_t bad;         /* ...with an id no job can name */
        int64_t due;         /* due and free */
        int64_t proposed;    /* memories proposed in new jobs */
        int64_t debt;        /* due, free and not proposed */
        dq_plan_job_t *jobs; /* new and republished */
        size_t job_cnt;
} dq_plan_t;

/* Runs n plans in one round trip. interval_ms: the window length;
 * scan_max: due entries one plan looks at. Returns DQ_ERR_UNAVAILABLE when
 * Redis could not be reached (each plan's err says which are unknown). */
dq_err_t dq_memory_plan(dq_store_t *st, dq_plan_t *plans, size_t n,
                        int64_t interval_ms, int64_t scan_max);

/* Frees the outputs of a plan. */
void dq_plan_release(dq_plan_t *plan);

/* Marks n planned jobs of scope delivered to Kafka: no later pass
 * publishes them again. */
dq_err_t dq_memory_plan_published(dq_store_t *st, const char *scope,
                                  char *const *job_ids, size_t n);

/* Redis TIME in ms. */
dq_err_t dq_memory_time(dq_store_t *st, int64_t *now_ms);

/* The planning status of a scope ("<ns>:plan:{scope}"), or of the last
 * pass (scope NULL: "<ns>:plan:last"). DQ_ERR_NOT_FOUND when none. */
dq_err_t dq_memory_plan_status(dq_store_t *st, const char *scope,
                               dq_record_t *rec);

/* Writes the record of a pass ("<ns>:plan:last"): kv pairs. */
dq_err_t dq_memory_pass_record(dq_store_t *st, const char *const *kv,
                               size_t pairs);

/* The trigger counter ("<ns>:plan:trigger"): decayctl plan run adds one;
 * a planner that sees it change runs a pass. */
dq_err_t dq_memory_trigger_get(dq_store_t *st, int64_t *value);
dq_err_t dq_memory_trigger(dq_store_t *st, int64_t *value);

#endif
