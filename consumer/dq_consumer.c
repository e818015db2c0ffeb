/* The decay-consumer engine; see dq_consumer.h.
 *
 * One thread runs everything: consume a batch, claim its runnable jobs in
 * one pipelined Redis round trip, run the handlers, settle in one more round
 * trip, and hand retries and dead letters to a producer. A message is
 * settled when its job is terminal in Redis, or when its delay or DLQ copy
 * has a successful delivery report; only then may its partition's stored
 * offset move past it (dq_offsets.h). Stored offsets are committed every
 * commit.interval, on revoke and on shutdown. */
#define _GNU_SOURCE
#include "dq_consumer.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>
#include <openssl/sha.h>

#include "dq_handler.h"
#include "dq_http.h"
#include "dq_metrics.h"
#include "dq_kafka.h"
#include "dq_log.h"
#include "dq_offsets.h"
#include "dq_retry.h"
#include "dq_store.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

#define MAX_TOPIC         256
#define ERR_MESSAGE_MAX   1024
#define REVOKE_DRAIN_MAX  10000 /* ms a revoke waits for pending copies */
#define REDIS_BACKOFF_MAX 2000
#define IDLE_PING_MS      1000
#define PARK_RECHECK_MS   250 /* a parked delivery asks again this often */

/* Counts of the run summary (logged by summary()). */
typedef struct dq_consumer_stats_s {
        int64_t consumed;  /* messages read */
        int64_t claimed;   /* runs started (attempts counted) */
        int64_t completed; /* effect applied, state completed */
        int64_t retried;   /* sent to a delay tier after a failure */
        int64_t dead;      /* sent to the DLQ */
        int64_t duplicate; /* idempotency key already used */
        int64_t skipped;   /* already terminal, cancelled or superseded */
        int64_t deferred;  /* sent to a delay tier before its time */
        int64_t abandoned; /* handed back unsettled (shutdown, revoke) */
} dq_consumer_stats_t;

/* One assigned partition. */
typedef struct part_s {
        char topic[MAX_TOPIC];
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
        struct part_s *next;
} part_t;

typedef enum copy_e {
        COPY_NONE,
        COPY_DELAY,
        COPY_DLQ,
} copy_t;

/* One consumed message, from its arrival until it is settled. */
typedef struct item_s {
        rd_kafka_message_t *msg;
        char topic[MAX_TOPIC];
        int32_t partition;
        int64_t offset;
        uint64_t gen;
        dq_job_t *job; /* NULL for a message that is not a valid job */

        /* Carried over from a delay copy, or this record's own. */
        char orig_topic[MAX_TOPIC];
        int32_t orig_partition;
        int64_t orig_offset;
        int64_t orig_ts;
        char ref[MAX_TOPIC + 48]; /* "topic/partition/offset" of this record */
        int64_t first_failed_at;  /* 0: never failed */
        int64_t replay_count;
        int64_t attempts;
        int64_t epoch;

        /* The copy to produce, and why. */
        copy_t copy;
        int tier;
        int64_t not_before;
        const char *err_class;
        char err_code[64];
        char err_message[ERR_MESSAGE_MAX + 1];
        bool dead_after; /* set state dead once the DLQ copy is delivered */
        const char *outcome;
        int64_t max_bytes; /* cut a DLQ copy to this; 0: copy_max */
        int send_failures; /* sends of its copy that failed */
        int64_t next_try;  /* mono ms: when a failed copy goes again */

        dq_claim_t claim;
        dq_settle_t settle;
        int64_t claimed_at; /* mono ms; 0 until claimed */
        int64_t claim_wall; /* wall ms the claim was made at (its "now") */
        struct item_s *next;
} item_t;

struct dq_consumer_s {
        const dq_conf_t *conf;
        dq_store_t *store;
        rd_kafka_t *rk; /* the group consumer */
        rd_kafka_t *pk; /* producer of delay and DLQ copies */
        char worker[128];
        char group[256];
        char **tier_topics;
        int tier_cnt;

        part_t *parts;
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
        bool handed_back; /* work given back unsettled at shutdown */

        int64_t copy_max;  /* bytes a copy may take (topics, producer) */
        int outstanding;   /* copies awaiting a delivery report */
        item_t *delivered; /* copies delivered, to finish */
        item_t *redeliver; /* copies whose delivery failed */
        item_t **backlog;  /* messages read while paused for Redis */
        size_t backlog_cnt, backlog_cap;
        /* Deliveries of a job that another record's live claim holds: no
         * attempt spent, asked again every PARK_RECHECK_MS until that
         * claim ends (G4). */
        item_t *parked;
        int64_t next_unpark;

        bool paused_all;         /* consumption paused: Redis unavailable */
        int64_t next_part_check; /* mono ms; while a partition is blocked */
        int64_t unavailable_at;  /* mono ms of the first failed call */
        bool critical;           /* unavailable past critical.after */
        bool stored_since_commit;
        int64_t next_commit, next_summary;
        int64_t next_ping; /* an idle consumer checks Redis this often */
        uint64_t rnd;

        dq_consumer_stats_t st;
        dq_metrics_t *metrics;
        dq_http_t *http;
        bool joined; /* assigned (possibly nothing) since the last revoke */
};

/*
 * Small helpers
 */

static uint64_t next_rand(dq_consumer_t *c)
{
        /* xorshift64*: only spreads retry times, needs no strength. */
        c->rnd ^= c->rnd >> 12;
        c->rnd ^= c->rnd << 25;
        c->rnd ^= c->rnd >> 27;
        return c->rnd * 2685821657736338717ULL;
}

/* True when in-flight work must be given up: a second signal, or the
 * drain ran out of time. The drain's clock starts at the first signal,
 * even while a handler is still running. */
static bool stopping_now(dq_consumer_t *c)
{
        if (c->stop == 1 && !c->drain_deadline)
                c->drain_deadline = dq_mono_ms() + c->conf->drain_timeout_ms;
        return c->stop >= 2 ||
               (c->drain_deadline && dq_mono_ms() >= c->drain_deadline);
}

static void sleep_ms(int64_t ms)
{
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
}

static part_t *part_find(dq_consumer_t *c, const char *topic, int32_t partition)
{
        for (part_t *p = c->parts; p; p = p->next)
                if (p->partition == partition && !strcmp(p->topic, topic))
                        return p;
        return NULL;
}

/* The partition an item came from, when it is still assigned under the same
 * assignment it was read in. */
static part_t *item_part(dq_consumer_t *c, const item_t *it)
{
        part_t *p = part_find(c, it->topic, it->partition);
        return p && p->gen == it->gen ? p : NULL;
}

static int topic_tier(const dq_consumer_t *c, const char *topic)
{
        for (int i = 0; i < c->tier_cnt; i++)
                if (!strcmp(c->tier_topics[i], topic))
                        return i;
        return -1;
}

/* Out of memory where a message would otherwise go unaccounted: stop hard.
 * Nothing is lost, since nothing unsettled was committed (G1). */
static void oom(void)
{
        dq_error("consume", "out of memory: aborting; uncommitted messages "
                            "are read again after a restart");
        abort();
}

static void item_free(item_t *it)
{
        if (!it)
                return;
        if (it->msg)
                rd_kafka_message_destroy(it->msg);
        dq_job_destroy(it->job);
        free(it);
}

static const char *job_id(const item_t *it)
{
        return it->job ? it->job->id : "-";
}

/*
 * Settling and offsets
 */

static void count_outcome(dq_consumer_t *c, const char *outcome)
{
        if (!strcmp(outcome, "completed"))
                c->st.completed++;
        else if (!strcmp(outcome, "retried"))
                c->st.retried++;
        else if (!strcmp(outcome, "dead"))
                c->st.dead++;
        else if (!strcmp(outcome, "duplicate"))
                c->st.duplicate++;
        else if (!strcmp(outcome, "deferred"))
                c->st.deferred++;
        else
                c->st.skipped++;
}

/* The message behind it is settled: log it, let its partition's stored
 * offset move, and free it. */
static void settle_item(dq_consumer_t *c, item_t *it, const char *outcome)
{
        part_t *p = item_part(c, it);
        int64_t next;

        if (!p) {
                /* Revoked meanwhile: the new owner reads it again. */
                dq_debug("settle",
                         "topic=%s partition=%d offset=%lld job=%s "
                         "outcome=%s owned=false",
                         it->topic, (int)it->partition, (long long)it->offset,
                         job_id(it), outcome);
                item_free(it);
                return;
        }
        dq_debug("settle",
                 "topic=%s partition=%d offset=%lld job=%s outcome=%s "
                 "attempts=%lld",
                 it->topic, (int)it->partition, (long long)it->offset,
                 job_id(it), outcome, (long long)it->attempts);
        count_outcome(c, outcome);
        if (c->metrics) {
                /* End to end: first produce to terminal; a retry or a
                 * deferral is not an end. */
                bool end = strcmp(outcome, "retried") &&
                           strcmp(outcome, "deferred") && it->orig_ts > 0;
                dq_metrics_settle(
                    c->metrics, outcome,
                    it->job ? dq_kind_name(it->job->kind) : NULL,
                    it->err_class ? it->err_code : NULL,
                    it->claimed_at ? (double)(dq_mono_ms() - it->claimed_at)
                                   : -1,
                    end ? (double)(dq_now_ms() - it->orig_ts) : -1);
        }
        if (dq_offsets_settle(&p->off, it->offset, &next))
                p->store_next = next; /* stored by the next commit() */
        item_free(it);
}

/* Hands an item back unsettled: its offset is never stored, so the message
 * is read again by whoever owns the partition next. */
static void abandon_item(dq_consumer_t *c, item_t *it, const char *why)
{
        dq_info("settle",
                "topic=%s partition=%d offset=%lld job=%s outcome=abandoned "
                "reason=%s",
                it->topic, (int)it->partition, (long long)it->offset,
                job_id(it), why);
        c->st.abandoned++;
        dq_metrics_count(c->metrics, "abandoned",
                         it->job ? dq_kind_name(it->job->kind) : NULL, NULL);
        if (c->stop)
                c->handed_back = true;
        item_free(it);
}

