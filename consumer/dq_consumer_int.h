/* decay-consumer's private header: the handle, its partitions and items,
 * and the contract of each room of the engine. Nothing outside consumer/
 * includes it; the public interface is dq_consumer.h.
 *
 * A message goes consume -> classify -> claim -> run -> settle -> copy ->
 * store offset -> commit, and each step has a file named after it:
 *
 *   dq_item.c       one message: arrival, classification, settle, hand-back
 *   dq_route.c      pure decisions, no I/O: what a claim's answer, a
 *                   handler's result or a settle's answer means for a job
 *   dq_batch.c      claim, run and settle a batch (single-shot round trips)
 *   dq_outage.c     Redis outages: waits, and resending unanswered calls
 *   dq_llm_jobs.c   llm_summary jobs: attestations, the backend's circuit
 *   dq_copy.c       delay and DLQ copies and their delivery reports
 *   dq_part.c       partitions: holds, pauses, offsets and the commit
 *   dq_rebalance.c  librdkafka's callbacks: rebalance, errors, commits
 *   dq_setup.c      the two clients, the tiers and the topic checks
 *   dq_consumer.c   lifecycle: start, the loop, the drain, the exit
 *
 * Every function here runs on the one thread that owns the handle. Its
 * comment says where it is entered from (@locality):
 *   main loop            dq_consumer_run() and what it calls;
 *   rebalance callback   inside any rd_kafka_consumer_poll() of the group
 *                        consumer (dq_item_read(), dq_outage_wait(), the
 *                        drain) and inside rd_kafka_consumer_close();
 *   delivery report      inside rd_kafka_poll() of the copy producer
 *                        (dq_copy_serve(), dq_outage_wait(), a send that
 *                        waits on a full queue).
 * The callbacks re-enter the engine: a revoke serves delivery reports,
 * which may settle dead letters (dq_batch_settle()), which may wait for
 * Redis (dq_outage_wait()). So a rebalance can run halfway through a claim
 * or a settle of the main loop. Two rules make that safe: an item belongs
 * to the partition generation it was read in (dq_item_part() is NULL once
 * it is revoked, and such an item is dropped, never settled), and
 * dq_outage_wait() never polls the group while in_rebalance is set. */
#ifndef DQ_CONSUMER_INT_H
#define DQ_CONSUMER_INT_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

#include "dq_attest.h"
#include "dq_consumer.h"
#include "dq_handler.h"
#include "dq_llm.h"
#include "dq_metrics.h"
#include "dq_http.h"
#include "dq_offsets.h"
#include "dq_store.h"

#define DQ_MAX_TOPIC          256
#define DQ_ERR_MESSAGE_MAX    1024
#define DQ_REVOKE_DRAIN_MAX   10000 /* ms a revoke waits for pending copies */
#define DQ_FINAL_COMMIT_MAX   10000 /* ms the drain waits for its commit */
#define DQ_LEAVE_MAX          10000 /* ms the drain waits to leave the group */
#define DQ_AT_ONCE_WAIT       1000  /* the same two waits, after a 2nd signal */
#define DQ_COMMIT_WAIT_ANSWER INT64_MAX /* until answered, or a 2nd signal */
#define DQ_REDIS_BACKOFF_MAX  2000
#define DQ_IDLE_PING_MS       1000
#define DQ_PARK_RECHECK_MS    250 /* a parked delivery asks again this often */
#define DQ_LAG_LOOKUP_MS      500 /* bound of one offset lookup for a lag */

/* How a message ended. Names are the metric's outcome label values and
 * the settle log's outcome= values. */
typedef enum dq_outcome_e {
        DQ_OUTCOME_COMPLETED,  /* effect applied, state completed */
        DQ_OUTCOME_RETRIED,    /* sent to a delay tier after a failure */
        DQ_OUTCOME_DEFERRED,   /* sent to a delay tier before its time */
        DQ_OUTCOME_DEAD,       /* sent to the DLQ */
        DQ_OUTCOME_DUPLICATE,  /* its idempotency key was used already */
        DQ_OUTCOME_CANCELLED,  /* cancelled by an operator */
        DQ_OUTCOME_SKIPPED,    /* already terminal */
        DQ_OUTCOME_SUPERSEDED, /* fenced: a newer claim owns the outcome */
        DQ_OUTCOME__CNT
} dq_outcome_t;

extern const char *const dq_outcome_names[DQ_OUTCOME__CNT];

