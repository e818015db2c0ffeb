/* Claim, run and settle: the steps of a batch between its classification
 * and its copies. Claim and settle are single-shot (one pipelined round
 * trip each, see dq_round_fn); dq_outage_round() sends again what got no
 * answer. Handlers run one after another on the loop's thread. */
#include "dq_consumer_int.h"

#include <stdlib.h>
#include <string.h>

#include "dq_log.h"
#include "dq_retry.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

/* What a batch's claim leaves to run. */
typedef struct batch_s {
        dq_consumer_t *c;
        dq_item_t **run; /* claimed, to run, in arrival order */
        size_t run_cnt;
        dq_item_t **copies;
        int64_t next_renew; /* mono ms: when the leases are renewed */
} batch_t;

static void observe_redis(dq_consumer_t *c, int64_t t0)
{
        if (c->metrics)
                dq_metrics_observe(c->metrics, DQ_HIST_REDIS,
                                   (double)(dq_mono_ms() - t0));
}

/* Logs a claim's answer, at debug level but for an exhausted job. */
static void log_claim(const dq_item_t *it)
{
        const dq_claim_t *cl = &it->claim;
        const dq_job_t *j = it->job;

        switch (cl->status) {
        case DQ_CLAIM_BUSY:
                dq_debug("claim",
                         "job=%s status=busy lease_until=%lld action=park",
                         j->id, (long long)cl->until);
                break;
        case DQ_CLAIM_NOT_DUE:
                dq_debug("claim",
                         "job=%s status=not_due not_before=%lld "
                         "action=defer",
                         j->id, (long long)cl->until);
                break;
        case DQ_CLAIM_STALE:
                dq_debug("claim", "job=%s status=stale attempts=%lld", j->id,
                         (long long)cl->attempts);
                break;
        case DQ_CLAIM_DUPLICATE:
                dq_debug("claim", "job=%s status=duplicate of=%s", j->id,
                         cl->ref);
                break;
        case DQ_CLAIM_TERMINAL:
                dq_debug("claim", "job=%s status=terminal state=%s", j->id,
                         cl->state);
                break;
        case DQ_CLAIM_EXHAUSTED:
                dq_warn("claim",
                        "job=%s status=exhausted attempts=%lld "
                        "action=dead_letter class=crash_loop",
                        j->id, (long long)cl->attempts);
                break;
        case DQ_CLAIM_CLAIMED:
                dq_debug("claim",
                         "job=%s kind=%s scope=%s status=claimed attempt=%lld "
                         "epoch=%lld scheduled_for=%lld at=%lld msg=%s%s",
                         j->id, dq_kind_name(j->kind), j->scope,
                         (long long)cl->attempts, (long long)cl->epoch,
                         (long long)j->scheduled_for_ms,
                         (long long)it->claim_wall, it->ref,
                         cl->took_over ? " took_over=true" : "");
                break;
        }
}

/* Routes an item whose claim was answered, as r says. */
static void claimed(dq_consumer_t *c, dq_item_t *it, dq_route_t r, batch_t *b)
{
        const dq_claim_t *cl = &it->claim;

        /* A parked delivery keeps what its record says, so that a later
         * claim still knows a stale copy. */
        if (cl->status != DQ_CLAIM_BUSY) {
                it->attempts = cl->attempts;
                it->epoch = cl->epoch;
        }
        if (!dq_err_is_fatal(cl->err))
                log_claim(it);
        switch (r.action) {
        case DQ_ROUTE_RUN:
                c->st.claimed++;
                dq_metrics_count(c->metrics, "claimed",
                                 dq_kind_name(it->job->kind), NULL);
                b->run[b->run_cnt++] = it;
                break;
        case DQ_ROUTE_PARK:
                dq_item_push(&c->parked, it);
                break;
        case DQ_ROUTE_DEFER:
                dq_copy_to_delay(c, it, r.until, r.outcome);
                dq_item_push(b->copies, it);
                break;
        case DQ_ROUTE_DLQ:
                dq_copy_to_dlq(it, r.err_class, r.code, r.message,
                               r.dead_after);
                dq_item_push(b->copies, it);
                break;
        default:
                dq_item_settle(c, it, r.outcome);
                break;
        }
}

