/* The planner as a daemon: its schedule, decayctl's triggers, the pass
 * log and the metrics; see dq_planner.h. */
#define _GNU_SOURCE
#include "dq_planner_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

#define TRIGGER_POLL_MS 500  /* how often a waiting planner looks */
#define RETRY_MS        5000 /* a failed pass is tried again this soon */

void dq_plan_metrics_pass(dq_planner_t *p, const dq_pass_t *o, bool ok,
                          const char *why)
{
        dq_plan_metrics_t *m = &p->m;

        pthread_mutex_lock(&m->lock);
        m->passes++;
        m->passes_failed += !ok;
        m->scopes += o->scopes;
        m->due += o->due;
        m->proposed += o->proposed;
        m->jobs += o->jobs;
        m->republished += o->republished;
        m->failed += o->failed;
        m->skipped += o->skipped;
        m->bad_scope += o->bad_scope;
        m->redis_up = ok;
        if (ok) {
                m->last = *o;
                m->last_end_mono = dq_mono_ms();
                m->why[0] = '\0';
        } else {
                snprintf(m->why, sizeof(m->why), "%s", why);
        }
        pthread_mutex_unlock(&m->lock);
}

static void tick(dq_planner_t *p)
{
        pthread_mutex_lock(&p->m.lock);
        p->m.tick_mono = dq_mono_ms();
        pthread_mutex_unlock(&p->m.lock);
}

static char *render(void *opaque, size_t *lenp)
{
        dq_planner_t *p = opaque;
        dq_plan_metrics_t *m = &p->m;
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);

        if (!f)
                return NULL;
        pthread_mutex_lock(&m->lock);
        fprintf(f,
                "# HELP decayq_planner_passes_total Planning passes, by "
                "result.\n"
                "# TYPE decayq_planner_passes_total counter\n"
                "decayq_planner_passes_total{result=\"ok\"} %lld\n"
                "decayq_planner_passes_total{result=\"failed\"} %lld\n",
                (long long)(m->passes - m->passes_failed),
                (long long)m->passes_failed);
#define COUNTER(name, help, v)                              \
        fprintf(f,                                          \
                "# HELP decayq_planner_" name " " help "\n" \
                "# TYPE decayq_planner_" name " counter\n"  \
                "decayq_planner_" name " %lld\n",           \
                (long long)(v))
#define GAUGE(name, help, v)                                \
        fprintf(f,                                          \
                "# HELP decayq_planner_" name " " help "\n" \
                "# TYPE decayq_planner_" name " gauge\n"    \
                "decayq_planner_" name " %lld\n",           \
                (long long)(v))
        COUNTER("scopes_scanned_total", "Scopes planned, over all passes.",
                m->scopes);
        COUNTER("memories_due_total", "Memories found due and free.", m->due);
        COUNTER("memories_proposed_total", "Memories put in new jobs.",
                m->proposed);
        COUNTER("jobs_published_total", "Jobs published, new and again.",
                m->jobs);
        COUNTER("jobs_republished_total",
                "Jobs published again, never delivered before (duplicates "
                "the claim collapses).",
                m->republished);
        COUNTER("jobs_not_delivered_total",
                "Jobs Kafka did not take: proposed again next pass.",
                m->failed);
        COUNTER("entries_skipped_total",
                "Index entries dropped: memory gone, inactive or with an id "
                "no job can name.",
                m->skipped);
        COUNTER("scopes_skipped_total",
                "Registry entries that are not a scope a job can name.",
                m->bad_scope);
        GAUGE("last_pass_window_ms",
              "Start of the window the last pass "
              "planned (Redis time, ms).",
              m->last.window);
        GAUGE("last_pass_started_ms", "Redis time the last pass started.",
              m->last.started);
        GAUGE("last_pass_duration_ms", "How long the last pass took.",
              m->last.took_ms);
        GAUGE("last_pass_due", "Memories due and free in the last pass.",
              m->last.due);
        GAUGE("debt", "Memories due but not proposed after the last pass.",
              m->last.debt);
        GAUGE("next_due_ms",
              "Earliest window start a scope has memories due in (0: "
              "none).",
              m->last.next_due);
        GAUGE("clock_skew_ms",
              "This pod's clock minus Redis TIME; planning uses Redis TIME.",
              m->clock_skew_ms);
        GAUGE("redis_up", "1 when the last pass reached Redis.", m->redis_up);
#undef COUNTER
#undef GAUGE
        pthread_mutex_unlock(&m->lock);
        fclose(f);
        *lenp = len;
        return buf;
}

static bool ready(void *opaque, char *why, size_t why_size)
{
        dq_planner_t *p = opaque;
        bool ok;

        pthread_mutex_lock(&p->m.lock);
        ok = p->m.last_end_mono && !p->m.why[0];
        snprintf(why, why_size, "%s", ok ? "ready" : p->m.why);
        pthread_mutex_unlock(&p->m.lock);
        return ok;
}

static bool alive(void *opaque, int64_t stall_ms, int64_t *since_ms)
{
        dq_planner_t *p = opaque;

        pthread_mutex_lock(&p->m.lock);
        *since_ms = dq_mono_ms() - p->m.tick_mono;
        pthread_mutex_unlock(&p->m.lock);
        return *since_ms <= stall_ms;
}