/* Counts of the run summary. */
typedef struct dq_consumer_stats_s {
        int64_t consumed;  /* messages read */
        int64_t claimed;   /* runs started (attempts counted) */
        int64_t abandoned; /* handed back unsettled (shutdown, revoke) */
        int64_t settled[DQ_OUTCOME__CNT];
} dq_consumer_stats_t;

/* One assigned partition. */
typedef struct dq_part_s {
        char topic[DQ_MAX_TOPIC];
        int32_t partition;
        int tier; /* -1: the jobs topic; else the delay tier */
        uint64_t gen;
        dq_offsets_t off;
        int64_t store_next; /* offset to store at the next commit; -1 */
        bool delay_paused;  /* holding a record that is not due yet */
        /* Paused: the DLQ or a tier lacks this partition number, so its
         * copies could not be placed (H5). */
        bool blocked;
        bool seek_pending; /* read again from paused_offset on resume */
        int64_t resume_at; /* wall ms */
        int64_t paused_offset;
        /* Where its log starts and ends, while blocked (its lag); -1
         * until known. */
        int64_t log_start, log_end;
        /* Records of this partition the scheduler holds (queued, claimed,
         * running), and whether that paused it (max.pending.per.partition).
         */
        int64_t pending;
        bool full_paused;
        struct dq_part_s *next;
} dq_part_t;

typedef enum dq_copy_e {
        DQ_COPY_NONE,
        DQ_COPY_DELAY,
        DQ_COPY_DLQ,
} dq_copy_t;

/* One consumed message, from its arrival until it is settled. */
typedef struct dq_item_s {
        rd_kafka_message_t *msg;
        char topic[DQ_MAX_TOPIC];
        int32_t partition;
        int64_t offset;
        uint64_t gen;
        dq_job_t *job; /* NULL for a message that is not a valid job */

        /* Carried over from a delay copy, or this record's own. */
        char orig_topic[DQ_MAX_TOPIC];
        int32_t orig_partition;
        int64_t orig_offset;
        int64_t orig_ts;
        char ref[DQ_MAX_TOPIC + 48]; /* "topic/partition/offset" */
        int64_t first_failed_at;     /* 0: never failed */
        int64_t replay_count;
        int64_t attempts;
        int64_t epoch;

        /* The copy to produce, and why. */
        dq_copy_t copy;
        int tier;
        int64_t not_before;
        const char *err_class;
        char err_code[64];
        char err_message[DQ_ERR_MESSAGE_MAX + 1];
        bool dead_after; /* set state dead once the DLQ copy is delivered */
        dq_outcome_t outcome;
        int64_t max_bytes; /* cut a DLQ copy to this; 0: copy_max */
        int send_failures; /* sends of its copy that failed */
        int64_t next_try;  /* mono ms: when a failed copy goes again */

        dq_claim_t claim;
        dq_settle_t settle;
        int64_t claimed_at; /* mono ms; 0 until claimed */
        int64_t claim_wall; /* wall ms the claim was made at (its "now") */
        struct dq_item_s *next;

        /* The scheduler's (dq_sched.c): the queue of its scope, its place
         * in it, its task while a worker runs its handler, and its slot
         * among the running. */
        struct dq_scope_q_s *scope_q;
        struct dq_item_s *qnext;
        struct dq_task_s *task;
        size_t run_slot;
        bool llm_slot;  /* counts in llm_running while claimed or running */
        bool llm_probe; /* the circuit's half-open probe */

        /* An llm_summary job (dq_llm_jobs.c): why it must be dead-lettered
         * without a backend call (its attestation refused; "" none), and
         * the summary its settle writes. */
        char refusal[64];
        char refusal_message[512];
        dq_summary_t summary;
        char *summary_content;
        char summary_model[128];
        char summary_fingerprint[128];
} dq_item_t;

/* The jobs of one scope that wait for a handler, in offset order, and the
 * one claimed or running (G10). */
typedef struct dq_scope_q_s {
        char *scope;
        dq_item_t *head, *tail;
        dq_item_t *running; /* NULL: the scope is free */
        struct dq_scope_q_s *hnext;
} dq_scope_q_t;

/* The scheduler: scope queues (a hash table), the running items, and the
 * worker pool. */
