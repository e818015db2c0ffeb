/* One planning pass; see dq_planner.h. */
#define _GNU_SOURCE
#include "dq_planner_int.h"

#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

int64_t dq_planner_clock_ms(void)
{
        static int64_t offset = -1;
        if (offset == -1) {
                const char *s = getenv("DQ_TEST_CLOCK_OFFSET_MS");
                offset = s ? strtoll(s, NULL, 10) : 0;
        }
        return dq_now_ms() + offset;
}

/* One policy from its plan.<name>.* keys; false with errstr when the keys
 * contradict each other or name a method a planner cannot use. */
static bool policy_from(dq_plan_policy_t *pol, const char *name, dq_kind_t kind,
                        const dq_conf_policy_t *c, char *errstr,
                        size_t errstr_size)
{
        int method = dq_method_parse(c->method ? c->method
                                               : "deterministic_concatenate");

        if (method < 0) {
                snprintf(errstr, errstr_size,
                         "plan.%s.method: expected deterministic_concatenate, "
                         "got '%s'",
                         name, dq_esc(c->method));
                return false;
        }
        if (method == DQ_METHOD_LLM_SUMMARY) {
                snprintf(errstr, errstr_size,
                         "plan.%s.method: llm_summary needs an operator's "
                         "signed attestation on each job, which a planner "
                         "cannot make; use deterministic_concatenate",
                         name);
                return false;
        }
        if (c->min_sources > c->max_sources) {
                snprintf(errstr, errstr_size,
                         "plan.%s.min.sources (%lld) is more than "
                         "plan.%s.max.sources (%lld)",
                         name, (long long)c->min_sources, name,
                         (long long)c->max_sources);
                return false;
        }
        *pol = (dq_plan_policy_t){.name = name,
                                  .kind = kind,
                                  .min_age_ms = c->min_age_ms,
                                  .min_sources = c->min_sources,
                                  .max_sources = c->max_sources,
                                  .method = (dq_method_t)method};
        return true;
}

static void on_delivery(const dq_delivery_t *d, void *opaque);