static void offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t *offsets,
                             void *opaque)
{
        dq_consumer_t *c = opaque;

        (void)rk;
        if (err == RD_KAFKA_RESP_ERR__NO_OFFSET)
                return;
        for (int i = 0; offsets && i < offsets->cnt; i++) {
                const rd_kafka_topic_partition_t *tp = &offsets->elems[i];
                rd_kafka_resp_err_t perr = err ? err : tp->err;

                if (tp->offset < 0)
                        continue;
                dq_metrics_event(c->metrics,
                                 perr ? DQ_EV_COMMIT_FAILED : DQ_EV_COMMIT);
                if (perr)
                        c->stored_since_commit = true; /* try again */
                if (perr)
                        dq_warn("commit",
                                "topic=%s partition=%d offset=%lld "
                                "result=failed err=%s",
                                tp->topic, (int)tp->partition,
                                (long long)tp->offset, rd_kafka_err2name(perr));
                else
                        dq_debug("commit",
                                 "topic=%s partition=%d offset=%lld "
                                 "result=ok",
                                 tp->topic, (int)tp->partition,
                                 (long long)tp->offset);
        }
}

/* Stores each partition's settled prefix that moved since the last call,
 * in one call for all of them. */
static void store_offsets(dq_consumer_t *c)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(8);
        rd_kafka_resp_err_t err;

        for (part_t *p = c->parts; p; p = p->next) {
                if (p->store_next < 0)
                        continue;
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition)
                    ->offset = p->store_next;
                p->store_next = -1;
        }
        if (l->cnt == 0) {
                rd_kafka_topic_partition_list_destroy(l);
                return;
        }
        err = rd_kafka_offsets_store(c->rk, l);
        for (int i = 0; i < l->cnt; i++) {
                rd_kafka_resp_err_t perr = err ? err : l->elems[i].err;
                if (perr)
                        /* Not assigned any more (__STATE): expected around
                         * a rebalance, the new owner reads it again. */
                        dq_debug("commit",
                                 "topic=%s partition=%d offset=%lld "
                                 "store=failed err=%s",
                                 l->elems[i].topic, (int)l->elems[i].partition,
                                 (long long)l->elems[i].offset,
                                 rd_kafka_err2name(perr));
                else
                        c->stored_since_commit = true;
        }
        rd_kafka_topic_partition_list_destroy(l);
}

/* Commits the stored offsets, after storing what settled since. Returns
 * false when a commit was due and failed. After a fatal error nothing is
 * committed: the client's state can no longer be trusted. */
static bool commit(dq_consumer_t *c, bool sync)
{
        rd_kafka_resp_err_t err;

        if (c->fatal)
                return false;
        store_offsets(c);
        if (!c->stored_since_commit)
                return true;
        err = rd_kafka_commit(c->rk, NULL, sync ? 0 : 1);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET) {
                dq_warn("commit", "result=failed sync=%s err=%s",
                        sync ? "true" : "false", rd_kafka_err2name(err));
                return false;
        }
        c->stored_since_commit = false;
        return true;
}

/*
 * Pausing
 */

static rd_kafka_topic_partition_list_t *parts_list(dq_consumer_t *c)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(8);
        for (part_t *p = c->parts; p; p = p->next)
                rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        return l;
}

/* Stops fetching from every partition; messages already fetched and not
 * yet returned are dropped by librdkafka and fetched again on resume. */
static void pause_all(dq_consumer_t *c, const char *why)
{
        rd_kafka_topic_partition_list_t *l;

        if (c->paused_all)
                return;
        l = parts_list(c);
        rd_kafka_pause_partitions(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        c->paused_all = true;
        dq_info("consume", "paused=all reason=%s", why);
}

/* Resumes p. After a delay hold, reads again from the held offset: the
 * messages behind it were returned before the pause and dropped. */
static void part_resume(dq_consumer_t *c, part_t *p)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        rd_kafka_error_t *error;

        rd_kafka_topic_partition_list_add(l, p->topic, p->partition)->offset =
            p->paused_offset;
        rd_kafka_resume_partitions(c->rk, l);
        if (p->seek_pending) {
                error = rd_kafka_seek_partitions(c->rk, l, 5000);
                if (error) {
                        dq_error("consume",
                                 "topic=%s partition=%d seek=failed err=%s",
                                 p->topic, (int)p->partition,
                                 rd_kafka_error_string(error));
                        rd_kafka_error_destroy(error);
                } else {
                        p->seek_pending = false;
                        dq_debug("consume",
                                 "topic=%s partition=%d resumed_at=%lld",
                                 p->topic, (int)p->partition,
                                 (long long)p->paused_offset);
                }
        }
        rd_kafka_topic_partition_list_destroy(l);
}

static void resume_all(dq_consumer_t *c)
{
        if (!c->paused_all)
                return;
        for (part_t *p = c->parts; p; p = p->next)
                if (!p->delay_paused && !p->blocked)
                        part_resume(c, p);
        c->paused_all = false;
        dq_info("consume", "resumed=all");
}

/* Holds a delay-tier partition at offset until due_ms (G6: the tier's
 * records come due in order, so nothing behind it is due earlier). */
/* Stops fetching from p alone. */
static void part_pause(dq_consumer_t *c, const part_t *p)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);

        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        rd_kafka_pause_partitions(c->rk, l);
        rd_kafka_topic_partition_list_destroy(l);
}

static void delay_pause(dq_consumer_t *c, part_t *p, int64_t offset,
                        int64_t due_ms)
{
        part_pause(c, p);
        p->delay_paused = true;
        p->seek_pending = true;
        p->paused_offset = offset;
        p->resume_at = due_ms;
        dq_debug(
            "consume", "topic=%s partition=%d offset=%lld paused_until=%lld",
            p->topic, (int)p->partition, (long long)offset, (long long)due_ms);
}

static void delay_resume_due(dq_consumer_t *c)
{
        int64_t now = dq_now_ms();

        for (part_t *p = c->parts; p; p = p->next) {
                if (!p->delay_paused || p->resume_at > now)
                        continue;
                p->delay_paused = false;
                /* Else resume_all() or parts_check() takes it back. */
                if (!c->paused_all && !p->blocked)
                        part_resume(c, p);
        }
}

/*
 * Redis outages
 */

static void backlog_push(dq_consumer_t *c, item_t *it)
{
        if (c->backlog_cnt == c->backlog_cap) {
                size_t cap = c->backlog_cap ? c->backlog_cap * 2 : 64;
                item_t **b = realloc(c->backlog, cap * sizeof(*b));
                if (!b)
                        oom();
                c->backlog = b;
                c->backlog_cap = cap;
        }
        c->backlog[c->backlog_cnt++] = it;
}

static item_t *item_new(dq_consumer_t *c, rd_kafka_message_t *m);

/* Publishes the gauges and readiness inputs, and marks progress. */
static void publish(dq_consumer_t *c)
{
        dq_gauges_t g = {0};

        if (!c->metrics)
                return;
        for (part_t *p = c->parts; p; p = p->next) {
                g.assigned++;
                g.paused += c->paused_all || p->delay_paused || p->blocked;
                g.parts_blocked += p->blocked;
                g.in_flight += (int)dq_offsets_pending(&p->off);
        }
        g.in_flight += (int)c->backlog_cnt;
        for (const item_t *it = c->redeliver; it; it = it->next)
                g.copies_failing++;
        g.joined = c->joined;
        g.redis_ok = !c->unavailable_at;
        g.critical = c->critical;
        g.draining = c->stop != 0;
        g.fatal = c->fatal;
        dq_metrics_gauges(c->metrics, &g);
        dq_metrics_tick(c->metrics);
}

/* The wait before try number tries + 1 (0-based tries): 100 ms doubling,
 * at most max_ms. */
static int64_t capped_backoff(int tries, int64_t max_ms)
{
        int64_t ms = 100LL << (tries < 10 ? tries : 10);
        return ms < max_ms ? ms : max_ms;
}

/* Called after a Redis call whose outcome is unknown. Pauses consumption
 * (nothing new is claimed and no offset moves), keeps serving the group,
 * waits with capped backoff, and returns true to try again, or false when
 * the work must be handed back (shutdown). A job is never dead-lettered
 * for an outage (it is not the job's fault). */
static bool redis_wait(dq_consumer_t *c, int *tries)
{
        int64_t backoff = capped_backoff((*tries)++, REDIS_BACKOFF_MAX);
        int64_t until;

        if (!c->unavailable_at) {
                c->unavailable_at = dq_mono_ms();
                dq_warn("redis", "state=unavailable action=pause_and_retry");
        }
        if (!c->critical &&
            dq_mono_ms() - c->unavailable_at >= c->conf->critical_after_ms) {
                c->critical = true;
                dq_error("redis",
                         "state=critical unavailable_ms=%lld "
                         "action=paused_until_redis_returns",
                         (long long)(dq_mono_ms() - c->unavailable_at));
        }
        if (!c->in_rebalance)
                pause_all(c, "redis_unavailable");

        until = dq_mono_ms() + backoff;
        while (dq_mono_ms() < until) {
                publish(c); /* waiting for Redis is the loop's work now */
                if (stopping_now(c))
                        return false;
                if (c->in_rebalance) {
                        sleep_ms(50);
                        continue;
                }
                /* Serves rebalances and keeps the member alive; with every
                 * partition paused, a message is rare but kept in order. */
                rd_kafka_message_t *m = rd_kafka_consumer_poll(c->rk, 50);
                if (m) {
                        item_t *it = item_new(c, m);
                        if (it)
                                backlog_push(c, it);
                }
                rd_kafka_poll(c->pk, 0);
        }
        return true;
}

static void redis_ok(dq_consumer_t *c)
{
        if (!c->unavailable_at)
                return;
        dq_info("redis", "state=available outage_ms=%lld",
                (long long)(dq_mono_ms() - c->unavailable_at));
        c->unavailable_at = 0;
        c->critical = false;
        if (!c->in_rebalance)
                resume_all(c);
}

/* An outage is over only when Redis answers. A batch that saw it may end
 * without an answer (its partitions were revoked meanwhile), so before
 * reading more the consumer asks Redis itself. Returns false on shutdown. */
static bool redis_recovered(dq_consumer_t *c)
{
        int tries = 0;

        while (dq_store_ping(c->store) != DQ_OK)
                if (!redis_wait(c, &tries))
                        return false;
        redis_ok(c);
        return true;
}

/*
 * Copies to the delay tiers and the DLQ
 */

static void add_hdr(rd_kafka_headers_t *h, const char *name, const char *v)
{
        rd_kafka_header_add(h, name, -1, v, -1);
}

static void add_hdr_int(rd_kafka_headers_t *h, const char *name, int64_t v)
{
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)v);
        add_hdr(h, name, buf);
}

static void add_hdr_time(rd_kafka_headers_t *h, const char *name, int64_t ms)
{
        char buf[64];
        add_hdr(h, name, dq_time_format_rfc3339(ms, buf, sizeof(buf)));
}