typedef struct dq_sched_s {
        dq_scope_q_t **table;
        size_t buckets;
        size_t scopes;
        size_t queued;   /* waiting in scope queues */
        dq_item_t **run; /* claimed or running, unordered */
        size_t run_cnt, run_cap;
        struct dq_pool_s *pool;
        bool start_failed;  /* a worker could not be started: said once */
        int64_t next_renew; /* mono ms */
} dq_sched_t;

/* A batch of one-step runs written to Redis, its replies not yet read
 * (dq_batch.c): Redis runs it while the loop reads the next batch. */
typedef struct dq_flight_s {
        dq_item_t **items; /* grouped by lane, in batch order in each */
        dq_store_run_t *runs;
        size_t n;
        /* Lane l's runs are [lane[l], lane[l + 1]), sent as ticket[l]. */
        size_t lane[DQ_REDIS_CONNECTIONS_MAX + 1];
        dq_store_ticket_t ticket[DQ_REDIS_CONNECTIONS_MAX];
        int64_t t0, wall; /* when sent: mono, wall ms */
} dq_flight_t;

/* Batches in flight at most: the one Redis runs, and the next, queued
 * behind it on the same connection. */
#define DQ_FLIGHT_MAX 2

struct dq_consumer_s {
        const dq_conf_t *conf;
        dq_store_t *store;
        /* The connections one-step runs go over (redis.connections), a
         * scope to each: lanes[0] is store. */
        dq_store_t *lanes[DQ_REDIS_CONNECTIONS_MAX];
        size_t lane_cnt;
        rd_kafka_t *rk; /* the group consumer */
        rd_kafka_t *pk; /* producer of delay and DLQ copies */
        char worker[128];
        char group[256];
        char **tier_topics;
        int tier_cnt;

        dq_part_t *parts;
        uint64_t gen_seq;
        unsigned rebalance_seq;
        bool in_rebalance;
        bool cooperative;

        volatile sig_atomic_t stop; /* 1: drain, 2: now */
        /* Signals seen, by number, to log from the loop. */
        volatile sig_atomic_t signals[32];
        /* librdkafka raised a fatal error (a fenced static member, a fatal
         * idempotence error): the process stops at once and commits
         * nothing. */
        bool fatal;
        bool commit_failed;     /* the final commit did not succeed */
        int64_t drain_deadline; /* mono ms; 0 until draining */
        bool draining;
        bool handed_back;       /* work given back unsettled at shutdown */
        bool left;              /* the group was left, or leaving was tried */
        int64_t leave_deadline; /* mono ms; 0 until leaving */
        bool left_unfinished;   /* ... and librdkafka's close never ended */

        int64_t copy_max;     /* bytes a copy may take (topics, producer) */
        int outstanding;      /* copies awaiting a delivery report */
        dq_item_t *delivered; /* copies delivered, to finish */
        dq_item_t *redeliver; /* copies whose delivery failed */
        dq_item_t **backlog;  /* messages read while paused for Redis */
        size_t backlog_cnt, backlog_cap;
        /* Deliveries of a job that another record's live claim holds: no
         * attempt spent, asked again every DQ_PARK_RECHECK_MS until that
         * claim ends (G4). */
        dq_item_t *parked;
        int64_t next_unpark;

        bool paused_all;         /* consumption paused: Redis unavailable */
        int64_t next_part_check; /* mono ms; while a partition is blocked */
        int64_t unavailable_at;  /* mono ms of the first failed call */
        bool critical;           /* unavailable past critical.after */
        bool stored_since_commit;
        int64_t next_commit, next_summary;
        int64_t next_ping; /* an idle consumer checks Redis this often */
        uint64_t rnd;

        dq_sched_t sched;

        /* Batches in flight, oldest first, and the copies their answers
         * made, produced by the main loop (dq_batch_land()). */
        dq_flight_t flight[DQ_FLIGHT_MAX];
        size_t flight_cnt;
        dq_item_t *flight_copies;

        /* The LLM backend (NULL: none), its allowed signers, the calls in
         * flight (llm.concurrency) and its circuit (dq_llm_jobs.c). */
        dq_llm_t *llm;
        dq_signers_t *signers;
        size_t llm_running;
        struct {
                bool open;
                bool probing;    /* one job sent to test it */
                int64_t until;   /* wall ms: the next probe */
                int64_t backoff; /* ms of the next opening */
                char code[64];
        } circuit;

        dq_consumer_stats_t st;
        dq_metrics_t *metrics;
        dq_http_t *http;
        bool joined; /* assigned (possibly nothing) since the last revoke */
};

