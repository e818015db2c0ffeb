/* The Redis store: each job's state machine (claim and settles, fenced by
 * epoch), idempotency keys, and the memory store, over one hiredis
 * connection with pipelined batches. State changes run in the decayq Redis
 * Functions library (dq_functions.lua), loaded at connect. */
#ifndef DQ_STORE_H
#define DQ_STORE_H

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

#include "dq_conf.h"
#include "dq_err.h"
#include "dq_job.h"
#include "dq_llm.h"

typedef struct dq_store_s dq_store_t;

/* The sources of an llm_summary job as its claim read them, in prompt
 * order ((created_at, id)); strings owned. */
typedef struct dq_sources_s {
        size_t cnt;
        dq_llm_source_t *v;
} dq_sources_t;

void dq_sources_free(dq_sources_t *s);

/* What an llm_summary job's complete writes (decayq_complete_llm). */
typedef struct dq_summary_s {
        const char *content;
        const char *digest; /* the claim's: the sources must still match */
        const char *model;
        const char *fingerprint;
        int64_t prompt_tokens, completion_tokens;
        const char *operator_name;
        const char *key_id;
} dq_summary_t;

typedef enum dq_claim_status_e {
        DQ_CLAIM_CLAIMED,   /* run it: attempts and epoch are counted */
        DQ_CLAIM_DUPLICATE, /* its idempotency key belongs to job `ref` */
        DQ_CLAIM_TERMINAL,  /* already `state`; nothing to do */
        DQ_CLAIM_EXHAUSTED, /* attempts spent: dead-letter as crash_loop */
        /* Live claim of another record: not run, no attempt counted; try
         * again later (until: its lease). */
        DQ_CLAIM_BUSY,
        /* In retry backoff until `until`: not run; defer the delivery. */
        DQ_CLAIM_NOT_DUE,
        /* A delay copy behind the job's attempts: superseded, not run. */
        DQ_CLAIM_STALE,
} dq_claim_status_t;

/* The reason code of a job whose command Redis refused (a key of the
 * wrong type): fatal for that job alone. */
#define DQ_STORE_COMMAND_ERROR "decay.store.command_error"

typedef struct dq_claim_s {
        const dq_job_t *job; /* in */
        /* in: the delivered record, "topic/partition/offset" (NULL: none).
         * The same record delivered again takes its own claim over. */
        const char *msg;
        /* in: a delay-tier copy, made when the job had copy_attempts */
        bool is_copy;
        int64_t copy_attempts;
        /* out: DQ_OK; DQ_ERR_UNAVAILABLE when the outcome is unknown;
         * DQ_ERR_REJECTED when the server refused the command itself (a
         * key of the wrong type): dead-letter the job with reason code
         * decay.store.command_error and message; DQ_ERR_INTERNAL for a
         * reply of the wrong shape (critical) */
        dq_err_t err;
        char message[256];
        dq_claim_status_t status;
        int64_t attempts;
        int64_t epoch;
        char state[16]; /* terminal state, or the state before the claim */
        char ref[64];   /* first job id (duplicate) or result (terminal) */
        int64_t until;  /* BUSY: lease end; NOT_DUE: not-before (wall ms) */
        bool took_over; /* a live lease of another worker was superseded */

        /* in: the nonce of an llm_summary job whose attestation verified
         * (NULL: a plain claim). The claim then also takes the nonce (SET
         * NX, until nonce_until_ms) and reads the job's sources, in one
         * step (decayq_claim_llm). */
        const char *nonce;
        int64_t nonce_until_ms;
        /* out, such a claim, CLAIMED: with code set, the attempt is
         * counted and the job must be dead-lettered with code and message
         * (decay.attest.replayed; a source missing, inactive or of the
         * wrong type); else its sources (the caller owns them:
         * dq_sources_free()) and their digest. */
        char code[64];
        dq_sources_t *sources;
        char digest[41];
} dq_claim_t;

typedef enum dq_settle_op_e {
        DQ_SETTLE_COMPLETE, /* apply the job's effect and complete it */
        DQ_SETTLE_RETRY,    /* retry_wait until not_before_ms */
        DQ_SETTLE_DEAD,     /* dead-lettered */
        /* Handed back without spending the attempt (the backend was at
         * fault): retry_wait until not_before_ms, error_code kept. */
        DQ_SETTLE_RELEASE,
} dq_settle_op_t;