/* The header set of a copy. It replaces the record's earlier headers, so a
 * record's size stays bounded however often it hops. */
static rd_kafka_headers_t *copy_headers(dq_consumer_t *c, const item_t *it)
{
        rd_kafka_headers_t *h = rd_kafka_headers_new(16);
        char trace[256];

        if (dq_kafka_header(it->msg, "decayq-schema", trace, sizeof(trace)))
                add_hdr(h, "decayq-schema", trace);
        if (dq_kafka_header(it->msg, "decayq-trace-id", trace, sizeof(trace)))
                add_hdr(h, "decayq-trace-id", trace);
        add_hdr_int(h, "decayq-attempts", it->attempts);
        add_hdr_time(h, "decayq-not-before",
                     it->copy == COPY_DELAY ? it->not_before : dq_now_ms());
        add_hdr(h, "decayq-original-topic", it->orig_topic);
        add_hdr_int(h, "decayq-original-partition", it->orig_partition);
        add_hdr_int(h, "decayq-original-offset", it->orig_offset);
        add_hdr_time(h, "decayq-original-timestamp", it->orig_ts);
        add_hdr(h, "decayq-consumer-group", c->group);
        add_hdr(h, "decayq-worker", c->worker);
        if (it->err_class) {
                add_hdr(h, "decayq-error-class", it->err_class);
                add_hdr(h, "decayq-error-code", it->err_code);
                add_hdr(h, "decayq-error-message", it->err_message);
        }
        if (it->first_failed_at)
                add_hdr_time(h, "decayq-first-failed-at", it->first_failed_at);
        add_hdr_int(h, "decayq-replay-count", it->replay_count);
        return h;
}

static void push(item_t **list, item_t *it)
{
        it->next = *list;
        *list = it;
}

/* What a header set adds to a record, with room for its framing. */
static size_t hdrs_size(const rd_kafka_headers_t *h)
{
        const char *name;
        const void *v;
        size_t len, n = 0;

        for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &v, &len); i++)
                n += strlen(name) + len + 16;
        return n;
}

#define COPY_FRAMING     512  /* a record's own framing in its batch */
#define COPY_BACKOFF_MAX 5000 /* ms between sends of a failing copy */
#define COPY_KEY_KEPT    1024 /* a cut copy keeps this much of its key */

/* Cuts a DLQ copy that would not fit in max bytes (G7: it reaches the DLQ
 * all the same): the key to COPY_KEY_KEPT bytes, then the payload to what
 * is left. Headers say what was cut, with the original sizes and the
 * payload's SHA-256, so that an operator can match it with the original. */
static void cut_copy(const item_t *it, rd_kafka_headers_t *h, int64_t max,
                     size_t *key_len, size_t *len)
{
        unsigned char md[SHA256_DIGEST_LENGTH];
        char hex[2 * SHA256_DIGEST_LENGTH + 1];
        int64_t room;

        SHA256(it->msg->payload, it->msg->len, md);
        for (size_t i = 0; i < sizeof(md); i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
        add_hdr(h, "decayq-truncated",
                *key_len > COPY_KEY_KEPT ? "key,payload" : "payload");
        add_hdr_int(h, "decayq-original-size", (int64_t)it->msg->len);
        add_hdr_int(h, "decayq-original-key-size", (int64_t)*key_len);
        add_hdr(h, "decayq-original-sha256", hex);
        if (*key_len > COPY_KEY_KEPT)
                *key_len = COPY_KEY_KEPT;
        room = max - (int64_t)(hdrs_size(h) + COPY_FRAMING + *key_len);
        *len = room <= 0 ? 0 : (size_t)room < *len ? (size_t)room : *len;
}

static void to_dlq(item_t *it, const char *cls, const char *code,
                   const char *message, bool dead_after);

/* A copy's send failed: it goes again after a capped backoff, never
 * dropped, and readiness says so until it is delivered. A copy too large
 * for its topic is cut (DLQ) or, as a delay copy cannot be cut, sent to
 * the DLQ instead. */
static void copy_failed(dq_consumer_t *c, item_t *it, rd_kafka_resp_err_t err)
{
        int64_t backoff = capped_backoff(it->send_failures++, COPY_BACKOFF_MAX);

        if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
                if (it->copy == COPY_DELAY) {
                        char msg[256];
                        snprintf(msg, sizeof(msg),
                                 "a %zu-byte delay copy does not fit in "
                                 "topic %s",
                                 it->msg->len + it->msg->key_len,
                                 c->tier_topics[it->tier]);
                        to_dlq(it, "fatal", "decay.copy.too_large", msg,
                               it->epoch > 0);
                        backoff = 0;
                } else {
                        int64_t cur =
                            it->max_bytes ? it->max_bytes : c->copy_max;
                        it->max_bytes = cur / 2 > 4096 ? cur / 2 : 4096;
                        if (it->max_bytes < cur)
                                backoff = 0; /* smaller: try it at once */
                }
        }
        it->next_try = dq_mono_ms() + backoff;
        dq_warn("dispatch",
                "topic=%s partition=%d offset=%lld job=%s copy=%s "
                "produce=failed err=%s failures=%d action=retry "
                "retry_in_ms=%lld",
                it->topic, (int)it->partition, (long long)it->offset,
                job_id(it), it->copy == COPY_DLQ ? "dlq" : "delay",
                rd_kafka_err2name(err), it->send_failures, (long long)backoff);
        push(&c->redeliver, it);
}