/* One claim round trip (dq_round_fn). */
static size_t claim_once(dq_consumer_t *c, dq_item_t **items, size_t n,
                         bool *heard, void *opaque)
{
        dq_claim_t *cl = calloc(n, sizeof(*cl));
        size_t m = 0, k = 0;
        int64_t t0, wall;

        if (!cl)
                dq_oom();
        for (size_t i = 0; i < n; i++) {
                const dq_part_t *p = dq_item_part(c, items[i]);
                if (!p) {
                        dq_item_free(items[i]);
                        continue;
                }
                items[m] = items[i];
                cl[m++] = (dq_claim_t){
                    .job = items[i]->job,
                    .msg = items[i]->ref,
                    .is_copy = p->tier >= 0,
                    .copy_attempts = items[i]->attempts,
                };
        }
        if (m) {
                t0 = dq_mono_ms();
                wall = dq_now_ms();
                dq_store_claim(c->store, cl, m, wall);
                observe_redis(c, t0);
        }
        /* An unanswered claim is sent again; one that did happen is then
         * counted twice, which only makes the bound stricter. */
        for (size_t i = 0; i < m; i++) {
                dq_item_t *it = items[i];
                dq_route_t r = dq_route_claim(&cl[i]);

                if (r.action == DQ_ROUTE_RESEND) {
                        items[k++] = it;
                        continue;
                }
                *heard = true;
                it->claim = cl[i];
                it->claimed_at = t0;
                it->claim_wall = wall;
                claimed(c, it, r, opaque);
        }
        free(cl);
        return k;
}

/* Renews the leases of a batch's claimed jobs while a handler runs long,
 * and tells the handler to give up on shutdown. @locality main loop,
 * inside a handler */
static bool heartbeat(void *opaque)
{
        batch_t *b = opaque;
        dq_consumer_t *c = b->c;
        int64_t now = dq_mono_ms();

        dq_consumer_publish(c); /* a long job is progress too; SIGTERM shows */
        if (dq_consumer_stopping(c))
                return false;
        if (now < b->next_renew)
                return true;
        b->next_renew = now + c->conf->lease_ms / 3;
        for (size_t i = 0; i < b->run_cnt; i++) {
                dq_item_t *it = b->run[i];
                dq_err_t err;

                if (!it)
                        continue;
                err = dq_store_renew(c->store, it->job, it->epoch, dq_now_ms());
                dq_debug("claim", "job=%s lease=renewed result=%s", it->job->id,
                         dq_err_name(err));
        }
        return true;
}

/* Runs the handler of each claimed job and sets its settle up. Returns the
 * number of items left needing a Redis settle, moved to out[0..). */
static size_t run_all(dq_consumer_t *c, batch_t *b, dq_item_t **out)
{
        dq_handler_ctx_t ctx = {c->conf->debug_faults, heartbeat, b};
        size_t k = 0;

        b->next_renew = dq_mono_ms() + c->conf->lease_ms / 3;
        for (size_t i = 0; i < b->run_cnt; i++) {
                dq_item_t *it = b->run[i];
                dq_handler_result_t res;
                dq_route_t r;
                int64_t now;

                if (!dq_item_part(c, it) || dq_consumer_stopping(c)) {
                        dq_item_abandon(c, it,
                                        dq_item_part(c, it) ? "shutdown"
                                                            : "revoked");
                        b->run[i] = NULL;
                        continue;
                }
                dq_handler_run(&ctx, it->job, it->attempts, &res);
                if (res.abandoned) {
                        dq_item_abandon(c, it, "shutdown");
                        b->run[i] = NULL;
                        continue;
                }
                now = dq_now_ms();
                r = dq_route_result(&res, it->attempts, c->conf->max_attempts);
                switch (r.action) {
                case DQ_ROUTE_COMPLETE:
                        it->settle = (dq_settle_t){.job = it->job,
                                                   .op = DQ_SETTLE_COMPLETE,
                                                   .epoch = it->epoch};
                        break;
                case DQ_ROUTE_RETRY:
                        if (!it->first_failed_at)
                                it->first_failed_at = now;
                        it->err_class = r.err_class;
                        snprintf(it->err_code, sizeof(it->err_code), "%s",
                                 r.code);
                        snprintf(it->err_message, sizeof(it->err_message), "%s",
                                 r.message);
                        it->not_before =
                            now + dq_backoff_ms(it->attempts,
                                                c->conf->backoff_base_ms,
                                                c->conf->backoff_max_ms,
                                                dq_consumer_rand(c));
                        it->settle = (dq_settle_t){
                            .job = it->job,
                            .op = DQ_SETTLE_RETRY,
                            .epoch = it->epoch,
                            .not_before_ms = it->not_before,
                            .error_class = it->err_class,
                            .error_code = it->err_code,
                            .error_message = it->err_message,
                        };
                        break;
                default: /* DQ_ROUTE_DLQ */
                        dq_copy_to_dlq(it, r.err_class, r.code, r.message,
                                       r.dead_after);
                        dq_item_push(b->copies, it);
                        continue;
                }
                out[k++] = it;
        }
        return k;
}