/*
 * dq_consumer.c: lifecycle
 */

/* A pseudo-random number (xorshift64*) that spreads retry times.
 * @locality main loop */
uint64_t dq_consumer_rand(dq_consumer_t *c);

/* True when in-flight work must be given up: a second signal, or the
 * drain ran out of time. The drain's clock starts at the first signal,
 * even while a handler is still running. @locality any */
bool dq_consumer_stopping(dq_consumer_t *c);

/* Publishes the gauges and readiness inputs, and marks progress.
 * @locality any */
void dq_consumer_publish(dq_consumer_t *c);

/* A fatal error of client rk (H3): says why at error level and stops the
 * run at once, committing nothing more. @locality any */
void dq_consumer_fatal(dq_consumer_t *c, rd_kafka_t *rk);

/*
 * dq_item.c: one message, from arrival to settle
 */

/* Out of memory where a message would otherwise go unaccounted: stop hard.
 * Nothing is lost, since nothing unsettled was committed (G1). @locality
 * any */
void dq_oom(void);

/* Builds an item for a consumed message, or returns NULL (and consumes the
 * message) for an error event. @locality main loop, rebalance callback */
dq_item_t *dq_item_new(dq_consumer_t *c, rd_kafka_message_t *m);

/* Frees an item and its message; the job id ("-" for a message that is not
 * a job); pushes an item on a list. @locality any */
void dq_item_free(dq_item_t *it);
const char *dq_item_job_id(const dq_item_t *it);
void dq_item_push(dq_item_t **list, dq_item_t *it);

/* Keeps a message read while paused for Redis, in order. @locality main
 * loop */
void dq_item_backlog_push(dq_consumer_t *c, dq_item_t *it);

/* Reads up to max messages: waits up to timeout_ms for the first, then
 * takes what is already there. Messages from before a rebalance that
 * happened meanwhile are dropped (the new owner reads them). @locality
 * main loop */
size_t dq_item_read(dq_consumer_t *c, dq_item_t **batch, size_t max,
                    int timeout_ms);

/* First look at a message: returns true when it must be claimed and run;
 * otherwise it was held back (delay tier not due), set up for a copy and
 * pushed on *copies, or dropped. @locality main loop */
bool dq_item_classify(dq_consumer_t *c, dq_item_t *it, dq_item_t **copies);

/* The message behind it is settled: log it, let its partition's stored
 * offset move, and free it. @locality main loop, rebalance callback */
void dq_item_settle(dq_consumer_t *c, dq_item_t *it, dq_outcome_t outcome);

/* Hands an item back unsettled: its offset is never stored, so the message
 * is read again by whoever owns the partition next. @locality any */
void dq_item_abandon(dq_consumer_t *c, dq_item_t *it, const char *why);

/*
 * dq_route.c: pure decisions, no I/O. @locality any (they touch no state)
 */

typedef enum dq_route_action_e {
        DQ_ROUTE_RUN,      /* claimed: run the handler */
        DQ_ROUTE_PARK,     /* another record's live claim: ask again later */
        DQ_ROUTE_DEFER,    /* not due: a delay copy until `until` */
        DQ_ROUTE_SETTLE,   /* settled as `outcome`, nothing more to write */
        DQ_ROUTE_DLQ,      /* a DLQ copy: err_class, code, message */
        DQ_ROUTE_COMPLETE, /* write the completion */
        DQ_ROUTE_RETRY,    /* write the retry, then a delay copy (retried) */
        DQ_ROUTE_RESEND,   /* no answer: the outcome is unknown, ask again */
} dq_route_action_t;

typedef struct dq_route_s {
        dq_route_action_t action;
        dq_outcome_t outcome;  /* SETTLE, DEFER, DLQ */
        const char *err_class; /* DLQ, RETRY */
        const char *code;      /* DLQ, RETRY */
        const char *message;   /* DLQ, RETRY */
        bool dead_after;       /* DLQ: set the state dead once delivered */
        int64_t until;         /* DEFER: wall ms */
} dq_route_t;

extern const char *const dq_route_action_names[];

/* What a claim's answer means. */
dq_route_t dq_route_claim(const dq_claim_t *cl);

/* What a handler's result means for the attempt-th run (1-based) of a job
 * that may run max_attempts times. A RETRY's wait is the caller's. */
dq_route_t dq_route_result(const dq_handler_result_t *res, int64_t attempt,
                           int64_t max_attempts);