/* Produces it's copy; the delivery report finishes it (dr_msg_cb). */
static void produce_copy(dq_consumer_t *c, item_t *it)
{
        const char *topic = it->copy == COPY_DLQ ? c->conf->topic_dlq
                                                 : c->tier_topics[it->tier];
        rd_kafka_headers_t *h = copy_headers(c, it);
        size_t key_len = it->msg->key_len, len = it->msg->len;
        int64_t max = it->max_bytes ? it->max_bytes : c->copy_max;
        rd_kafka_resp_err_t err;

        if (it->copy == COPY_DLQ &&
            (int64_t)(key_len + len + hdrs_size(h) + COPY_FRAMING) > max) {
                cut_copy(it, h, max, &key_len, &len);
                dq_warn("dispatch",
                        "topic=%s partition=%d offset=%lld job=%s "
                        "copy=dlq truncated=true original_bytes=%zu "
                        "kept_bytes=%zu",
                        it->topic, (int)it->partition, (long long)it->offset,
                        job_id(it), it->msg->len, len);
        }
        for (;;) {
                err = rd_kafka_producev(
                    c->pk, RD_KAFKA_V_TOPIC(topic),
                    RD_KAFKA_V_PARTITION(it->orig_partition),
                    RD_KAFKA_V_KEY(it->msg->key, key_len),
                    RD_KAFKA_V_VALUE(it->msg->payload, len),
                    RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE(it),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                        break;
                rd_kafka_poll(c->pk, 100);
        }
        if (err) {
                rd_kafka_headers_destroy(h);
                copy_failed(c, it, err);
                return;
        }
        c->outstanding++;
        dq_debug("dispatch",
                 "topic=%s partition=%d offset=%lld job=%s to=%s "
                 "attempts=%lld class=%s code=%s",
                 it->topic, (int)it->partition, (long long)it->offset,
                 job_id(it), topic, (long long)it->attempts,
                 it->err_class ? it->err_class : "-",
                 it->err_class ? it->err_code : "-");
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
        dq_consumer_t *c = opaque;
        item_t *it = m->_private;

        (void)rk;
        c->outstanding--;
        if (m->err) {
                copy_failed(c, it, m->err);
                return;
        }
        push(&c->delivered, it);
}

/* Sets a dead-letter copy up: class, code and message. */
static void to_dlq(item_t *it, const char *cls, const char *code,
                   const char *message, bool dead_after)
{
        it->copy = COPY_DLQ;
        it->err_class = cls;
        snprintf(it->err_code, sizeof(it->err_code), "%s", code);
        snprintf(it->err_message, sizeof(it->err_message), "%s", message);
        it->dead_after = dead_after;
        if (!it->first_failed_at)
                it->first_failed_at = dq_now_ms();
        it->outcome = "dead";
}

/* Sets a delay copy up for a wait until not_before. */
static void to_delay(dq_consumer_t *c, item_t *it, int64_t not_before,
                     const char *outcome)
{
        it->copy = COPY_DELAY;
        it->not_before = not_before;
        it->tier = dq_tier_pick(c->conf->delay_tier_ms, c->conf->delay_tier_cnt,
                                not_before - dq_now_ms());
        it->outcome = outcome;
}

static void settle_all(dq_consumer_t *c, item_t **items, size_t n,
                       item_t **copies);

/* Finishes delivered copies: a dead-lettered job's state becomes dead now
 * that its DLQ copy exists (G9: the payload stays in Kafka until the job is
 * terminal); every other copy settles its message at once. Then sends again
 * the copies whose delivery failed. */
static void finish_delivered(dq_consumer_t *c)
{
        item_t *list = c->delivered, *it, *next;
        item_t **dead = NULL;
        size_t n = 0, cnt = 0;

        c->delivered = NULL;
        for (it = list; it; it = it->next)
                cnt++;
        if (cnt && !(dead = calloc(cnt, sizeof(*dead))))
                oom();
        for (it = list; it; it = next) {
                next = it->next;
                if (it->dead_after && item_part(c, it)) {
                        it->settle = (dq_settle_t){
                            .job = it->job,
                            .op = DQ_SETTLE_DEAD,
                            .epoch = it->epoch,
                            .error_class = it->err_class,
                            .error_code = it->err_code,
                            .error_message = it->err_message,
                        };
                        dead[n++] = it;
                } else {
                        settle_item(c, it, it->outcome);
                }
        }
        if (n)
                settle_all(c, dead, n, NULL);
        free(dead);

        list = c->redeliver;
        c->redeliver = NULL;
        for (it = list; it; it = next) {
                next = it->next;
                if (!item_part(c, it))
                        abandon_item(c, it, "revoked");
                else if (stopping_now(c))
                        abandon_item(c, it, "shutdown");
                else if (it->next_try > dq_mono_ms())
                        push(&c->redeliver, it); /* in its backoff */
                else
                        produce_copy(c, it);
        }
}

/* Serves delivery reports for up to timeout_ms and finishes them. */
static void serve_copies(dq_consumer_t *c, int timeout_ms)
{
        rd_kafka_poll(c->pk, timeout_ms);
        if (c->delivered || c->redeliver)
                finish_delivered(c);
}

/*
 * Batches
 */

/* A fatal error of client rk (H3): says why at error level and stops the
 * run at once, committing nothing more. */
static void fatal_error(dq_consumer_t *c, rd_kafka_t *rk)
{
        char why[512];
        rd_kafka_resp_err_t err = rd_kafka_fatal_error(rk, why, sizeof(why));

        if (c->fatal)
                return;
        dq_error("kafka",
                 "client=%s fatal=true err=%s reason=\"%s\" "
                 "action=exit_without_commit",
                 rd_kafka_name(rk), rd_kafka_err2name(err), dq_esc(why));
        c->fatal = true;
        c->stop = 2;
}

/* Builds an item for a consumed message, or returns NULL (and consumes the
 * message) for an error event. */
static item_t *item_new(dq_consumer_t *c, rd_kafka_message_t *m)
{
        item_t *it;
        part_t *p;

        if (m->err == RD_KAFKA_RESP_ERR__FATAL)
                fatal_error(c, c->rk);
        if (m->err) {
                if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                        dq_warn("consume", "err=%s detail=\"%s\"",
                                rd_kafka_err2name(m->err),
                                rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                return NULL;
        }
        c->st.consumed++;
        dq_metrics_count(c->metrics, "consumed", NULL, NULL);
        it = calloc(1, sizeof(*it));
        if (!it)
                oom();
        it->msg = m;
        snprintf(it->topic, sizeof(it->topic), "%s",
                 rd_kafka_topic_name(m->rkt));
        it->partition = m->partition;
        it->offset = m->offset;
        p = part_find(c, it->topic, it->partition);
        it->gen = p ? p->gen : 0;
        return it;
}

/* Reads what a delay copy carries, or this record's own origin. */
static void item_origin(item_t *it)
{
        rd_kafka_timestamp_type_t tstype;
        int64_t ts = rd_kafka_message_timestamp(it->msg, &tstype);

        if (!dq_kafka_header(it->msg, "decayq-original-topic", it->orig_topic,
                             sizeof(it->orig_topic))) {
                snprintf(it->orig_topic, sizeof(it->orig_topic), "%s",
                         it->topic);
                it->orig_partition = it->partition;
                it->orig_offset = it->offset;
                it->orig_ts = ts > 0 ? ts : dq_now_ms();
        } else {
                it->orig_partition = (int32_t)dq_kafka_header_int(
                    it->msg, "decayq-original-partition", it->partition);
                it->orig_offset = dq_kafka_header_int(
                    it->msg, "decayq-original-offset", it->offset);
                it->orig_ts =
                    dq_kafka_header_time(it->msg, "decayq-original-timestamp");
        }
        it->first_failed_at =
            dq_kafka_header_time(it->msg, "decayq-first-failed-at");
        it->replay_count =
            dq_kafka_header_int(it->msg, "decayq-replay-count", 0);
        it->attempts = dq_kafka_header_int(it->msg, "decayq-attempts", 0);
        snprintf(it->ref, sizeof(it->ref), "%s/%d/%lld", it->topic,
                 (int)it->partition, (long long)it->offset);
}

/* First look at a message: returns true when it must be claimed and run;
 * otherwise it was held back (delay tier not due), set up for a copy, or
 * dropped. */
static bool classify(dq_consumer_t *c, item_t *it, item_t **copies)
{
        part_t *p = item_part(c, it);
        dq_reject_t rej;
        int64_t now = dq_now_ms();

        if (p && p->blocked && !p->delay_paused && !p->seek_pending) {
                /* Fetched before the pause: read again on resume. */
                p->seek_pending = true;
                p->paused_offset = it->offset;
        }
        if (!p || p->delay_paused || p->blocked) {
                /* Revoked, or behind a held record (read again from it on
                 * resume). */
                item_free(it);
                return false;
        }

        if (p->tier >= 0) {
                rd_kafka_timestamp_type_t tstype;
                int64_t ts = rd_kafka_message_timestamp(it->msg, &tstype);
                int64_t due =
                    (ts > 0 ? ts : now) + c->conf->delay_tier_ms[p->tier];

                if (due > now) {
                        delay_pause(c, p, it->offset, due);
                        item_free(it);
                        return false;
                }
        }

        if (dq_offsets_add(&p->off, it->offset) == -1) {
                abandon_item(c, it, "offset_not_ascending");
                return false;
        }
        item_origin(it);

        it->job = dq_job_parse(it->msg->payload, it->msg->len,
                               (size_t)c->conf->job_max_bytes, &rej);
        if (it->job &&
            !dq_job_check_schedule(it->job, now, c->conf->schedule_max_ahead_ms,
                                   &rej)) {
                dq_job_destroy(it->job);
                it->job = NULL;
        }
        if (!it->job && dq_err_is_critical(rej.err))
                oom(); /* the process's fault: never the message's */
        if (!it->job) {
                /* G7: contained, with its reason and original bytes. */
                dq_warn("dispatch",
                        "topic=%s partition=%d offset=%lld outcome=poison "
                        "code=%s",
                        it->topic, (int)it->partition, (long long)it->offset,
                        rej.code);
                to_dlq(it, "fatal", rej.code, rej.message, false);
                push(copies, it);
                return false;
        }

        if (p->tier >= 0) {
                int64_t nb = dq_kafka_header_time(it->msg, "decayq-not-before");
                if (nb > now) {
                        /* Hop down the tiers towards the exact time. */
                        to_delay(c, it, nb, "deferred");
                        push(copies, it);
                        return false;
                }
        }
        if (it->job->scheduled_for_ms > now) {
                to_delay(c, it, it->job->scheduled_for_ms, "deferred");
                push(copies, it);
                return false;
        }
        return true;
}

typedef struct heartbeat_s {
        dq_consumer_t *c;
        item_t **items;
        size_t cnt;
        int64_t next_renew;
} heartbeat_t;

/* Renews the leases of a batch's claimed jobs while a handler runs long,
 * and tells the handler to give up on shutdown. */
static bool heartbeat(void *opaque)
{
        heartbeat_t *hb = opaque;
        dq_consumer_t *c = hb->c;
        int64_t now = dq_mono_ms();

        publish(c); /* a long job is progress too; SIGTERM shows */
        if (stopping_now(c))
                return false;
        if (now < hb->next_renew)
                return true;
        hb->next_renew = now + c->conf->lease_ms / 3;
        for (size_t i = 0; i < hb->cnt; i++) {
                item_t *it = hb->items[i];
                dq_err_t err;

                if (!it || !it->job || it->claim.status != DQ_CLAIM_CLAIMED)
                        continue;
                err = dq_store_renew(c->store, it->job, it->epoch, dq_now_ms());
                dq_debug("claim", "job=%s lease=renewed result=%s", it->job->id,
                         dq_err_name(err));
        }
        return true;
}

/* After a round trip in which items[0..k) got no answer: returns true to
 * send them again after a wait, false when all were answered or the rest
 * was handed back (shutdown). */
static bool again(dq_consumer_t *c, item_t **items, size_t k, size_t *n,
                  int *tries)
{
        if (k == 0) {
                redis_ok(c);
                return false;
        }
        *n = k;
        if (redis_wait(c, tries))
                return true;
        for (size_t i = 0; i < k; i++)
                abandon_item(c, items[i], "shutdown");
        return false;
}

/* Claims items[0..n) in one round trip, again while Redis is unavailable.
 * Returns the number still held (claimed or otherwise answered); the
 * others were abandoned. */
static size_t claim_all(dq_consumer_t *c, item_t **items, size_t n)
{
        dq_claim_t *cl = calloc(n, sizeof(*cl));
        item_t **left = malloc(n * sizeof(*left));
        size_t k = n, done = 0;
        int tries = 0;

        if (!cl || !left)
                oom();
        memcpy(left, items, n * sizeof(*left));
        /* Answered claims go to items[0..done); unanswered ones stay in
         * left[0..k) and are sent again (a claim that did happen is then
         * counted twice, which only makes the bound stricter). */
        while (k > 0) {
                size_t m = 0;

                for (size_t i = 0; i < k; i++) {
                        if (!item_part(c, left[i])) {
                                item_free(left[i]);
                                continue;
                        }
                        const part_t *p = item_part(c, left[i]);
                        left[m] = left[i];
                        cl[m++] = (dq_claim_t){
                            .job = left[i]->job,
                            .msg = left[i]->ref,
                            .is_copy = p->tier >= 0,
                            .copy_attempts = left[i]->attempts,
                        };
                }
                if (!m)
                        break;
                int64_t t0 = dq_mono_ms(), wall = dq_now_ms();
                dq_store_claim(c->store, cl, m, wall);
                if (c->metrics)
                        dq_metrics_observe(c->metrics, DQ_HIST_REDIS,
                                           (double)(dq_mono_ms() - t0));
                k = 0;
                for (size_t i = 0; i < m; i++) {
                        if (dq_err_is_critical(cl[i].err)) {
                                left[k++] = left[i];
                        } else {
                                left[i]->claim = cl[i];
                                left[i]->claimed_at = t0;
                                left[i]->claim_wall = wall;
                                items[done++] = left[i];
                        }
                }
                if (!again(c, left, k, &k, &tries))
                        break;
        }
        free(cl);
        free(left);
        return done;
}

/* Runs the handler of each claimed item and decides its settle. Returns the
 * number of items left needing a Redis settle, moved to items[0..). */
static size_t run_handlers(dq_consumer_t *c, item_t **items, size_t n,
                           item_t **copies)
{
        heartbeat_t hb = {c, items, n, dq_mono_ms() + c->conf->lease_ms / 3};
        dq_handler_ctx_t ctx = {c->conf->debug_faults, heartbeat, &hb};
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
                item_t *it = items[i];
                const dq_claim_t *cl = &it->claim;

                /* A parked delivery keeps what its record says, so that a
                 * later claim still knows a stale copy. */
                if (cl->status != DQ_CLAIM_BUSY) {
                        it->attempts = cl->attempts;
                        it->epoch = cl->epoch;
                }
                if (dq_err_is_fatal(cl->err)) {
                        /* H6: Redis refused the claim itself (a key of the
                         * wrong type): this job only is dead-lettered. */
                        to_dlq(it, "fatal", DQ_STORE_COMMAND_ERROR, cl->message,
                               true);
                        push(copies, it);
                        items[i] = NULL;
                        continue;
                }
                switch (cl->status) {
                case DQ_CLAIM_BUSY:
                        /* G4: a copy never takes a live claim over; it
                         * waits, unsettled, for that run to end. */
                        dq_debug("claim",
                                 "job=%s status=busy lease_until=%lld "
                                 "action=park",
                                 it->job->id, (long long)cl->until);
                        push(&c->parked, it);
                        items[i] = NULL;
                        continue;
                case DQ_CLAIM_NOT_DUE:
                        /* G6: in backoff; this delivery waits in the tiers
                         * until the job's not-before time. */
                        dq_debug("claim",
                                 "job=%s status=not_due not_before=%lld "
                                 "action=defer",
                                 it->job->id, (long long)cl->until);
                        to_delay(c, it, cl->until, "deferred");
                        push(copies, it);
                        items[i] = NULL;
                        continue;
                case DQ_CLAIM_STALE:
                        dq_debug("claim", "job=%s status=stale attempts=%lld",
                                 it->job->id, (long long)cl->attempts);
                        settle_item(c, it, "superseded");
                        items[i] = NULL;
                        continue;
                case DQ_CLAIM_DUPLICATE:
                        dq_debug("claim", "job=%s status=duplicate of=%s",
                                 it->job->id, cl->ref);
                        settle_item(c, it, "duplicate");
                        items[i] = NULL;
                        continue;
                case DQ_CLAIM_TERMINAL:
                        dq_debug("claim", "job=%s status=terminal state=%s",
                                 it->job->id, cl->state);
                        settle_item(c, it,
                                    !strcmp(cl->state, "cancelled")
                                        ? "cancelled"
                                        : "skipped");
                        items[i] = NULL;
                        continue;
                case DQ_CLAIM_EXHAUSTED:
                        /* G4: it already ran max_attempts times; the worker
                         * died in its last run. */
                        dq_warn("claim",
                                "job=%s status=exhausted attempts=%lld "
                                "action=dead_letter class=crash_loop",
                                it->job->id, (long long)cl->attempts);
                        to_dlq(it, "crash_loop", "decay.job.crash_loop",
                               "attempts exhausted by runs that never "
                               "settled (worker crashed mid-run)",
                               true);
                        push(copies, it);
                        items[i] = NULL;
                        continue;
                case DQ_CLAIM_CLAIMED:
                        break;
                }
                c->st.claimed++;
                dq_metrics_count(c->metrics, "claimed",
                                 dq_kind_name(it->job->kind), NULL);
                dq_debug("claim",
                         "job=%s kind=%s scope=%s status=claimed attempt=%lld "
                         "epoch=%lld scheduled_for=%lld at=%lld msg=%s%s",
                         it->job->id, dq_kind_name(it->job->kind),
                         it->job->scope, (long long)cl->attempts,
                         (long long)cl->epoch,
                         (long long)it->job->scheduled_for_ms,
                         (long long)it->claim_wall, it->ref,
                         cl->took_over ? " took_over=true" : "");
        }

        for (size_t i = 0; i < n; i++) {
                item_t *it = items[i];
                dq_handler_result_t res;
                int64_t now;

                if (!it)
                        continue;
                if (!item_part(c, it) || stopping_now(c)) {
                        abandon_item(c, it,
                                     item_part(c, it) ? "shutdown" : "revoked");
                        items[i] = NULL;
                        continue;
                }
                dq_handler_run(&ctx, it->job, it->attempts, &res);
                if (res.abandoned) {
                        abandon_item(c, it, "shutdown");
                        items[i] = NULL;
                        continue;
                }
                now = dq_now_ms();
                if (res.err == DQ_OK) {
                        it->settle = (dq_settle_t){.job = it->job,
                                                   .op = DQ_SETTLE_COMPLETE,
                                                   .epoch = it->epoch};
                        items[k++] = it;
                        continue;
                }
                if (!dq_err_is_retryable(res.err)) {
                        to_dlq(it, "fatal", res.code, res.message, true);
                        push(copies, it);
                        continue;
                }
                const char *cls =
                    res.err == DQ_ERR_TIMEOUT ? "timeout" : "retryable";
                if (it->attempts >= c->conf->max_attempts) {
                        /* G4: the last attempt failed. */
                        to_dlq(it, cls, res.code, res.message, true);
                        push(copies, it);
                        continue;
                }
                if (!it->first_failed_at)
                        it->first_failed_at = now;
                it->err_class = cls;
                snprintf(it->err_code, sizeof(it->err_code), "%s", res.code);
                snprintf(it->err_message, sizeof(it->err_message), "%s",
                         res.message);
                it->not_before =
                    now + dq_backoff_ms(it->attempts, c->conf->backoff_base_ms,
                                        c->conf->backoff_max_ms, next_rand(c));
                it->settle = (dq_settle_t){
                    .job = it->job,
                    .op = DQ_SETTLE_RETRY,
                    .epoch = it->epoch,
                    .not_before_ms = it->not_before,
                    .error_class = it->err_class,
                    .error_code = it->err_code,
                    .error_message = it->err_message,
                };
                items[k++] = it;
        }
        return k;
}

/* Settles items[0..n) in one round trip (again while Redis is unavailable)
 * and routes each by the answer. */
static void settle_all(dq_consumer_t *c, item_t **items, size_t n,
                       item_t **copies)
{
        dq_settle_t *ss = calloc(n, sizeof(*ss));
        int tries = 0;

        if (!ss) {
                for (size_t i = 0; i < n; i++)
                        abandon_item(c, items[i], "out_of_memory");
                return;
        }
        while (n > 0) {
                size_t k = 0;

                for (size_t i = 0; i < n; i++) {
                        if (!item_part(c, items[i])) {
                                item_free(items[i]);
                                continue;
                        }
                        items[k] = items[i];
                        ss[k++] = items[i]->settle;
                }
                n = k;
                if (!n)
                        break;
                int64_t t0 = dq_mono_ms();
                dq_store_settle(c->store, ss, n, dq_now_ms());
                if (c->metrics)
                        dq_metrics_observe(c->metrics, DQ_HIST_REDIS,
                                           (double)(dq_mono_ms() - t0));
                k = 0;
                for (size_t i = 0; i < n; i++) {
                        item_t *it = items[i];
                        dq_settle_t *s = &ss[i];

                        if (dq_err_is_critical(s->err)) {
                                /* Outcome unknown: send it again. */
                                items[k++] = it;
                                continue;
                        }
                        switch (s->err) {
                        case DQ_OK:
                                if (s->op == DQ_SETTLE_DEAD) {
                                        dq_info("dead",
                                                "job=%s scope=%s class=%s "
                                                "code=%s attempts=%lld",
                                                it->job->id, it->job->scope,
                                                it->err_class, it->err_code,
                                                (long long)it->attempts);
                                        settle_item(c, it, "dead");
                                } else if (s->op == DQ_SETTLE_COMPLETE) {
                                        dq_debug("settle",
                                                 "job=%s effect=applied "
                                                 "result=%s",
                                                 it->job->id, s->result);
                                        settle_item(c, it, "completed");
                                } else {
                                        dq_info("retry",
                                                "job=%s attempt=%lld "
                                                "code=%s backoff_ms=%lld "
                                                "not_before=%lld",
                                                it->job->id,
                                                (long long)it->attempts,
                                                it->err_code,
                                                (long long)(it->not_before -
                                                            dq_now_ms()),
                                                (long long)it->not_before);
                                        to_delay(c, it, it->not_before,
                                                 "retried");
                                        push(copies, it);
                                }
                                break;
                        case DQ_ERR_FENCED:
                        case DQ_ERR_TERMINAL:
                                /* Superseded (G5) or already terminal:
                                 * another claim owns the outcome. */
                                dq_debug("settle", "job=%s result=%s",
                                         it->job->id, dq_err_name(s->err));
                                settle_item(c, it, "superseded");
                                break;
                        default:
                                if (s->op != DQ_SETTLE_DEAD) {
                                        /* The effect can never apply (a
                                         * source missing or inactive), or
                                         * Redis refused the command: this
                                         * job only is dead-lettered. */
                                        to_dlq(it, "fatal", s->code, s->message,
                                               true);
                                        push(copies, it);
                                        break;
                                }
                                /* Its DLQ copy exists (G9): the message is
                                 * settled though the state could not be
                                 * written. */
                                dq_error("dead",
                                         "job=%s scope=%s state=unrecorded "
                                         "code=%s error=\"%s\"",
                                         it->job->id, it->job->scope, s->code,
                                         dq_esc(s->message));
                                settle_item(c, it, "dead");
                                break;
                        }
                }
                if (!again(c, items, k, &n, &tries))
                        break;
        }
        free(ss);
}

/* Claims, runs and settles batch[0..n), classified already; their copies
 * go to *copies. */
static void execute(dq_consumer_t *c, item_t **batch, size_t n, item_t **copies)
{
        n = claim_all(c, batch, n);
        n = run_handlers(c, batch, n, copies);
        if (n)
                settle_all(c, batch, n, copies);
}

/* Produces copies, in arrival order per partition. */
static void produce_copies(dq_consumer_t *c, item_t *copies)
{
        item_t *rev = NULL, *it, *next;

        for (it = copies; it; it = next) {
                next = it->next;
                it->next = rev;
                rev = it;
        }
        for (it = rev; it; it = next) {
                next = it->next;
                if (item_part(c, it))
                        produce_copy(c, it);
                else
                        item_free(it);
        }
}

static void process(dq_consumer_t *c, item_t **batch, size_t n)
{
        item_t *copies = NULL;
        size_t run = 0;

        for (size_t i = 0; i < n; i++)
                if (classify(c, batch[i], &copies))
                        batch[run++] = batch[i];
        if (run)
                execute(c, batch, run, &copies);
        produce_copies(c, copies);
}

/* Asks again for the parked deliveries, when it is time: each now runs,
 * waits on, or settles as the claim it finds says. */
static void unpark(dq_consumer_t *c)
{
        item_t *copies = NULL, *it, **items;
        size_t n = 0;

        if (!c->parked || dq_mono_ms() < c->next_unpark)
                return;
        c->next_unpark = dq_mono_ms() + PARK_RECHECK_MS;
        for (it = c->parked; it; it = it->next)
                n++;
        if (!(items = malloc(n * sizeof(*items))))
                oom();
        n = 0;
        for (it = c->parked; it; it = it->next)
                items[n++] = it;
        c->parked = NULL;
        execute(c, items, n, &copies);
        produce_copies(c, copies);
        free(items);
}

/* Reads up to batch.size messages: waits up to timeout_ms for the first,
 * then takes what is already there. Messages from before a rebalance that
 * happened meanwhile are dropped (the new owner reads them). */
static size_t read_batch(dq_consumer_t *c, item_t **batch, size_t max,
                         int timeout_ms)
{
        size_t n = 0;

        /* Messages read while paused for Redis go first, in order. */
        if (c->backlog_cnt) {
                n = c->backlog_cnt < max ? c->backlog_cnt : max;
                memcpy(batch, c->backlog, n * sizeof(*batch));
                memmove(c->backlog, c->backlog + n,
                        (c->backlog_cnt - n) * sizeof(*batch));
                c->backlog_cnt -= n;
                if (c->backlog_cnt)
                        return n;
        }

        while (n < max) {
                unsigned seq = c->rebalance_seq;
                rd_kafka_message_t *m =
                    rd_kafka_consumer_poll(c->rk, n ? 0 : timeout_ms);
                if (!m)
                        break;
                if (seq != c->rebalance_seq) {
                        for (size_t i = 0; i < n; i++)
                                item_free(batch[i]);
                        n = 0;
                }
                item_t *it = item_new(c, m);
                if (it)
                        batch[n++] = it;
        }
        return n;
}

/*
 * Partitions the copies cannot reach
 */

/* The fewest partitions among the DLQ and the tiers, or -1 when the
 * metadata cannot be read. */
static int copy_partitions(dq_consumer_t *c)
{
        const struct rd_kafka_metadata *md = NULL;
        int least = -1;

        if (rd_kafka_metadata(c->pk, 1, NULL, &md, 2000))
                return -1;
        for (int t = 0; t < md->topic_cnt; t++) {
                const char *name = md->topics[t].topic;
                if (md->topics[t].err || (strcmp(name, c->conf->topic_dlq) &&
                                          topic_tier(c, name) < 0))
                        continue;
                if (least < 0 || md->topics[t].partition_cnt < least)
                        least = md->topics[t].partition_cnt;
        }
        rd_kafka_metadata_destroy(md);
        return least;
}

/* The lag of a partition that statistics do not cover (never fetched):
 * its high watermark less the group's committed offset. */
static int64_t measure_lag(dq_consumer_t *c, const part_t *p)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_new(1);
        int64_t lo, hi, off, lag = -1;

        rd_kafka_topic_partition_list_add(l, p->topic, p->partition);
        if (!rd_kafka_query_watermark_offsets(c->rk, p->topic, p->partition,
                                              &lo, &hi, 2000) &&
            !rd_kafka_committed(c->rk, l, 2000)) {
                off = l->elems[0].offset;
                lag = hi - (off >= 0 ? off : lo);
        }
        rd_kafka_topic_partition_list_destroy(l);
        return lag;
}