/* Routes an item whose settle was answered, as r says. */
static void settled(dq_consumer_t *c, dq_item_t *it, const dq_settle_t *s,
                    dq_route_t r, dq_item_t **copies)
{

        switch (r.action) {
        case DQ_ROUTE_DEFER: /* a retry, written: its delay copy */
                dq_info("retry",
                        "job=%s attempt=%lld code=%s backoff_ms=%lld "
                        "not_before=%lld",
                        it->job->id, (long long)it->attempts, it->err_code,
                        (long long)(it->not_before - dq_now_ms()),
                        (long long)it->not_before);
                dq_copy_to_delay(c, it, r.until, r.outcome);
                dq_item_push(copies, it);
                return;
        case DQ_ROUTE_DLQ:
                dq_copy_to_dlq(it, r.err_class, r.code, r.message,
                               r.dead_after);
                dq_item_push(copies, it);
                return;
        default:
                break;
        }
        if (r.outcome == DQ_OUTCOME_DEAD && s->err == DQ_OK)
                dq_info("dead",
                        "job=%s scope=%s class=%s code=%s attempts=%lld",
                        it->job->id, it->job->scope, it->err_class,
                        it->err_code, (long long)it->attempts);
        else if (r.outcome == DQ_OUTCOME_DEAD)
                dq_error("dead",
                         "job=%s scope=%s state=unrecorded code=%s "
                         "error=\"%s\"",
                         it->job->id, it->job->scope, s->code,
                         dq_esc(s->message));
        else if (r.outcome == DQ_OUTCOME_COMPLETED)
                dq_debug("settle", "job=%s effect=applied result=%s",
                         it->job->id, s->result);
        else
                dq_debug("settle", "job=%s result=%s", it->job->id,
                         dq_err_name(s->err));
        dq_item_settle(c, it, r.outcome);
}

/* One settle round trip (dq_round_fn). */
static size_t settle_once(dq_consumer_t *c, dq_item_t **items, size_t n,
                          bool *heard, void *opaque)
{
        dq_settle_t *ss = calloc(n, sizeof(*ss));
        size_t m = 0, k = 0;

        if (!ss)
                dq_oom();
        for (size_t i = 0; i < n; i++) {
                if (!dq_item_part(c, items[i])) {
                        dq_item_free(items[i]);
                        continue;
                }
                items[m] = items[i];
                ss[m++] = items[i]->settle;
        }
        if (m) {
                int64_t t0 = dq_mono_ms();
                dq_store_settle(c->store, ss, m, dq_now_ms());
                observe_redis(c, t0);
        }
        for (size_t i = 0; i < m; i++) {
                dq_route_t r = dq_route_settled(&ss[i]);

                if (r.action == DQ_ROUTE_RESEND) {
                        items[k++] = items[i]; /* outcome unknown */
                        continue;
                }
                *heard = true;
                settled(c, items[i], &ss[i], r, opaque);
        }
        free(ss);
        return k;
}

void dq_batch_settle(dq_consumer_t *c, dq_item_t **items, size_t n,
                     dq_item_t **copies)
{
        dq_outage_round(c, items, n, settle_once, copies);
}

/* Claims, runs and settles items[0..n), classified already; their copies
 * go to *copies. */
static void execute(dq_consumer_t *c, dq_item_t **items, size_t n,
                    dq_item_t **copies)
{
        batch_t b = {.c = c, .copies = copies};
        dq_item_t **left = malloc(n * sizeof(*left));

        if (!(b.run = malloc(n * sizeof(*b.run))) || !left)
                dq_oom();
        memcpy(left, items, n * sizeof(*left));
        dq_outage_round(c, left, n, claim_once, &b);
        n = run_all(c, &b, left);
        if (n)
                dq_batch_settle(c, left, n, copies);
        free(b.run);
        free(left);
}

void dq_batch_process(dq_consumer_t *c, dq_item_t **batch, size_t n)
{
        dq_item_t *copies = NULL;
        size_t run = 0;

        for (size_t i = 0; i < n; i++)
                if (dq_item_classify(c, batch[i], &copies))
                        batch[run++] = batch[i];
        if (run)
                execute(c, batch, run, &copies);
        dq_copy_produce(c, copies);
}

void dq_batch_unpark(dq_consumer_t *c)
{
        dq_item_t *copies = NULL, *it, **items;
        size_t n = 0;

        if (!c->parked || dq_mono_ms() < c->next_unpark)
                return;
        c->next_unpark = dq_mono_ms() + DQ_PARK_RECHECK_MS;
        for (it = c->parked; it; it = it->next)
                n++;
        if (!(items = malloc(n * sizeof(*items))))
                dq_oom();
        n = 0;
        for (it = c->parked; it; it = it->next)
                items[n++] = it;
        c->parked = NULL;
        execute(c, items, n, &copies);
        dq_copy_produce(c, copies);
        free(items);
}