static int listen_http(dq_planner_t *p)
{
        const dq_conf_t *conf = p->conf;
        dq_http_limits_t lim = {
            .max_connections = (unsigned)conf->http_max_connections,
            .max_per_ip = (unsigned)conf->http_max_connections_per_ip,
            .timeout_s = (unsigned)((conf->http_timeout_ms + 999) / 1000),
        };
        dq_http_probe_t probe = {
            .render = render, .ready = ready, .alive = alive, .opaque = p};
        char errstr[256];

        if (conf->http_port <= 0)
                return 0;
        /* A pass is bounded by its round trips and produce.timeout. */
        p->http = dq_http_start(
            conf->http_address, (int)conf->http_port, &lim, &probe,
            conf->produce_timeout_ms + 4 * conf->redis_timeout_ms + 60000,
            errstr, sizeof(errstr));
        if (!p->http) {
                dq_error("start", "result=failed reason=\"%s\"",
                         dq_esc(errstr));
                return -1;
        }
        dq_info("start", "http=%s:%lld endpoints=/metrics,/healthz,/readyz",
                conf->http_address, (long long)conf->http_port);
        return 0;
}

void dq_planner_log_pass(long pass, const dq_pass_t *o, dq_err_t err)
{
        char w[40], nd[40];

        dq_time_format_rfc3339(o->window, w, sizeof(w));
        if (o->next_due)
                dq_time_format_rfc3339(o->next_due, nd, sizeof(nd));
        else
                snprintf(nd, sizeof(nd), "none");
        dq_log(err ? DQ_LOG_ERROR : DQ_LOG_INFO, "pass",
               "pass=%ld result=%s window=%s missed_windows=%lld "
               "scopes=%lld due=%lld proposed=%lld jobs=%lld "
               "duplicates=%lld delivered=%lld not_delivered=%lld "
               "held=%lld skipped=%lld bad_scopes=%lld debt=%lld "
               "next_due=%s took_ms=%lld",
               pass,
               err           ? "failed"
               : o->complete ? "complete"
                             : "stopped",
               w, (long long)o->missed, (long long)o->scopes, (long long)o->due,
               (long long)o->proposed, (long long)o->jobs,
               (long long)o->republished, (long long)o->delivered,
               (long long)o->failed, (long long)o->held, (long long)o->skipped,
               (long long)o->bad_scope, (long long)o->debt, nd,
               (long long)o->took_ms);
}

/* Sleeps up to ms, waking for a signal or a changed trigger. Returns true
 * when a trigger asked for a pass. */
static bool wait_for(dq_planner_t *p, int64_t ms, int64_t *trigger,
                     volatile sig_atomic_t *stop)
{
        int64_t until = dq_mono_ms() + ms;

        while (!*stop && dq_mono_ms() < until) {
                int64_t left = until - dq_mono_ms(), v;
                struct timespec ts;

                if (left > TRIGGER_POLL_MS)
                        left = TRIGGER_POLL_MS;
                ts.tv_sec = left / 1000;
                ts.tv_nsec = (left % 1000) * 1000000L;
                nanosleep(&ts, NULL);
                tick(p);
                if (dq_memory_trigger_get(p->store, &v) == DQ_OK &&
                    v != *trigger) {
                        dq_info("trigger", "value=%lld previous=%lld",
                                (long long)v, (long long)*trigger);
                        *trigger = v;
                        return true;
                }
        }
        return false;
}

int dq_planner_run(dq_planner_t *p, volatile sig_atomic_t *stop)
{
        int64_t trigger = 0;
        long pass = 0;
        bool ok = true;

        if (listen_http(p))
                return 1;
        dq_memory_trigger_get(p->store, &trigger);
        while (!*stop) {
                int64_t seen = trigger, now, wait;
                dq_pass_t o;
                dq_err_t err;

                /* The trigger value is read before the pass, so one that
                 * arrives during it is seen after: one trailing pass. */
                if (dq_memory_trigger_get(p->store, &seen) == DQ_OK)
                        trigger = seen;
                p->trigger = trigger;
                err = dq_planner_pass(p, stop, &o);
                tick(p);
                dq_planner_log_pass(++pass, &o, err);
                ok = !err && o.complete;
                dq_plan_metrics_pass(p, &o, !err,
                                     err ? "redis unavailable: the last pass "
                                           "failed"
                                         : "");
                if (*stop)
                        break;
                if (err) {
                        wait_for(p, RETRY_MS, &trigger, stop);
                        continue;
                }
                /* Until the next window by Redis TIME: a pass that ran
                 * long, or a pod that slept, catches up with one pass. */
                if (dq_memory_time(p->store, &now))
                        now = o.started + o.took_ms;
                wait = o.window + p->conf->plan_interval_ms - now;
                if (wait < 0)
                        wait = 0;
                wait_for(p, wait, &trigger, stop);
        }
        dq_info("stop", "passes=%ld last=%s", pass,
                ok ? "complete" : "incomplete");
        return ok ? 0 : 1;
}