/* H5: a copy keeps its partition number, so a partition numbered past the
 * DLQ's or a tier's count is paused (blocked) rather than run into copies
 * that cannot be placed; readiness says so. It resumes once they have
 * grown. Checked at each assignment and every few seconds while anything
 * is blocked. @locality main loop, rebalance callback */
static void parts_check(dq_consumer_t *c)
{
        int n = copy_partitions(c);
        const char **topics;
        int32_t *parts;
        int64_t *lags;
        size_t cnt = 0, k = 0;

        c->next_part_check = dq_mono_ms() + 5000;
        if (n < 0)
                return; /* unknown: keep what is known */
        for (part_t *p = c->parts; p; p = p->next) {
                bool want = p->partition >= n;

                cnt += want;
                if (want == p->blocked)
                        continue;
                p->blocked = want;
                if (!want) {
                        dq_info("consume",
                                "topic=%s partition=%d blocked=false", p->topic,
                                (int)p->partition);
                        if (!c->paused_all && !p->delay_paused)
                                part_resume(c, p);
                        continue;
                }
                part_pause(c, p);
                dq_error("consume",
                         "topic=%s partition=%d blocked=true reason=\"the "
                         "DLQ or a delay tier has only %d partitions; a copy "
                         "keeps its partition number\" fix=\"add "
                         "partitions to %s and every %s* topic\"",
                         p->topic, (int)p->partition, n, c->conf->topic_dlq,
                         c->conf->topic_delay_prefix);
        }
        if (!c->metrics)
                return;
        topics = calloc(cnt + 1, sizeof(*topics));
        parts = calloc(cnt + 1, sizeof(*parts));
        lags = calloc(cnt + 1, sizeof(*lags));
        if (!topics || !parts || !lags)
                oom();
        for (part_t *p = c->parts; p && k < cnt; p = p->next) {
                if (!p->blocked)
                        continue;
                topics[k] = p->topic;
                parts[k] = p->partition;
                lags[k++] = measure_lag(c, p);
        }
        dq_metrics_extra_lags(c->metrics, topics, parts, lags, k);
        free(topics);
        free(parts);
        free(lags);
}