dq_planner_t *dq_planner_new(const dq_conf_t *conf, const char *name,
                             char *errstr, size_t errstr_size)
{
        dq_planner_t *p = calloc(1, sizeof(*p));
        dq_conf_policy_t principles = conf->plan_principles;

        if (!p || asprintf(&p->created_by, "planner:%s", name) < 0) {
                free(p);
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        p->conf = conf;
        pthread_mutex_init(&p->m.lock, NULL);
        p->m.tick_mono = dq_mono_ms();
        snprintf(p->m.why, sizeof(p->m.why), "no pass yet");
        if (conf->plan_candidates.enabled &&
            !policy_from(&p->policies[p->policy_cnt++], "candidates",
                         DQ_KIND_CANDIDATE_COMPRESSION, &conf->plan_candidates,
                         errstr, errstr_size))
                goto err;
        if (conf->plan_episodes.enabled &&
            !policy_from(&p->policies[p->policy_cnt++], "episodes",
                         DQ_KIND_EPISODE_COMPRESSION, &conf->plan_episodes,
                         errstr, errstr_size))
                goto err;
        /* Principles are due once past expires_at, one or more a job. */
        principles.min_age_ms = 0;
        principles.min_sources = 1;
        principles.method = NULL;
        if (conf->plan_principles.enabled &&
            !policy_from(&p->policies[p->policy_cnt++], "principles",
                         DQ_KIND_EXPIRED_PRINCIPLE_REVIEW, &principles, errstr,
                         errstr_size))
                goto err;
        if (!p->policy_cnt) {
                snprintf(errstr, errstr_size,
                         "every policy is disabled (plan.candidates.enabled, "
                         "plan.episodes.enabled, plan.principles.enabled): "
                         "nothing to plan");
                goto err;
        }
        p->store = dq_store_new(conf, p->created_by, errstr, errstr_size);
        if (!p->store)
                goto err;
        p->producer =
            dq_producer_new(conf, on_delivery, p, errstr, errstr_size);
        if (!p->producer)
                goto err;
        return p;
err:
        dq_planner_destroy(p);
        return NULL;
}

void dq_planner_destroy(dq_planner_t *p)
{
        if (!p)
                return;
        dq_http_stop(p->http);
        dq_producer_destroy(p->producer);
        dq_store_destroy(p->store);
        pthread_mutex_destroy(&p->m.lock);
        free(p->created_by);
        free(p);
}

/* A published job awaiting its delivery report. */
typedef struct track_s {
        bool done;
        dq_err_t err;
        char errstr[160];
} track_t;

static void on_delivery(const dq_delivery_t *d, void *opaque)
{
        track_t *t = d->msg_opaque;

        (void)opaque;
        t->done = true;
        t->err = d->err;
        snprintf(t->errstr, sizeof(t->errstr), "%s",
                 d->errstr ? d->errstr : "");
}

/* Publishes the jobs of one plan; tracks[] get their reports. */
static void publish(dq_planner_t *p, const dq_plan_t *pl, track_t *tracks,
                    dq_pass_t *out)
{
        for (size_t j = 0; j < pl->job_cnt; j++) {
                const dq_plan_job_t *pj = &pl->jobs[j];
                dq_job_t job = {
                    .kind = pl->policy->kind,
                    .scope = (char *)pl->scope,
                    .source_ids = pj->sources,
                    .source_cnt = pj->source_cnt,
                    .method = pl->policy->method,
                    .created_at_ms = pj->created_at,
                    .created_by = p->created_by,
                    .idempotency_key = pj->idempotency_key,
                };
                dq_reject_t rej;
                char errstr[256];
                dq_err_t err;

                memcpy(job.id, pj->id, sizeof(job.id));
                err = dq_producer_send_job(p->producer, &job, &tracks[j], &rej,
                                           errstr, sizeof(errstr));
                if (err) {
                        track_t *t = &tracks[j];
                        t->done = true;
                        t->err = err;
                        if (err == DQ_ERR_INVALID)
                                snprintf(t->errstr, sizeof(t->errstr),
                                         "%s: %.100s", rej.code, rej.message);
                        else
                                snprintf(t->errstr, sizeof(t->errstr), "%.150s",
                                         errstr);
                }
                out->jobs++;
        }
}

/* Plans one batch of scopes: every enabled policy of each, in one round
 * trip; publishes what it proposes, waits for the reports, and marks the
 * delivered jobs. */
static dq_err_t plan_batch(dq_planner_t *p, char **scopes, size_t k,
                           dq_pass_t *out)
{
        size_t n = k * p->policy_cnt;
        dq_plan_t *plans = calloc(n ? n : 1, sizeof(*plans));
        track_t **tracks = calloc(n ? n : 1, sizeof(*tracks));
        dq_err_t err;

        if (!plans || !tracks)
                abort();
        for (size_t i = 0; i < n; i++) {
                plans[i].scope = scopes[i / p->policy_cnt];
                plans[i].policy = &p->policies[i % p->policy_cnt];
        }
        err = dq_memory_plan(p->store, plans, n, p->conf->plan_interval_ms,
                             p->conf->plan_scan_max);
        for (size_t i = 0; !err && i < n; i++) {
                dq_plan_t *pl = &plans[i];

                if (pl->err == DQ_ERR_UNAVAILABLE) {
                        err = DQ_ERR_UNAVAILABLE;
                        break;
                }
                if (pl->err) {
                        dq_error("plan", "scope=%s policy=%s error=\"%s\"",
                                 dq_esc(pl->scope), pl->policy->name,
                                 dq_esc(pl->message));
                        continue;
                }
                if (pl->gone + pl->stale + pl->bad)
                        dq_warn("plan",
                                "scope=%s policy=%s skipped_gone=%lld "
                                "skipped_inactive=%lld skipped_bad_id=%lld",
                                dq_esc(pl->scope), pl->policy->name,
                                (long long)pl->gone, (long long)pl->stale,
                                (long long)pl->bad);
                out->due += pl->due;
                out->proposed += pl->proposed;
                out->republished += pl->republished;
                out->held += pl->held;
                out->skipped += pl->gone + pl->stale + pl->bad;
                out->debt += pl->debt;
                if (pl->next_due &&
                    (!out->next_due || pl->next_due < out->next_due))
                        out->next_due = pl->next_due;
                tracks[i] = calloc(pl->job_cnt + 1, sizeof(**tracks));
                if (!tracks[i])
                        abort();
                publish(p, pl, tracks[i], out);
        }
        if (!err &&
            dq_producer_flush(p->producer, (int)p->conf->produce_timeout_ms))
                dq_warn("plan", "event=flush_timeout timeout_ms=%lld",
                        (long long)p->conf->produce_timeout_ms);
        for (size_t i = 0; i < n; i++) {
                dq_plan_t *pl = &plans[i];
                char **ids = calloc(pl->job_cnt + 1, sizeof(*ids));
                size_t m = 0;

                if (!ids)
                        abort();
                for (size_t j = 0; tracks[i] && j < pl->job_cnt; j++) {
                        track_t *t = &tracks[i][j];
                        if (t->done && t->err == DQ_OK) {
                                ids[m++] = pl->jobs[j].id;
                                continue;
                        }
                        out->failed++;
                        dq_warn("plan",
                                "job=%s scope=%s result=not_delivered "
                                "error=\"%s\" next=proposed_again_next_pass",
                                pl->jobs[j].id, dq_esc(pl->scope),
                                dq_esc(t->done ? t->errstr : "no report"));
                }
                out->delivered += (int64_t)m;
                if (!err && m &&
                    dq_memory_plan_published(p->store, pl->scope, ids, m))
                        /* Not marked: the next pass sends them again, and
                         * the copies collapse in the claim. */
                        dq_warn("plan", "scope=%s event=mark_failed jobs=%zu",
                                dq_esc(pl->scope), m);
                free(ids);
                free(tracks[i]);
                dq_plan_release(pl);
        }
        free(plans);
        free(tracks);
        return err;
}

static void free_batch(char **scopes, size_t *k)
{
        for (size_t i = 0; i < *k; i++)
                free(scopes[i]);
        *k = 0;
}

/* The window of the last pass any planner recorded, or 0. */
static int64_t recorded_window(dq_planner_t *p)
{
        dq_record_t rec;
        int64_t w = 0;

        if (dq_memory_plan_status(p->store, NULL, &rec) == DQ_OK) {
                const char *s = dq_record_get(&rec, "window");
                w = s ? strtoll(s, NULL, 10) : 0;
                dq_record_release(&rec);
        }
        return w;
}

static void record_pass(dq_planner_t *p, const dq_pass_t *o, int64_t end)
{
        char v[17][24];
        const int64_t vals[] = {
            o->window,  o->started,  end,         o->took_ms,     o->scopes,
            o->due,     o->proposed, o->jobs,     o->republished, o->failed,
            o->debt,    o->complete, o->next_due, o->missed,      o->held,
            o->skipped, p->trigger};
        const char *names[] = {
            "window",  "started_at", "ended_at", "took_ms",     "scopes",
            "due",     "proposed",   "jobs",     "republished", "failed",
            "debt",    "complete",   "next_due", "missed",      "held",
            "skipped", "trigger"};
        const char *kv[2 * 18];
        size_t n = 0;

        for (size_t i = 0; i < 17; i++) {
                snprintf(v[i], sizeof(v[i]), "%lld", (long long)vals[i]);
                kv[2 * n] = names[i];
                kv[2 * n++ + 1] = v[i];
        }
        kv[2 * n] = "planner";
        kv[2 * n++ + 1] = p->created_by;
        if (dq_memory_pass_record(p->store, kv, n))
                dq_warn("pass", "event=record_failed");
}

dq_err_t dq_planner_pass(dq_planner_t *p, volatile sig_atomic_t *stop,
                         dq_pass_t *out)
{
        const dq_conf_t *conf = p->conf;
        size_t cap = (size_t)conf->plan_batch, k = 0;
        char **batch = calloc(cap, sizeof(*batch));
        int64_t t0 = dq_mono_ms(), last, now;
        uint64_t cursor = 0;
        dq_err_t err;

        if (!batch)
                abort();
        memset(out, 0, sizeof(*out));
        if ((err = dq_memory_time(p->store, &now)))
                goto done;
        out->started = now;
        out->window = now - now % conf->plan_interval_ms;
        last = p->last_window ? p->last_window : recorded_window(p);
        if (last && out->window > last)
                out->missed = (out->window - last) / conf->plan_interval_ms - 1;
        pthread_mutex_lock(&p->m.lock);
        p->m.clock_skew_ms = dq_planner_clock_ms() - now;
        pthread_mutex_unlock(&p->m.lock);
        do {
                char **ids;
                size_t n;

                if ((err = dq_memory_scan_scopes(p->store, &cursor, &ids, &n)))
                        goto done;
                for (size_t i = 0; i < n; i++) {
                        if (!dq_job_scope_valid(ids[i])) {
                                out->bad_scope++;
                                dq_warn("plan",
                                        "scope=%s result=skipped reason="
                                        "\"not a scope a job can name\"",
                                        dq_esc(ids[i]));
                                free(ids[i]);
                                continue;
                        }
                        if (*conf->plan_scope_filter &&
                            fnmatch(conf->plan_scope_filter, ids[i], 0)) {
                                out->filtered++;
                                free(ids[i]);
                                continue;
                        }
                        batch[k++] = ids[i];
                        out->scopes++;
                        if (k < cap)
                                continue;
                        err = plan_batch(p, batch, k, out);
                        free_batch(batch, &k);
                        if (err || (stop && *stop)) {
                                for (i++; i < n; i++)
                                        free(ids[i]);
                                break;
                        }
                }
                free(ids);
                if (err || (stop && *stop))
                        goto done;
        } while (cursor);
        if (k)
                err = plan_batch(p, batch, k, out);
        out->complete = !err;
done:
        free_batch(batch, &k);
        free(batch);
        out->took_ms = dq_mono_ms() - t0;
        if (out->complete)
                p->last_window = out->window;
        if (!err) {
                if (dq_memory_time(p->store, &now))
                        now = out->started + out->took_ms;
                record_pass(p, out, now);
        }
        return err;
}