/* What a settle's answer means. */
dq_route_t dq_route_settled(const dq_settle_t *s);

/* When a delay tier's record is due: its timestamp (now when it has none)
 * plus the tier's delay. */
int64_t dq_route_tier_due(int64_t ts, int64_t now, int64_t tier_ms);

/* Until when a valid job's delivery must wait, or 0 to claim it now: the
 * not-before time a tier copy carries (hopping down the tiers towards
 * it), then the job's scheduled_for. */
int64_t dq_route_wait_until(bool from_tier, int64_t not_before,
                            int64_t scheduled_for, int64_t now);

/*
 * dq_batch.c: claim, run, settle
 */

/* Classifies batch[0..n), then claims, runs and settles the jobs to run,
 * and produces the copies. @locality main loop */
void dq_batch_process(dq_consumer_t *c, dq_item_t **batch, size_t n);

/* Reads the replies of the batches in flight, in the order they were
 * sent, and routes each item by its answer; what got none is sent again
 * until it does (dq_outage_round()). Every other use of the store comes
 * after this: replies are read in order on the one connection. With
 * produce, the copies the answers made are produced; without, they wait
 * in flight_copies for the main loop (a delivery report may land, and
 * produces nothing). @locality main loop, rebalance callback, delivery
 * report (without produce) */
void dq_batch_land(dq_consumer_t *c, bool produce);

/* Asks again for the parked deliveries, when it is time. @locality main
 * loop */
void dq_batch_unpark(dq_consumer_t *c);

/* Settles items[0..n), whose settle is set up, until Redis answers each;
 * routes each by its answer. Copies it makes are pushed on *copies, which
 * may be NULL when only dead settles are given. @locality main loop,
 * rebalance callback */
void dq_batch_settle(dq_consumer_t *c, dq_item_t **items, size_t n,
                     dq_item_t **copies);

/* Runs items[0..n), whose handler is inline, each claimed and completed
 * in one Redis step; copies go to *copies. @locality main loop */
void dq_batch_run_inline(dq_consumer_t *c, dq_item_t **items, size_t n,
                         dq_item_t **copies);

/* Claims items[0..n), whose handler must run, and hands each claimed one
 * to dq_sched_started(); the others are routed as their claim says.
 * @locality main loop */
void dq_batch_claim(dq_consumer_t *c, dq_item_t **items, size_t n,
                    dq_item_t **copies);

/* Sets up and settles the items whose handler finished with res (an array
 * of n), and routes each. @locality main loop, rebalance callback */
void dq_batch_finish(dq_consumer_t *c, dq_item_t **items,
                     dq_handler_result_t *res, size_t n, dq_item_t **copies);

/*
 * dq_sched.c: handlers off the loop, in scope order
 */

/* Starts the pool (handler.threads). -1 with errstr on failure.
 * @locality main loop */
int dq_sched_init(dq_consumer_t *c, char *errstr, size_t errstr_size);

/* Frees the scheduler: cancels the handlers and frees what it holds. */
void dq_sched_destroy(dq_consumer_t *c);

/* True when it must wait for its scope or for a handler: a job whose
 * handler is not inline, or whose scope has work queued or running.
 * @locality main loop */
bool dq_sched_wants(dq_consumer_t *c, const dq_item_t *it);

/* Queues it behind its scope's jobs; a queued job over the same sources
 * that has not started is superseded by it. @locality main loop */
void dq_sched_push(dq_consumer_t *c, dq_item_t *it);

/* A claimed item whose handler now runs on a worker. @locality main loop */
void dq_sched_started(dq_consumer_t *c, dq_item_t *it);

/* An item whose claim said not to run it (parked, deferred, settled):
 * its scope is free again. @locality main loop */
void dq_sched_release(dq_consumer_t *c, dq_item_t *it);

/* Collects finished handlers and settles them, gives up handlers past
 * handler.timeout, renews the running jobs' leases on a timer, and starts
 * the next job of each free scope, up to max.in.flight. @locality main loop
 */
void dq_sched_poll(dq_consumer_t *c);

/* Claimed or running jobs, and jobs waiting for their scope. */
size_t dq_sched_running(const dq_consumer_t *c);
size_t dq_sched_queued(const dq_consumer_t *c);

/* A partition leaves (revoke) or the run ends (topic NULL): waits up to
 * budget_ms for its running handlers and settles them, then hands back
 * what is left, running or queued. @locality main loop, rebalance
 * callback */