typedef struct dq_settle_s {
        const dq_job_t *job; /* in */
        dq_settle_op_t op;
        int64_t epoch;
        int64_t not_before_ms;     /* RETRY */
        const char *error_class;   /* RETRY, DEAD */
        const char *error_code;    /* RETRY, DEAD */
        const char *error_message; /* RETRY, DEAD */
        /* COMPLETE of an llm_summary job: the summary to write. */
        const dq_summary_t *summary;
        /* out: DQ_OK; DQ_ERR_FENCED (claim superseded); DQ_ERR_TERMINAL;
         * DQ_ERR_REJECTED (the effect can never apply, or the server
         * refused the command, code decay.store.command_error: code,
         * message); DQ_ERR_UNAVAILABLE (outcome unknown); DQ_ERR_INTERNAL
         * (a reply of the wrong shape: critical) */
        dq_err_t err;
        char code[64];
        char message[256];
        char result[64]; /* result memory id, or review entry id */
        /* out, COMPLETE with DQ_OK: nothing was written, since other jobs
         * had compressed every source already; the job is `superseded` */
        bool superseded;
} dq_settle_t;

/* A deterministic job claimed and completed in one step (decayq_run):
 * for a job whose handler does nothing but the effect. */
typedef struct dq_store_run_s {
        /* in: job, msg, is_copy, copy_attempts; out: as dq_store_claim()
         * fills it */
        dq_claim_t claim;
        /* out, when claim.status is DQ_CLAIM_CLAIMED: the complete's
         * answer (op DQ_SETTLE_COMPLETE, epoch the claim's): err DQ_OK
         * with result (and superseded), or DQ_ERR_REJECTED with code and
         * message (the attempt is counted and the claim held: dead-letter
         * the job with this epoch) */
        dq_settle_t settle;
} dq_store_run_t;

/* A record read back: fields and values in Redis order. */
typedef struct dq_record_s {
        size_t cnt;
        char **fields;
        char **values;
} dq_record_t;

/* Connects to Redis per conf (redis.*), authenticates, loads the functions
 * library where the server has none or an older one (a newer one is
 * refused: DQ_ERR_UNSAFE_CONFIG) and runs the start-up checks: unless
 * redis.allow.unsafe is set it refuses (DQ_ERR_UNSAFE_CONFIG) a server whose
 * maxmemory-policy can evict or whose appendonly is off. conf is read, not
 * kept. NULL with errstr set on failure; the password never appears in errstr
 * or logs.
 * @locality one thread at a time per store. */
dq_store_t *dq_store_new(const dq_conf_t *conf, const char *worker,
                         char *errstr, size_t errstr_size);

/* Flags of dq_store_open(). */
#define DQ_STORE_READONLY 0x1 /* no library load, no checks, no writes */

/* dq_store_new() with flags. A DQ_STORE_READONLY store loads no functions
 * and skips the durability checks, so that it works on a replica and as a
 * read-only ACL user; it offers reads (dq_store_job_get(),
 * dq_store_record_get()) and dry runs (dq_store_replay() with dry_run)
 * only. */
dq_store_t *dq_store_open(const dq_conf_t *conf, const char *worker,
                          unsigned flags, char *errstr, size_t errstr_size);

/* Frees store; NULL is a no-op. */
void dq_store_destroy(dq_store_t *store);

/* Claims n jobs in one pipelined round trip; fills each claim's outputs.
 * Returns DQ_OK, or DQ_ERR_UNAVAILABLE when Redis could not be reached (every
 * claim whose reply was not read has err DQ_ERR_UNAVAILABLE: unknown). */
dq_err_t dq_store_claim(dq_store_t *store, dq_claim_t *claims, size_t n,
                        int64_t now_ms);

/* Settles n jobs in one pipelined round trip (see dq_settle_t). */
dq_err_t dq_store_settle(dq_store_t *store, dq_settle_t *settles, size_t n,
                         int64_t now_ms);

/* Runs n deterministic jobs in one pipelined round trip, each claimed and
 * completed in one Redis step. Returns as dq_store_claim() does; a run
 * whose reply was not read has claim.err DQ_ERR_UNAVAILABLE (unknown: it
 * may have happened, and sending it again is safe: a completed job is
 * then terminal). */
dq_err_t dq_store_run(dq_store_t *store, dq_store_run_t *runs, size_t n,
                      int64_t now_ms);

/* dq_store_run() in two halves, so that Redis works on one batch while
 * the caller reads and builds the next. dq_store_run_send() writes the
 * batch's calls to the socket and returns at once, filling *t;
 * dq_store_run_recv() reads their replies into runs as dq_store_run()
 * would. Batches sent are received in the order they were sent, and
 * every one before any other call of the store: a call that finds replies
 * still owed drops the connection (the batches owed read as unknown), and
 * says so in the log. A batch whose connection failed, at its send or
 * since, reads as unknown throughout (claim.err DQ_ERR_UNAVAILABLE). */
typedef struct dq_store_ticket_s {
        uint64_t conn; /* the connection it was written to; 0: none */
} dq_store_ticket_t;

void dq_store_run_send(dq_store_t *store, dq_store_run_t *runs, size_t n,
                       int64_t now_ms, dq_store_ticket_t *t);
dq_err_t dq_store_run_recv(dq_store_t *store, dq_store_run_t *runs, size_t n,
                           const dq_store_ticket_t *t);

/* DQ_OK when Redis answers (reconnecting if need be), else
 * DQ_ERR_UNAVAILABLE. */