static bool any_blocked(const dq_consumer_t *c)
{
        for (const part_t *p = c->parts; p; p = p->next)
                if (p->blocked)
                        return true;
        return false;
}

/*
 * Rebalances
 */

static void log_parts(const char *what,
                      const rd_kafka_topic_partition_list_t *l)
{
        char buf[1024];
        size_t off = 0;

        buf[0] = '\0';
        for (int i = 0; i < l->cnt && off < sizeof(buf) - 1; i++) {
                int w = snprintf(buf + off, sizeof(buf) - off, "%s%s[%d]",
                                 i ? "," : "", l->elems[i].topic,
                                 (int)l->elems[i].partition);
                if (w < 0)
                        break;
                off += (size_t)w;
        }
        dq_info("rebalance", "event=%s count=%d partitions=%s", what, l->cnt,
                buf);
}

static void parts_add(dq_consumer_t *c,
                      const rd_kafka_topic_partition_list_t *l)
{
        for (int i = 0; i < l->cnt; i++) {
                part_t *p = calloc(1, sizeof(*p));
                if (!p)
                        continue; /* item_part() fails: messages dropped */
                snprintf(p->topic, sizeof(p->topic), "%s", l->elems[i].topic);
                p->partition = l->elems[i].partition;
                p->tier = topic_tier(c, p->topic);
                p->gen = ++c->gen_seq;
                p->store_next = -1;
                dq_offsets_init(&p->off);
                p->next = c->parts;
                c->parts = p;
        }
}

static void part_remove(dq_consumer_t *c, const char *topic, int32_t partition)
{
        for (part_t **pp = &c->parts; *pp; pp = &(*pp)->next) {
                part_t *p = *pp;
                if (p->partition == partition && !strcmp(p->topic, topic)) {
                        *pp = p->next;
                        dq_offsets_release(&p->off);
                        free(p);
                        return;
                }
        }
}

/* Before partitions go: wait a bounded time for their pending copies,
 * finish what was delivered, and commit what is settled. Copies still
 * pending are dropped: their messages are read again by the new owner. */
static void revoke_parts(dq_consumer_t *c,
                         const rd_kafka_topic_partition_list_t *l)
{
        int64_t bound = c->conf->drain_timeout_ms < REVOKE_DRAIN_MAX
                            ? c->conf->drain_timeout_ms
                            : REVOKE_DRAIN_MAX;
        int64_t until = dq_mono_ms() + bound;

        if (c->drain_deadline && c->drain_deadline < until)
                until = c->drain_deadline;

        while (c->outstanding > 0 && dq_mono_ms() < until && c->stop < 2)
                serve_copies(c, 50);
        serve_copies(c, 0);
        c->stored_since_commit = true;
        commit(c, true);
        for (int i = 0; i < l->cnt; i++)
                part_remove(c, l->elems[i].topic, l->elems[i].partition);
        if (c->outstanding > 0)
                dq_warn("rebalance", "pending_copies=%d action=drop",
                        c->outstanding);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *partitions,
                         void *opaque)
{
        dq_consumer_t *c = opaque;
        rd_kafka_error_t *error = NULL;
        rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;

        c->in_rebalance = true;
        c->rebalance_seq++;
        dq_metrics_event(c->metrics, DQ_EV_REBALANCE);
        switch (err) {
        case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
                c->joined = true;
                log_parts("assigned", partitions);
                parts_add(c, partitions);
                if (c->cooperative)
                        error = rd_kafka_incremental_assign(rk, partitions);
                else
                        aerr = rd_kafka_assign(rk, partitions);
                /* A fresh assignment is not paused, unless Redis is away
                 * or the consumer is draining. */
                rd_kafka_resume_partitions(rk, partitions);
                c->paused_all = false;
                if (c->unavailable_at)
                        pause_all(c, "redis_unavailable");
                else if (c->drain_deadline)
                        pause_all(c, "shutdown");
                parts_check(c);
                break;
        case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
                log_parts("revoked", partitions);
                if (!c->cooperative)
                        c->joined = false; /* until the next assignment */
                revoke_parts(c, partitions);
                if (c->cooperative)
                        error = rd_kafka_incremental_unassign(rk, partitions);
                else
                        aerr = rd_kafka_assign(rk, NULL);
                break;
        default:
                dq_error("rebalance", "event=error err=%s",
                         rd_kafka_err2name(err));
                aerr = rd_kafka_assign(rk, NULL);
                break;
        }
        if (error) {
                dq_error("rebalance", "assign=failed err=%s",
                         rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
        } else if (aerr) {
                dq_error("rebalance", "assign=failed err=%s",
                         rd_kafka_err2name(aerr));
        }
        c->in_rebalance = false;
}

/*
 * Set-up
 */

static int set(rd_kafka_conf_t *k, const char *name, const char *v,
               char *errstr, size_t errstr_size)
{
        return rd_kafka_conf_set(k, name, v, errstr, errstr_size) ==
                       RD_KAFKA_CONF_OK
                   ? 0
                   : -1;
}

/* Errors of either client. A fatal one (H3) ends the run at once: the
 * client can do no more work, so a process that carried on would look
 * ready and do nothing. */
static void error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
        dq_consumer_t *c = opaque;

        if (err == RD_KAFKA_RESP_ERR__FATAL) {
                fatal_error(c, rk);
                return;
        }
        dq_warn("kafka", "client=%s err=%s reason=\"%s\"", rd_kafka_name(rk),
                rd_kafka_err2name(err), dq_esc(reason));
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque)
{
        dq_consumer_t *c = opaque;

        (void)rk;
        dq_metrics_stats(c->metrics, json, len);
        return 0; /* librdkafka frees json */
}

