/* The decay job model: strict parsing, validation and serialization of the
 * schema-1 job message of DESIGN.md. Pure: no I/O, no global state. */
#ifndef DQ_JOB_H
#define DQ_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dq_err.h"
#include "dq_ulid.h"

#define DQ_JOB_SCHEMA              1
#define DQ_JOB_DEFAULT_MAX_BYTES   (1024 * 1024)
#define DQ_JOB_MAX_SOURCES         1000
#define DQ_JOB_MAX_SCOPE           255
#define DQ_JOB_MAX_SOURCE_ID       255
#define DQ_JOB_MAX_IDEMPOTENCY_KEY 255
#define DQ_JOB_MAX_TEXT            255
#define DQ_JOB_MAX_DEPTH           8

typedef enum dq_kind_e {
        DQ_KIND_CANDIDATE_COMPRESSION,
        DQ_KIND_EPISODE_COMPRESSION,
        DQ_KIND_EXPIRED_PRINCIPLE_REVIEW,
        DQ_KIND__CNT
} dq_kind_t;

typedef enum dq_method_e {
        DQ_METHOD_DETERMINISTIC_CONCATENATE,
        DQ_METHOD_LLM_SUMMARY,
        DQ_METHOD__CNT
} dq_method_t;

/* summary_method.operator_attestation (DESIGN.md, "Operator attestation").
 * v 0 is the wave-1 form {"operator", "attested_at"}: it parses, and it is
 * never valid (decay.attest.unsigned). The timestamps keep the text they
 * were sent as, since they are signed as sent. dq_attest.h verifies it. */
typedef struct dq_attestation_s {
        int64_t v;
        char *key_id;
        char *operator_name;
        char *model;
        int64_t max_tokens;
        char *not_before;
        char *expires_at;
        int64_t not_before_ms;
        int64_t expires_at_ms;
        char *nonce;
        char *sig;              /* base64; NULL: unsigned */
        int64_t attested_at_ms; /* v 0 */
} dq_attestation_t;

#define DQ_ATTEST_NONCE_LEN 32 /* hex digits */

/* A parsed, valid job. Strings are owned by the job and NUL-terminated;
 * optional ones are NULL when absent. */
typedef struct dq_job_s {
        char id[DQ_ULID_LEN + 1];
        dq_kind_t kind;
        char *scope;
        char **source_ids;
        size_t source_cnt;
        dq_method_t method;
        /* llm_summary only. */
        bool attestation_required;
        dq_attestation_t *attestation; /* NULL when absent */
        int64_t scheduled_for_ms;      /* 0 when absent: run now */
        int64_t created_at_ms;
        char *created_by;
        char *idempotency_key;
        char *trace_id;
} dq_job_t;

/* Why a message was rejected: code is a stable dotted reason code
 * ("decay.job.unknown_field"), static storage; message is for humans; err
 * is the class: DQ_ERR_INVALID (the message is bad: dead-letter it) or
 * DQ_ERR_INTERNAL (out of memory: the process is at fault, never the
 * message). */
typedef struct dq_reject_s {
        dq_err_t err;
        const char *code;
        char message[256];
} dq_reject_t;

/* Parses and validates one job message of len bytes (no NUL needed).
 * Messages over max_bytes are rejected unread. On success returns a new job
 * that the caller frees with dq_job_destroy(); on rejection returns NULL and
 * fills *rej. Never crashes on any input. @locality any thread. */
dq_job_t *dq_job_parse(const char *buf, size_t len, size_t max_bytes,
                       dq_reject_t *rej);

/* Allocates an empty job for building one from parts; the caller fills the
 * fields, then checks it with dq_job_validate(). */
dq_job_t *dq_job_new(void);

/* A deep copy of job, owning its own strings (for another thread), or NULL
 * when out of memory. */
dq_job_t *dq_job_dup(const dq_job_t *job);

/* Frees job and everything it owns. NULL is a no-op. */
void dq_job_destroy(dq_job_t *job);

/* Checks the semantic rules on a job built in code. Returns true or fills
 * *rej. */
bool dq_job_validate(const dq_job_t *job, dq_reject_t *rej);

/* Checks that job's scheduled_for is at most max_ahead_ms past now_ms: a
 * job for the year 9999 would otherwise hop through the delay tiers
 * forever. Returns true or fills *rej (decay.job.scheduled_too_far). */
bool dq_job_check_schedule(const dq_job_t *job, int64_t now_ms,
                           int64_t max_ahead_ms, dq_reject_t *rej);

/* Serializes job to compact schema-1 JSON with fields in a fixed order.
 * Returns a malloc'ed NUL-terminated string the caller frees, or NULL when
 * a value cannot be encoded (validate first: dq_job_validate() names the
 * field) or on out of memory; no field is ever left out. *lenp gets its
 * length. */
char *dq_job_serialize(const dq_job_t *job, size_t *lenp);

/* True when s is a scope, or a source id, that a job may carry: 1 to 255
 * bytes of UTF-8 without white space, control characters or braces. The
 * same rules as dq_job_validate(), for every program that takes one. */
bool dq_job_scope_valid(const char *s);
bool dq_job_source_id_valid(const char *s);

/* Frees att and what it owns. NULL is a no-op. */
void dq_attestation_destroy(dq_attestation_t *att);

/* Wire names of kinds and methods; parse returns -1 when unknown. */
const char *dq_kind_name(dq_kind_t kind);
int dq_kind_parse(const char *s);
const char *dq_method_name(dq_method_t method);
int dq_method_parse(const char *s);

#endif