void dq_sched_give_back(dq_consumer_t *c, const char *topic, int32_t partition,
                        int64_t budget_ms);

/*
 * dq_llm_jobs.c: llm_summary jobs, their attestations and the circuit
 */

/* Sets up the backend and the allowed signers (llm.*). -1 with errstr when
 * they are bad. @locality main loop */
int dq_llm_jobs_init(dq_consumer_t *c, char *errstr, size_t errstr_size);
void dq_llm_jobs_destroy(dq_consumer_t *c);

/* True for a job that calls the backend. */
bool dq_llm_jobs_is_llm(const dq_consumer_t *c, const dq_item_t *it);

/* Before its claim: verifies an llm_summary job's attestation (G12). When
 * it holds, the claim takes its nonce and reads its sources; when not,
 * it->refusal says why and the job is dead-lettered once claimed. */
void dq_llm_jobs_prepare_claim(dq_consumer_t *c, dq_item_t *it, dq_claim_t *cl);

typedef enum dq_llm_gate_e {
        DQ_LLM_GATE_RUN,   /* start it */
        DQ_LLM_GATE_PROBE, /* start it as the half-open circuit's probe */
        DQ_LLM_GATE_WAIT,  /* leave it queued (concurrency, a probe out) */
        DQ_LLM_GATE_DEFER, /* circuit open: to a delay tier until *until */
} dq_llm_gate_t;

/* Whether the llm job at the head of a free scope may start now. */
dq_llm_gate_t dq_llm_jobs_gate(dq_consumer_t *c, int64_t *until);

/* The probe left without an answer (its claim said not to run it, or it
 * was handed back): the next job probes instead. */
void dq_llm_jobs_probe_gone(dq_consumer_t *c);

/* A finished llm handler's answer: metrics, and the circuit (a no-blame
 * failure opens it, any other answer closes it). Returns the not-before
 * time of a job handed back (no blame), else 0. */
int64_t dq_llm_jobs_result(dq_consumer_t *c, const dq_item_t *it,
                           const dq_handler_result_t *res);

/* Fills it's summary from res (taking its content) for the settle. */
void dq_llm_jobs_summary(dq_item_t *it, dq_handler_result_t *res);

/*
 * dq_outage.c: Redis outages
 */

/* One round trip for items[0..n): drops the items whose partition was
 * revoked, routes every item whose reply was read, and returns the number
 * k whose reply was not (the outcome is unknown), moved to items[0..k).
 * Sets *heard when Redis answered at all. */
typedef size_t(dq_round_fn)(dq_consumer_t *c, dq_item_t **items, size_t n,
                            bool *heard, void *opaque);

/* Sends items[0..n) through round until every reply is read: while Redis
 * is unavailable it waits (dq_outage_wait()) and sends the unanswered
 * ones again, in their order; on shutdown it hands them back. The array
 * is the caller's, reordered. @locality main loop, rebalance callback */
void dq_outage_round(dq_consumer_t *c, dq_item_t **items, size_t n,
                     dq_round_fn *round, void *opaque);

/* Called after a Redis call whose outcome is unknown. Pauses consumption
 * (nothing new is claimed and no offset moves), keeps serving the group,
 * waits with capped backoff, and returns true to try again, or false when
 * the work must be handed back (shutdown). A job is never dead-lettered
 * for an outage (it is not the job's fault). @locality main loop,
 * rebalance callback */
bool dq_outage_wait(dq_consumer_t *c, int *tries);

/* Redis answered: ends an outage and resumes. @locality any */
void dq_outage_over(dq_consumer_t *c);

/* Before reading more after an outage, asks Redis itself. Returns false
 * on shutdown. @locality main loop */
bool dq_outage_recovered(dq_consumer_t *c);

/* The wait before try number tries + 1 (0-based tries): 100 ms doubling,
 * at most max_ms. @locality any (pure) */
int64_t dq_capped_backoff(int tries, int64_t max_ms);

/*
 * dq_copy.c: delay and DLQ copies
 */

/* Sets a dead-letter copy up: class, code and message. @locality main
 * loop, rebalance callback */
void dq_copy_to_dlq(dq_item_t *it, const char *cls, const char *code,
                    const char *message, bool dead_after);

/* Sets a delay copy up for a wait until not_before. @locality main loop,
 * rebalance callback */