dq_err_t dq_store_ping(dq_store_t *store);

/* Ends a job that has not started as `superseded` by job by_id (a newer
 * job over the same sources queued behind it). DQ_OK when done;
 * DQ_ERR_TERMINAL when it was terminal already; DQ_ERR_FENCED when it runs
 * under a live lease (left alone). */
dq_err_t dq_store_supersede(dq_store_t *store, const dq_job_t *job,
                            const char *by_id, int64_t now_ms);

/* One lease of dq_store_renew_many(): in job and epoch; out err (DQ_OK,
 * DQ_ERR_FENCED, DQ_ERR_TERMINAL, DQ_ERR_UNAVAILABLE: unknown). */
typedef struct dq_renew_s {
        const dq_job_t *job;
        int64_t epoch;
        dq_err_t err;
} dq_renew_t;

/* Extends n leases in one pipelined round trip; returns as
 * dq_store_claim() does. */
dq_err_t dq_store_renew_many(dq_store_t *store, dq_renew_t *renews, size_t n,
                             int64_t now_ms);

/* Extends the lease of a claimed job. DQ_ERR_FENCED when superseded. */
dq_err_t dq_store_renew(dq_store_t *store, const dq_job_t *job, int64_t epoch,
                        int64_t now_ms);

/* Cancels a job that is not terminal, fencing any running worker. A job
 * with no state is cancelled (a tombstone its first claim finds) only with
 * force. Returns DQ_OK; DQ_ERR_TERMINAL with its state in state_out;
 * DQ_ERR_NOT_FOUND when it has no state and force is false. */
dq_err_t dq_store_cancel(dq_store_t *store, const char *scope, const char *id,
                         const char *reason, bool force, int64_t now_ms,
                         char *state_out, size_t state_size);

/* For DLQ replay: puts a dead job (or one with no state left) back to
 * pending, attempts 0, with a new epoch, and records from (the DLQ record,
 * "topic/partition/offset") and replay_count. DQ_OK when reset (state_out:
 * the state before, "" when none, or "resumed" when from had already reset
 * it); DQ_ERR_TERMINAL when refused, with the job's state in state_out
 * ("completed", "cancelled", "in_progress", or "replayed" when another
 * record already replayed it). With dry_run it answers the same and
 * writes nothing. */
dq_err_t dq_store_replay(dq_store_t *store, const char *scope, const char *id,
                         const char *from, int64_t replay_count, bool dry_run,
                         int64_t now_ms, char *state_out, size_t state_size);

/* Appends an entry of field, value pairs (2 * pairs strings) to the audit
 * stream "<ns>:audit"; id_out (may be NULL) gets the entry id. */
dq_err_t dq_store_audit(dq_store_t *store, const char *const *kv, size_t pairs,
                        char *id_out, size_t id_size);

/* Reads a job's state hash. DQ_ERR_NOT_FOUND when it has none. */
dq_err_t dq_store_job_get(dq_store_t *store, const char *scope, const char *id,
                          dq_record_t *rec);

/* Record kinds of the memory store. */
typedef enum dq_rec_kind_e {
        DQ_REC_MEMORY,  /* <ns>:mem:{scope}:<id> */
        DQ_REC_EPISODE, /* <ns>:ep:{scope}:<id> */
} dq_rec_kind_t;

/* Writes (replaces) a memory or episode: kv holds field, value pairs
 * (2 * pairs strings). "id" and "scope" are set from the arguments. The
 * planner's index entry of the record is written in the same step, and the
 * scope is registered (see dq_memory.h). */
dq_err_t dq_store_record_put(dq_store_t *store, dq_rec_kind_t kind,
                             const char *scope, const char *id,
                             const char *const *kv, size_t pairs);

/* The planner's index that holds the sources of jobs of kind:
 * "candidate", "episode" or "principle" (key "<ns>:idx:{scope}:<name>"). */
const char *dq_store_index_name(dq_kind_t kind);

/* Reads a memory or episode. DQ_ERR_NOT_FOUND when absent. */
dq_err_t dq_store_record_get(dq_store_t *store, dq_rec_kind_t kind,
                             const char *scope, const char *id,
                             dq_record_t *rec);

/* The value of field in rec, or NULL. */
const char *dq_record_get(const dq_record_t *rec, const char *field);

/* Frees what rec holds; rec itself may be reused. */
void dq_record_release(dq_record_t *rec);

/* Writes "<ns>:<type>:{<scope>}:<id>" (id may be NULL: no ":<id>"). */
int dq_store_key(const dq_store_t *store, char *buf, size_t size,
                 const char *type, const char *scope, const char *id);

/* Prints "<program> <version> (functions library N)" on fp, for
 * --version. */
void dq_print_version(FILE *fp, const char *program);

/* The functions library version this program carries: LIB_VERSION of
 * dq_functions.lua, which the build compiles in. */
const char *dq_store_functions_version(void);

#endif