static rd_kafka_t *new_consumer(dq_consumer_t *c, char *errstr,
                                size_t errstr_size)
{
        rd_kafka_conf_t *k = rd_kafka_conf_new();
        rd_kafka_t *rk;

        /* Defaults a user may override: eager rebalancing (librdkafka 2.0's
         * cooperative protocol has known bugs), reading a new group from
         * the start of the topics, and a small prefetch. librdkafka's
         * defaults (64 MiB queued, 50 MiB per fetch, 100,000 messages per
         * partition) let a deep backlog fill the process's memory; 2 MiB
         * in 1 MiB fetches still holds thousands of jobs. */
        if (set(k, "group.id", "decayq", errstr, errstr_size) ||
            set(k, "partition.assignment.strategy", "range", errstr,
                errstr_size) ||
            set(k, "auto.offset.reset", "earliest", errstr, errstr_size) ||
            set(k, "queued.max.messages.kbytes", "2048", errstr, errstr_size) ||
            set(k, "queued.min.messages", "1000", errstr, errstr_size) ||
            set(k, "fetch.max.bytes", "1048576", errstr, errstr_size) ||
            set(k, "topic.metadata.refresh.interval.ms", "30000", errstr,
                errstr_size) ||
            dq_conf_kafka_apply(c->conf, k, errstr, errstr_size))
                goto err;
        /* Guarantees they may not: offsets move only over settled messages
         * (G3), committed by this code. */
        if (set(k, "enable.auto.offset.store", "false", errstr, errstr_size) ||
            set(k, "enable.auto.commit", "false", errstr, errstr_size) ||
            set(k, "enable.partition.eof", "false", errstr, errstr_size))
                goto err;
        /* Statistics feed the lag metrics when someone can read them. */
        if (c->http && c->conf->stats_interval_ms > 0 &&
            !dq_conf_kafka_get(c->conf, "statistics.interval.ms")) {
                char ms[32];
                snprintf(ms, sizeof(ms), "%lld",
                         (long long)c->conf->stats_interval_ms);
                if (set(k, "statistics.interval.ms", ms, errstr, errstr_size))
                        goto err;
        }
        rd_kafka_conf_set_stats_cb(k, stats_cb);
        rd_kafka_conf_set_error_cb(k, error_cb);
        rd_kafka_conf_set_rebalance_cb(k, rebalance_cb);
        rd_kafka_conf_set_offset_commit_cb(k, offset_commit_cb);
        rd_kafka_conf_set_opaque(k, c);
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, k, errstr, errstr_size);
        if (!rk)
                goto err;
        return rk;
err:
        rd_kafka_conf_destroy(k);
        return NULL;
}

static rd_kafka_t *new_producer(dq_consumer_t *c, char *errstr,
                                size_t errstr_size)
{
        rd_kafka_conf_t *k = rd_kafka_conf_new();
        char tmo[32], max[32];
        rd_kafka_t *pk;

        snprintf(tmo, sizeof(tmo), "%lld",
                 (long long)c->conf->produce_timeout_ms);
        /* A copy is a job of up to job.max.bytes and its headers (H2). */
        snprintf(max, sizeof(max), "%lld",
                 (long long)DQ_COPY_MAX_BYTES(c->conf->job_max_bytes));
        if (set(k, "message.timeout.ms", tmo, errstr, errstr_size) ||
            set(k, "linger.ms", "5", errstr, errstr_size) ||
            set(k, "message.max.bytes", max, errstr, errstr_size))
                goto err;
        /* Only the connection and security settings apply to the producer;
         * group and fetch settings are consumer-only. */
        for (size_t i = 0; i < c->conf->kafka_cnt; i++) {
                const dq_conf_kv_t *kv = &c->conf->kafka[i];
                if (!strncmp(kv->key, "bootstrap.", 10) ||
                    !strncmp(kv->key, "security.", 9) ||
                    !strncmp(kv->key, "sasl.", 5) ||
                    !strncmp(kv->key, "ssl.", 4) ||
                    !strcmp(kv->key, "client.id") ||
                    !strcmp(kv->key, "debug")) {
                        if (set(k, kv->key, kv->value, errstr, errstr_size))
                                goto err;
                }
        }
        if (set(k, "enable.idempotence", "true", errstr, errstr_size) ||
            set(k, "acks", "all", errstr, errstr_size))
                goto err;
        rd_kafka_conf_set_dr_msg_cb(k, dr_msg_cb);
        rd_kafka_conf_set_error_cb(k, error_cb);
        rd_kafka_conf_set_opaque(k, c);
        pk = rd_kafka_new(RD_KAFKA_PRODUCER, k, errstr, errstr_size);
        if (!pk)
                goto err;
        return pk;
err:
        rd_kafka_conf_destroy(k);
        return NULL;
}

/* Checks that every topic exists and that the DLQ and the tiers have at
 * least the jobs topic's partitions (a copy keeps its partition number);
 * creates missing ones when asked. */
static int check_topics(dq_consumer_t *c, int create, char *errstr,
                        size_t errstr_size)
{
        const struct rd_kafka_metadata *md = NULL;
        const char **names = calloc((size_t)c->tier_cnt + 2, sizeof(*names));
        int cnt = 0, main_parts = -1, rc = -1;
        int64_t need = DQ_COPY_MAX_BYTES(c->conf->job_max_bytes);
        int64_t *max = calloc((size_t)c->tier_cnt + 2, sizeof(*max));
        rd_kafka_resp_err_t err;

        if (!names || !max) {
                snprintf(errstr, errstr_size, "out of memory");
                free(names);
                free(max);
                return -1;
        }
        names[cnt++] = c->conf->topic_jobs;
        names[cnt++] = c->conf->topic_dlq;
        for (int i = 0; i < c->tier_cnt; i++)
                names[cnt++] = c->tier_topics[i];

        if (create > 0 &&
            dq_kafka_create_topics(c->pk, names, (size_t)cnt, create, need,
                                   30000, errstr, errstr_size) != DQ_OK)
                goto out;

        err = rd_kafka_metadata(c->pk, 1, NULL, &md, 15000);
        if (err) {
                snprintf(errstr, errstr_size,
                         "cannot read topic metadata from %s: %s",
                         dq_conf_kafka_get(c->conf, "bootstrap.servers")
                             ? dq_conf_kafka_get(c->conf, "bootstrap.servers")
                             : "(bootstrap.servers unset)",
                         rd_kafka_err2str(err));
                goto out;
        }
        for (int i = 0; i < cnt; i++) {
                int parts = -1;
                for (int t = 0; t < md->topic_cnt; t++)
                        if (!strcmp(md->topics[t].topic, names[i]) &&
                            !md->topics[t].err)
                                parts = md->topics[t].partition_cnt;
                if (parts <= 0) {
                        snprintf(errstr, errstr_size,
                                 "topic %s does not exist (create it, or run "
                                 "with --create-topics N)",
                                 names[i]);
                        goto out;
                }
                if (i == 0)
                        main_parts = parts;
                else if (parts < main_parts) {
                        snprintf(errstr, errstr_size,
                                 "topic %s has %d partitions, fewer than the "
                                 "%d of %s: a copy keeps its partition number",
                                 names[i], parts, main_parts, names[0]);
                        goto out;
                }
        }
        /* H2: every copy must fit in the topics that hold copies. */
        c->copy_max = need;
        if (dq_kafka_topic_max_bytes(c->pk, names + 1, (size_t)cnt - 1, max,
                                     15000, errstr, errstr_size) != DQ_OK) {
                /* A broker that will not say: copies too large for it are
                 * cut (DLQ) or dead-lettered (delay) when refused. */
                dq_warn("start",
                        "check=max_message_bytes skipped reason=\"%s\"",
                        errstr);
        }
        for (int i = 1; i < cnt; i++) {
                if (max[i - 1] <= 0 || max[i - 1] >= need)
                        continue;
                snprintf(errstr, errstr_size,
                         "topic %s accepts records of at most %lld bytes "
                         "(max.message.bytes), but a copy of a job of "
                         "job.max.bytes=%lld takes up to %lld: raise it "
                         "(kafka-configs.sh --alter --entity-type topics "
                         "--entity-name %s --add-config "
                         "max.message.bytes=%lld) or lower job.max.bytes",
                         names[i], (long long)max[i - 1],
                         (long long)c->conf->job_max_bytes, (long long)need,
                         names[i], (long long)need);
                goto out;
        }
        rc = 0;
out:
        if (md)
                rd_kafka_metadata_destroy(md);
        free(names);
        free(max);
        return rc;
}

static int make_tiers(dq_consumer_t *c)
{
        c->tier_cnt = c->conf->delay_tier_cnt;
        c->tier_topics = calloc((size_t)c->tier_cnt + 1, sizeof(char *));
        if (!c->tier_topics)
                return -1;
        for (int i = 0; i < c->tier_cnt; i++) {
                /* "5s" for 5000 ms: the tier's name is its delay. */
                int64_t ms = c->conf->delay_tier_ms[i];
                char name[32];

                if (ms % 3600000 == 0)
                        snprintf(name, sizeof(name), "%lldh",
                                 (long long)(ms / 3600000));
                else if (ms % 60000 == 0)
                        snprintf(name, sizeof(name), "%lldm",
                                 (long long)(ms / 60000));
                else if (ms % 1000 == 0)
                        snprintf(name, sizeof(name), "%llds",
                                 (long long)(ms / 1000));
                else
                        snprintf(name, sizeof(name), "%lldms", (long long)ms);
                if (asprintf(&c->tier_topics[i], "%s%s",
                             c->conf->topic_delay_prefix, name) == -1) {
                        c->tier_topics[i] = NULL;
                        return -1;
                }
        }
        return 0;
}