void dq_copy_to_delay(dq_consumer_t *c, dq_item_t *it, int64_t not_before,
                      dq_outcome_t outcome);

/* Produces the copies of a list, in arrival order per partition.
 * @locality main loop */
void dq_copy_produce(dq_consumer_t *c, dq_item_t *copies);

/* Serves delivery reports for up to timeout_ms and finishes them.
 * @locality main loop, rebalance callback */
void dq_copy_serve(dq_consumer_t *c, int timeout_ms);

/* @locality delivery report */
void dq_copy_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/*
 * dq_part.c: partitions, holds, offsets and commit
 */

/* The assigned partition topic/partition, or NULL. @locality any */
dq_part_t *dq_part_find(dq_consumer_t *c, const char *topic, int32_t partition);

/* The partition an item came from, when it is still assigned under the
 * same assignment it was read in. @locality any */
dq_part_t *dq_item_part(dq_consumer_t *c, const dq_item_t *it);

/* Commits the stored offsets, after storing what settled since: in the
 * background when wait_ms is 0, else waiting for the answer up to wait_ms
 * or a second signal. Returns false when a commit was due and failed or
 * went unanswered. After a fatal error nothing is committed.
 * @locality main loop, rebalance callback */
bool dq_part_commit(dq_consumer_t *c, int64_t wait_ms);

/* Pause and resume every partition (a Redis outage, the drain) or one. A
 * resume skips partitions held or blocked, and reads a held partition
 * again from its held offset. @locality main loop, rebalance callback */
void dq_part_pause_all(dq_consumer_t *c, const char *why);
void dq_part_resume_all(dq_consumer_t *c);
void dq_part_pause(dq_consumer_t *c, const dq_part_t *p);
void dq_part_resume(dq_consumer_t *c, dq_part_t *p);

/* Holds a delay-tier partition at offset until due_ms (G6: the tier's
 * records come due in order, so nothing behind it is due earlier).
 * @locality main loop */
void dq_part_hold(dq_consumer_t *c, dq_part_t *p, int64_t offset,
                  int64_t due_ms);

/* Resumes the holds that are due. @locality main loop */
void dq_part_release_due(dq_consumer_t *c);

/* Milliseconds until the next hold is due, at most 100. @locality main
 * loop */
int dq_part_next_timeout(dq_consumer_t *c);

/* H5: pauses (blocks) the partitions numbered past the DLQ's or a tier's
 * partition count, and resumes those that are no longer. @locality main
 * loop, rebalance callback */
void dq_part_check(dq_consumer_t *c);
/* @locality main loop */
bool dq_part_any_blocked(const dq_consumer_t *c);

/* Tracks an assignment's partitions, with a new generation each; forgets
 * a revoked one. @locality rebalance callback */
void dq_part_add(dq_consumer_t *c, const rd_kafka_topic_partition_list_t *l);
void dq_part_remove(dq_consumer_t *c, const char *topic, int32_t partition);

/*
 * dq_rebalance.c: librdkafka's callbacks
 */

/* @locality rebalance callback */
void dq_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                     rd_kafka_topic_partition_list_t *partitions, void *opaque);
/* @locality any poll of either client */
void dq_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);
/* @locality any poll of the group consumer */
int dq_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);
/* @locality inside a poll or a synchronous commit of the group consumer */
void dq_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                  rd_kafka_topic_partition_list_t *offsets, void *opaque);

/*
 * dq_setup.c: clients, tiers, topics
 */

/* Set-up, from dq_consumer_new() before the loop runs. @locality main
 * thread, before the run */

/* Names the delay tiers' topics from delay.tiers ("5s" for 5000 ms). */
int dq_setup_tiers(dq_consumer_t *c);
/* The copy producer (idempotent, acks=all, a copy's size) and the group
 * consumer (eager assignment, offsets stored and committed by the
 * engine). */
rd_kafka_t *dq_setup_producer(dq_consumer_t *c, char *errstr,
                              size_t errstr_size);
rd_kafka_t *dq_setup_consumer(dq_consumer_t *c, char *errstr,
                              size_t errstr_size);

/* Checks that every topic exists, that the DLQ and the tiers have at least
 * the jobs topic's partitions and accept a copy's size; creates missing
 * ones when create > 0 (with that many partitions). */
int dq_setup_topics(dq_consumer_t *c, int create, char *errstr,
                    size_t errstr_size);

#endif
