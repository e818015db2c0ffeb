/* Claim, run and settle: the steps of a batch between its classification
 * and its copies. A job whose handler does nothing but the effect is
 * claimed and completed in one Redis step (dq_store_run()); the others are
 * claimed when about to run, run by the scheduler (dq_sched.c) and
 * settled. Each kind of round trip is single-shot (one pipelined round
 * trip, see dq_round_fn); dq_outage_round() sends again what got no
 * answer. The one-step runs of a batch read from Kafka stay in flight
 * while the loop reads the next (send_runs(), land()), spread over the
 * lanes (redis.connections) by scope. */
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
        dq_item_t **copies;
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
        /* Not to run: its scope is free for the next job. */
        if (r.action != DQ_ROUTE_RUN)
                dq_sched_release(c, it);
        switch (r.action) {
        case DQ_ROUTE_RUN:
                c->st.claimed++;
                dq_metrics_count(c->metrics, "claimed",
                                 dq_kind_name(it->job->kind), NULL);
                dq_sched_started(c, it);
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

/* Drops the items whose partition was revoked, moving the rest to
 * items[0..m), and sets up the claim of each: the m claims start at cl,
 * stride bytes apart. Returns m. */
static size_t claims_of(dq_consumer_t *c, dq_item_t **items, size_t n,
                        dq_claim_t *cl, size_t stride)
{
        size_t m = 0;

        for (size_t i = 0; i < n; i++) {
                const dq_part_t *p = dq_item_part(c, items[i]);
                if (!p) {
                        /* Revoked meanwhile (an outage round spans
                         * rebalances): the new owner reads it again. */
                        dq_item_abandon(c, items[i], "revoked");
                        continue;
                }
                items[m] = items[i];
                dq_claim_t *claim = (dq_claim_t *)((char *)cl + m++ * stride);
                *claim = (dq_claim_t){
                    .job = items[i]->job,
                    .msg = items[i]->ref,
                    .is_copy = p->tier >= 0,
                    .copy_attempts = items[i]->attempts,
                };
                dq_llm_jobs_prepare_claim(c, items[i], claim);
        }
        return m;
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
        m = claims_of(c, items, n, cl, sizeof(*cl));
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

static void settled(dq_consumer_t *c, dq_item_t *it, const dq_settle_t *s,
                    dq_route_t r, dq_item_t **copies);

/* Routes the answers of m one-step runs: what was not claimed as a
 * claim's answer, what was as a settle's. The items whose outcome is
 * unknown move to items[0..k), in order; returns k. */
static size_t route_runs(dq_consumer_t *c, dq_item_t **items,
                         dq_store_run_t *rn, size_t m, int64_t t0, int64_t wall,
                         bool *heard, batch_t *b)
{
        size_t k = 0;

        for (size_t i = 0; i < m; i++) {
                dq_item_t *it = items[i];
                dq_route_t r = dq_route_claim(&rn[i].claim);

                if (r.action == DQ_ROUTE_RESEND) {
                        items[k++] = it;
                        continue;
                }
                *heard = true;
                it->claim = rn[i].claim;
                it->claimed_at = t0;
                it->claim_wall = wall;
                if (r.action != DQ_ROUTE_RUN) {
                        claimed(c, it, r, b);
                        continue;
                }
                it->attempts = it->claim.attempts;
                it->epoch = it->claim.epoch;
                log_claim(it);
                c->st.claimed++;
                dq_metrics_count(c->metrics, "claimed",
                                 dq_kind_name(it->job->kind), NULL);
                it->settle = rn[i].settle;
                settled(c, it, &it->settle, dq_route_settled(&it->settle),
                        b->copies);
        }
        return k;
}

/* One round trip of one-step runs (dq_round_fn): each job claimed and
 * completed at once. */
static size_t run_once(dq_consumer_t *c, dq_item_t **items, size_t n,
                       bool *heard, void *opaque)
{
        dq_store_run_t *rn = calloc(n, sizeof(*rn));
        size_t m = 0, k = 0;
        int64_t t0 = 0, wall = 0;

        if (!rn)
                dq_oom();
        m = claims_of(c, items, n, &rn[0].claim, sizeof(*rn));
        if (m) {
                t0 = dq_mono_ms();
                wall = dq_now_ms();
                dq_store_run(c->store, rn, m, wall);
                observe_redis(c, t0);
        }
        k = route_runs(c, items, rn, m, t0, wall, heard, opaque);
        free(rn);
        return k;
}

/* The end of a run that goes to the DLQ: its copy is sent next, and its
 * state becomes dead once the copy is delivered. */
static void log_dead_letter(const dq_item_t *it, const char *code)
{
        dq_debug("settle", "job=%s result=dead_letter code=%s", it->job->id,
                 code);
}

/* Sets up what a finished handler's result asks for: a settle (true), or
 * a DLQ copy pushed on *copies (false). */
static bool prepare(dq_consumer_t *c, dq_item_t *it, dq_handler_result_t *res,
                    dq_item_t **copies)
{
        dq_route_t r;
        int64_t now = dq_now_ms(), back = 0, floor;

        if (dq_llm_jobs_is_llm(c, it))
                back = dq_llm_jobs_result(c, it, res);
        if (back) {
                /* The backend's fault: handed back, the attempt given
                 * back too, until the circuit's probe. */
                snprintf(it->err_code, sizeof(it->err_code), "%s",
                         res->code ? res->code : "decay.llm.no_blame");
                it->not_before = back;
                it->settle = (dq_settle_t){
                    .job = it->job,
                    .op = DQ_SETTLE_RELEASE,
                    .epoch = it->epoch,
                    .not_before_ms = back,
                    .error_code = it->err_code,
                };
                return true;
        }
        r = dq_route_result(res, it->attempts, c->conf->max_attempts);
        switch (r.action) {
        case DQ_ROUTE_COMPLETE:
                it->settle = (dq_settle_t){.job = it->job,
                                           .op = DQ_SETTLE_COMPLETE,
                                           .epoch = it->epoch};
                if (res->content) {
                        dq_llm_jobs_summary(it, res);
                        it->settle.summary = &it->summary;
                }
                return true;
        case DQ_ROUTE_RETRY:
                if (!it->first_failed_at)
                        it->first_failed_at = now;
                it->err_class = r.err_class;
                snprintf(it->err_code, sizeof(it->err_code), "%s", r.code);
                snprintf(it->err_message, sizeof(it->err_message), "%s",
                         r.message);
                it->not_before =
                    now + dq_backoff_ms(it->attempts, c->conf->backoff_base_ms,
                                        c->conf->backoff_max_ms,
                                        dq_consumer_rand(c));
                /* The server's Retry-After is a floor: never earlier. */
                floor =
                    res->retry_after_ms >= 0 ? now + res->retry_after_ms : 0;
                if (floor > it->not_before)
                        it->not_before = floor;
                it->settle = (dq_settle_t){
                    .job = it->job,
                    .op = DQ_SETTLE_RETRY,
                    .epoch = it->epoch,
                    .not_before_ms = it->not_before,
                    .error_class = it->err_class,
                    .error_code = it->err_code,
                    .error_message = it->err_message,
                };
                return true;
        default: /* DQ_ROUTE_DLQ */
                log_dead_letter(it, r.code);
                dq_copy_to_dlq(it, r.err_class, r.code, r.message,
                               r.dead_after);
                dq_item_push(copies, it);
                return false;
        }
}

void dq_batch_finish(dq_consumer_t *c, dq_item_t **items,
                     dq_handler_result_t *res, size_t n, dq_item_t **copies)
{
        dq_item_t **left = malloc((n ? n : 1) * sizeof(*left));
        size_t k = 0;

        if (!left)
                dq_oom();
        for (size_t i = 0; i < n; i++) {
                if (!dq_item_part(c, items[i])) {
                        dq_item_abandon(c, items[i], "revoked");
                        continue;
                }
                if (prepare(c, items[i], &res[i], copies))
                        left[k++] = items[i];
        }
        if (k)
                dq_batch_settle(c, left, k, copies);
        free(left);
}

/* Routes an item whose settle was answered, as r says. */
static void settled(dq_consumer_t *c, dq_item_t *it, const dq_settle_t *s,
                    dq_route_t r, dq_item_t **copies)
{

        switch (r.action) {
        case DQ_ROUTE_DEFER: /* a retry, written: its delay copy */
                if (s->op == DQ_SETTLE_RELEASE) {
                        it->attempts = strtoll(s->result, NULL, 10);
                        dq_info("retry",
                                "job=%s attempt=%lld code=%s released=true "
                                "not_before=%lld",
                                it->job->id, (long long)it->attempts,
                                it->err_code, (long long)it->not_before);
                        dq_copy_to_delay(c, it, r.until, r.outcome);
                        dq_item_push(copies, it);
                        return;
                }
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
                log_dead_letter(it, r.code);
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
                        dq_item_abandon(c, items[i], "revoked");
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

void dq_batch_run_inline(dq_consumer_t *c, dq_item_t **items, size_t n,
                         dq_item_t **copies)
{
        batch_t b = {.c = c, .copies = copies};
        dq_outage_round(c, items, n, run_once, &b);
}

void dq_batch_claim(dq_consumer_t *c, dq_item_t **items, size_t n,
                    dq_item_t **copies)
{
        batch_t b = {.c = c, .copies = copies};
        dq_outage_round(c, items, n, claim_once, &b);
}

/* Reads the replies of the oldest batches in flight until keep are left
 * (all of them once one is lost: the rest went the same way), then routes
 * them; the items with no answer are sent again, in order, until they get
 * one. Every reply is read before anything is routed, since routing may
 * use the store. */
static void land(dq_consumer_t *c, size_t keep)
{
        dq_flight_t f[DQ_FLIGHT_MAX];
        dq_item_t **lost_items = NULL;
        batch_t b = {.c = c, .copies = &c->flight_copies};
        size_t n = 0, lost = 0, total = 0;
        bool heard = false, broken = false;

        while (c->flight_cnt > (broken ? 0 : keep)) {
                dq_flight_t *g = &f[n++];

                *g = c->flight[0];
                memmove(&c->flight[0], &c->flight[1],
                        --c->flight_cnt * sizeof(c->flight[0]));
                for (size_t l = 0; l < c->lane_cnt; l++) {
                        size_t at = g->lane[l], cnt = g->lane[l + 1] - at;
                        if (cnt && dq_store_run_recv(c->lanes[l], &g->runs[at],
                                                     cnt, &g->ticket[l]))
                                broken = true;
                }
                observe_redis(c, g->t0);
                total += g->n;
        }
        for (size_t i = 0; i < n; i++) {
                size_t k = route_runs(c, f[i].items, f[i].runs, f[i].n, f[i].t0,
                                      f[i].wall, &heard, &b);
                if (k && !lost_items &&
                    !(lost_items = malloc(total * sizeof(*lost_items))))
                        dq_oom();
                if (k)
                        memcpy(&lost_items[lost], f[i].items,
                               k * sizeof(*lost_items));
                lost += k;
                free(f[i].items);
                free(f[i].runs);
        }
        if (lost)
                dq_outage_round(c, lost_items, lost, run_once, &b);
        else if (heard)
                dq_outage_over(c);
        free(lost_items);
}

/* Produces the copies that landed answers made. */
static void produce_landed(dq_consumer_t *c)
{
        dq_item_t *copies = c->flight_copies;

        c->flight_copies = NULL;
        if (copies)
                dq_copy_produce(c, copies);
}

void dq_batch_land(dq_consumer_t *c, bool produce)
{
        land(c, 0);
        if (produce)
                produce_landed(c);
}

/* The lane of an item's scope (FNV-1a of the scope). */
static size_t lane_of(const dq_consumer_t *c, const dq_item_t *it)
{
        uint32_t h = 2166136261u;

        for (const char *s = it->job->scope; *s; s++)
                h = (h ^ (unsigned char)*s) * 16777619u;
        return h % c->lane_cnt;
}

/* Sends the one-step runs of items[0..n) and returns while Redis runs
 * them; dq_batch_land() routes their answers. A batch that could not be
 * written lands at once, so that nothing sent after it runs before it. */
static void send_runs(dq_consumer_t *c, dq_item_t **items, size_t n)
{
        size_t next[DQ_REDIS_CONNECTIONS_MAX], m = 0;
        bool unsent = false;
        dq_flight_t *f;

        land(c, DQ_FLIGHT_MAX - 1);
        f = &c->flight[c->flight_cnt];
        *f = (dq_flight_t){0};
        f->items = malloc(n * sizeof(*f->items));
        f->runs = calloc(n, sizeof(*f->runs));
        if (!f->items || !f->runs)
                dq_oom();
        /* Grouped by lane, a scope keeping to one, in batch order in
         * each: a scope's jobs reach Redis in the order they were read. */
        for (size_t i = 0; i < n; i++)
                f->lane[lane_of(c, items[i]) + 1]++;
        for (size_t l = 0; l < c->lane_cnt; l++)
                f->lane[l + 1] += f->lane[l];
        for (size_t l = 0; l < c->lane_cnt; l++)
                next[l] = f->lane[l];
        for (size_t i = 0; i < n; i++)
                f->items[next[lane_of(c, items[i])]++] = items[i];
        /* Each lane without the revoked, moved up behind the one before. */
        for (size_t l = 0; l < c->lane_cnt; l++) {
                size_t at = f->lane[l], k;

                k = claims_of(c, &f->items[at], f->lane[l + 1] - at,
                              &f->runs[m].claim, sizeof(*f->runs));
                memmove(&f->items[m], &f->items[at], k * sizeof(*f->items));
                f->lane[l] = m;
                m += k;
        }
        f->lane[c->lane_cnt] = f->n = m;
        if (!m) {
                free(f->items);
                free(f->runs);
                return;
        }
        f->t0 = dq_mono_ms();
        f->wall = dq_now_ms();
        c->flight_cnt++;
        for (size_t l = 0; l < c->lane_cnt; l++) {
                size_t at = f->lane[l], cnt = f->lane[l + 1] - at;
                if (!cnt)
                        continue;
                dq_store_run_send(c->lanes[l], &f->runs[at], cnt, f->wall,
                                  &f->ticket[l]);
                unsent |= !f->ticket[l].conn;
        }
        if (unsent)
                land(c, 0);
}

/* Runs what can run now: in flight (send_runs()) or at once
 * (dq_batch_run_inline()); the rest waits for its scope in the
 * scheduler. */
static void execute(dq_consumer_t *c, dq_item_t **items, size_t n,
                    bool in_flight, dq_item_t **copies)
{
        size_t k = 0;

        for (size_t i = 0; i < n; i++) {
                if (dq_sched_wants(c, items[i]))
                        dq_sched_push(c, items[i]);
                else
                        items[k++] = items[i];
        }
        if (k && in_flight)
                send_runs(c, items, k);
        else if (k)
                dq_batch_run_inline(c, items, k, copies);
}

void dq_batch_process(dq_consumer_t *c, dq_item_t **batch, size_t n)
{
        dq_item_t *copies = NULL;
        size_t run = 0;

        for (size_t i = 0; i < n; i++)
                if (dq_item_classify(c, batch[i], &copies))
                        batch[run++] = batch[i];
        if (run)
                execute(c, batch, run, true, &copies);
        dq_copy_produce(c, copies);
        produce_landed(c);
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
        dq_batch_land(c, true);
        execute(c, items, n, false, &copies);
        dq_copy_produce(c, copies);
        free(items);
}