dq_consumer_t *dq_consumer_new(const dq_conf_t *conf, int create_topics,
                               char *errstr, size_t errstr_size)
{
        dq_consumer_t *c = calloc(1, sizeof(*c));
        const char *gid, *inst;
        rd_kafka_topic_partition_list_t *sub;
        rd_kafka_resp_err_t err;
        char host[64];

        if (!c) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        c->conf = conf;
        c->rnd = (uint64_t)dq_now_ms() ^ ((uint64_t)getpid() << 32) ^
                 0x9e3779b97f4a7c15ULL;

        gid = dq_conf_kafka_get(conf, "group.id");
        snprintf(c->group, sizeof(c->group), "%s", gid ? gid : "decayq");
        inst = dq_conf_kafka_get(conf, "group.instance.id");
        if (conf->worker_id && *conf->worker_id)
                snprintf(c->worker, sizeof(c->worker), "%s", conf->worker_id);
        else if (inst && *inst)
                snprintf(c->worker, sizeof(c->worker), "%s", inst);
        else {
                if (gethostname(host, sizeof(host)) == -1)
                        snprintf(host, sizeof(host), "localhost");
                host[sizeof(host) - 1] = '\0';
                snprintf(c->worker, sizeof(c->worker), "%s:%d", host,
                         (int)getpid());
        }

        if (make_tiers(c) == -1) {
                snprintf(errstr, errstr_size, "out of memory");
                goto err;
        }
        c->store = dq_store_new(conf, c->worker, errstr, errstr_size);
        if (!c->store)
                goto err;
        if (conf->http_port > 0) {
                /* Metrics are kept only when someone can read them. A loop
                 * silent for longer than a lease's renewal period plus a
                 * poll is stuck. */
                c->metrics = dq_metrics_new();
                if (!c->metrics) {
                        snprintf(errstr, errstr_size, "out of memory");
                        goto err;
                }
                dq_http_limits_t lim = {
                    .max_connections = (unsigned)conf->http_max_connections,
                    .max_per_ip = (unsigned)conf->http_max_connections_per_ip,
                    .timeout_s =
                        (unsigned)((conf->http_timeout_ms + 999) / 1000),
                };
                c->http = dq_http_start(
                    conf->http_address, (int)conf->http_port, &lim, c->metrics,
                    conf->lease_ms + 30000, errstr, errstr_size);
                if (!c->http)
                        goto err;
                dq_info("start",
                        "http=%s:%lld endpoints=/metrics,/healthz,"
                        "/readyz",
                        conf->http_address, (long long)conf->http_port);
        }
        c->pk = new_producer(c, errstr, errstr_size);
        if (!c->pk)
                goto err;
        if (check_topics(c, create_topics, errstr, errstr_size) == -1)
                goto err;
        c->rk = new_consumer(c, errstr, errstr_size);
        if (!c->rk)
                goto err;
        c->cooperative =
            !strcmp(rd_kafka_rebalance_protocol(c->rk), "COOPERATIVE");
        rd_kafka_poll_set_consumer(c->rk);

        sub = rd_kafka_topic_partition_list_new(c->tier_cnt + 1);
        rd_kafka_topic_partition_list_add(sub, conf->topic_jobs,
                                          RD_KAFKA_PARTITION_UA);
        for (int i = 0; i < c->tier_cnt; i++)
                rd_kafka_topic_partition_list_add(sub, c->tier_topics[i],
                                                  RD_KAFKA_PARTITION_UA);
        err = rd_kafka_subscribe(c->rk, sub);
        rd_kafka_topic_partition_list_destroy(sub);
        if (err) {
                snprintf(errstr, errstr_size, "subscribe: %s",
                         rd_kafka_err2str(err));
                goto err;
        }
        dq_info("start",
                "worker=%s group=%s topic=%s tiers=%s dlq=%s "
                "max_attempts=%lld batch=%lld",
                c->worker, c->group, conf->topic_jobs, conf->delay_tiers,
                conf->topic_dlq, (long long)conf->max_attempts,
                (long long)conf->batch_size);
        return c;
err:
        dq_consumer_destroy(c);
        return NULL;
}

/*
 * Running
 */

static void summary(dq_consumer_t *c, const char *when)
{
        dq_info("summary",
                "when=%s consumed=%lld claimed=%lld completed=%lld "
                "retried=%lld dead=%lld duplicate=%lld skipped=%lld "
                "deferred=%lld abandoned=%lld",
                when, (long long)c->st.consumed, (long long)c->st.claimed,
                (long long)c->st.completed, (long long)c->st.retried,
                (long long)c->st.dead, (long long)c->st.duplicate,
                (long long)c->st.skipped, (long long)c->st.deferred,
                (long long)c->st.abandoned);
}

/* Logs the signals the handler saw, from the loop (logging is not
 * async-signal-safe). */
static void log_signal(dq_consumer_t *c)
{
        for (int sig = 1; sig < 32; sig++) {
                if (!c->signals[sig])
                        continue;
                c->signals[sig] = 0;
                dq_info("signal", "signal=%s action=%s", sigabbrev_np(sig),
                        sig == SIGUSR1   ? "summary"
                        : sig == SIGUSR2 ? "ignored"
                        : c->stop >= 2   ? "stop_now"
                                         : "drain");
                if (sig == SIGUSR1)
                        summary(c, "signal");
        }
}

static int next_timeout(dq_consumer_t *c)
{
        int64_t now = dq_now_ms(), t = 100;

        for (part_t *p = c->parts; p; p = p->next)
                if (p->delay_paused && p->resume_at - now < t)
                        t = p->resume_at - now;
        return t < 0 ? 0 : (int)t;
}

dq_run_t dq_consumer_run(dq_consumer_t *c)
{
        size_t max = (size_t)c->conf->batch_size;
        item_t **batch = calloc(max, sizeof(*batch));

        if (!batch) {
                dq_error("start", "out of memory");
                return DQ_RUN_HANDED_BACK;
        }
        c->next_commit = dq_mono_ms() + c->conf->commit_interval_ms;
        c->next_summary = dq_mono_ms() + c->conf->summary_interval_ms;

        while (c->stop < 2) {
                int64_t now;

                log_signal(c);
                if (c->stop == 1 && !c->draining) {
                        /* G8: stop fetching, finish what is in flight. */
                        stopping_now(c); /* starts the drain's clock */
                        c->draining = true;
                        dq_info("drain",
                                "state=draining pending_copies=%d "
                                "timeout_ms=%lld",
                                c->outstanding,
                                (long long)c->conf->drain_timeout_ms);
                        pause_all(c, "shutdown");
                }
                publish(c);
                if (c->draining) {
                        serve_copies(c, 50);
                        unpark(c);
                        if (c->outstanding == 0 && !c->delivered &&
                            !c->redeliver && !c->parked)
                                break;
                        if (dq_mono_ms() >= c->drain_deadline)
                                break;
                        /* Keep serving the group while draining. */
                        rd_kafka_message_t *m =
                            rd_kafka_consumer_poll(c->rk, 0);
                        if (m)
                                rd_kafka_message_destroy(m);
                        continue;
                }

                if (c->unavailable_at && !redis_recovered(c))
                        continue;
                size_t n = read_batch(c, batch, max, next_timeout(c));
                if (n) {
                        process(c, batch, n);
                        c->next_ping = dq_mono_ms() + IDLE_PING_MS;
                } else if (dq_mono_ms() >= c->next_ping) {
                        /* Idle: learn of an outage before work arrives,
                         * so that readiness tells the truth. */
                        int tries = 0;
                        c->next_ping = dq_mono_ms() + IDLE_PING_MS;
                        if (dq_store_ping(c->store) != DQ_OK)
                                redis_wait(c, &tries);
                }
                serve_copies(c, 0);
                unpark(c);
                delay_resume_due(c);
                if (dq_mono_ms() >= c->next_part_check && any_blocked(c))
                        parts_check(c);

                now = dq_mono_ms();
                if (now >= c->next_commit) {
                        commit(c, false);
                        c->next_commit = now + c->conf->commit_interval_ms;
                }
                if (c->conf->summary_interval_ms > 0 &&
                    now >= c->next_summary) {
                        summary(c, "interval");
                        c->next_summary = now + c->conf->summary_interval_ms;
                }
        }

        log_signal(c);
        if (c->stop >= 2)
                dq_warn("drain", "state=stopped_at_once pending_copies=%d",
                        c->outstanding);
        else if (c->outstanding > 0)
                dq_warn("drain", "state=timed_out pending_copies=%d",
                        c->outstanding);
        if (c->outstanding > 0) {
                /* Unsettled: read again by the next owner (G1). */
                c->st.abandoned += c->outstanding;
                c->handed_back = true;
        }
        for (size_t i = 0; i < c->backlog_cnt; i++)
                abandon_item(c, c->backlog[i], "shutdown");
        c->backlog_cnt = 0;
        while (c->parked) {
                item_t *it = c->parked;
                c->parked = it->next;
                abandon_item(c, it, "shutdown");
        }
        while (c->redeliver) {
                item_t *it = c->redeliver;
                c->redeliver = it->next;
                abandon_item(c, it, "shutdown");
        }
        c->stored_since_commit = true;
        c->commit_failed = !commit(c, true);
        publish(c);
        dq_info("drain", "state=closing handed_back=%s commit=%s fatal=%s",
                c->handed_back ? "true" : "false",
                c->commit_failed ? "failed" : "ok",
                c->fatal ? "true" : "false");
        free(batch);
        if (c->fatal)
                return DQ_RUN_FATAL;
        return c->handed_back || c->commit_failed ? DQ_RUN_HANDED_BACK
                                                  : DQ_RUN_DRAINED;
}

void dq_consumer_stop(dq_consumer_t *c)
{
        if (c->stop < 2)
                c->stop++;
}

void dq_consumer_signal(dq_consumer_t *c, int sig)
{
        if (sig > 0 && sig < 32)
                c->signals[sig] = 1;
        if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT)
                dq_consumer_stop(c);
}

void dq_consumer_destroy(dq_consumer_t *c)
{
        if (!c)
                return;
        /* Not ready from here on; the listener goes last but one. */
        if (c->metrics)
                publish(c);
        if (c->rk) {
                /* Leaves the group; the revoke commits what is settled. */
                rd_kafka_consumer_close(c->rk);
                rd_kafka_destroy(c->rk);
        }
        if (c->pk) {
                /* Copies never confirmed leave their messages unsettled. */
                int64_t until = dq_mono_ms() + 2000;
                rd_kafka_purge(c->pk, RD_KAFKA_PURGE_F_QUEUE |
                                          RD_KAFKA_PURGE_F_INFLIGHT);
                while (c->outstanding > 0 && dq_mono_ms() < until)
                        rd_kafka_poll(c->pk, 50);
                item_t *it, *next;
                for (it = c->delivered; it; it = next) {
                        next = it->next;
                        item_free(it);
                }
                for (it = c->redeliver; it; it = next) {
                        next = it->next;
                        item_free(it);
                }
                rd_kafka_destroy(c->pk);
        }
        summary(c, "exit");
        while (c->parts) {
                part_t *p = c->parts;
                c->parts = p->next;
                dq_offsets_release(&p->off);
                free(p);
        }
        for (size_t i = 0; i < c->backlog_cnt; i++)
                item_free(c->backlog[i]);
        free(c->backlog);
        while (c->parked) {
                item_t *it = c->parked;
                c->parked = it->next;
                item_free(it);
        }
        for (int i = 0; c->tier_topics && i < c->tier_cnt; i++)
                free(c->tier_topics[i]);
        free(c->tier_topics);
        dq_store_destroy(c->store);
        dq_http_stop(c->http);
        dq_metrics_destroy(c->metrics);
        free(c);
}
