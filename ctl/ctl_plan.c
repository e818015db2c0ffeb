/* decayctl plan status | run, and memory reindex: the planner's side. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ctl.h"
#include "dq_memory.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

enum {
        OPT_SCOPE = CTL_OPT__FIRST_OWN,
        OPT_ONCE,
        OPT_NO_WAIT,
        OPT_TIMEOUT,
};

static const char *const policies[] = {"candidates", "episodes", "principles"};

/* Parses the options of a plan or reindex command. */
static int parse(ctl_t *ctl, int argc, char **argv, const char **scope,
                 bool *no_wait, int64_t *timeout_ms)
{
        static const struct option longopts[] = {
            CTL_COMMON_LONGOPTS,
            {"scope", required_argument, NULL, OPT_SCOPE},
            {"once", no_argument, NULL, OPT_ONCE},
            {"no-wait", no_argument, NULL, OPT_NO_WAIT},
            {"timeout", required_argument, NULL, OPT_TIMEOUT},
            {NULL, 0, NULL, 0},
        };
        int opt, rc;

        while ((opt = getopt_long(argc, argv, CTL_COMMON_SHORTOPTS, longopts,
                                  NULL)) != -1) {
                if ((rc = ctl_common(ctl, opt, optarg)) != -1) {
                        if (rc != CTL_GO_ON)
                                return rc;
                        continue;
                }
                if (opt == OPT_SCOPE && scope) {
                        *scope = optarg;
                        if ((rc = ctl_check_scope(ctl, optarg)) != CTL_GO_ON)
                                return rc;
                } else if (opt == OPT_ONCE && no_wait) {
                        /* The only kind of run there is: one pass. */
                } else if (opt == OPT_NO_WAIT && no_wait) {
                        *no_wait = true;
                } else if (opt == OPT_TIMEOUT && timeout_ms) {
                        if (!dq_duration_parse(optarg, timeout_ms) ||
                            *timeout_ms < 1)
                                return ctl_usage_error(
                                    ctl,
                                    "--timeout: expected a duration such as "
                                    "30s or 5m, got '%s'",
                                    dq_esc(optarg));
                } else {
                        return ctl_usage_error(ctl,
                                               "option '%s' does not apply "
                                               "here",
                                               argv[optind - 1]);
                }
        }
        if ((rc = ctl_check_operands(ctl, argc, argv, 0)) != CTL_GO_ON)
                return rc;
        return ctl_load(ctl);
}

static const char *field(const dq_record_t *rec, const char *name)
{
        const char *v = dq_record_get(rec, name);
        return v ? v : "";
}

/* "2026-12-02T10:00:00.000Z" for a positive ms text, else "-". */
static const char *when(const char *ms, char *buf, size_t size)
{
        char *end;
        long long v = strtoll(ms, &end, 10);

        if (!*ms || *end || v <= 0)
                return "-";
        return dq_time_format_rfc3339(v, buf, size);
}

static json_t *record_json(const dq_record_t *rec)
{
        json_t *o = json_object();
        for (size_t i = 0; i < rec->cnt; i++)
                ctl_jset(o, rec->fields[i], ctl_jstr(rec->values[i]));
        return o;
}

static void print_pass(const dq_record_t *rec)
{
        char a[40], b[40], c[40];

        printf("last pass:   %s by %s, window %s, %s ms, %s\n",
               when(field(rec, "started_at"), a, sizeof(a)),
               dq_esc(field(rec, "planner")),
               when(field(rec, "window"), b, sizeof(b)),
               dq_esc(field(rec, "took_ms")),
               strcmp(field(rec, "complete"), "1") ? "incomplete" : "complete");
        printf("             scopes=%s due=%s proposed=%s jobs=%s "
               "duplicates=%s not_delivered=%s held=%s skipped=%s\n",
               dq_esc(field(rec, "scopes")), dq_esc(field(rec, "due")),
               dq_esc(field(rec, "proposed")), dq_esc(field(rec, "jobs")),
               dq_esc(field(rec, "republished")), dq_esc(field(rec, "failed")),
               dq_esc(field(rec, "held")), dq_esc(field(rec, "skipped")));
        printf("debt:        %s memories due and not proposed\n",
               dq_esc(field(rec, "debt")));
        printf("next due:    %s\n", when(field(rec, "next_due"), c, sizeof(c)));
}

/* Per policy: last_run, next_due, debt, due, proposed, held. */
static void print_scope(const char *scope, const dq_record_t *rec)
{
        static const char *const counts[] = {"debt", "due", "proposed", "held"};
        char t[40];

        printf("scope %s\n", dq_esc(scope));
        printf("  last run:  %s\n", when(field(rec, "last_run"), t, sizeof(t)));
        for (size_t i = 0; i < 3; i++) {
                char k[64], t1[40], t2[40];
                const char *lr, *nd;

                snprintf(k, sizeof(k), "%s:last_run", policies[i]);
                lr = field(rec, k);
                if (!*lr)
                        continue;
                snprintf(k, sizeof(k), "%s:next_due", policies[i]);
                nd = field(rec, k);
                printf("  %-11s last_run=%s next_due=%s", policies[i],
                       when(lr, t1, sizeof(t1)), when(nd, t2, sizeof(t2)));
                for (size_t j = 0; j < 4; j++) {
                        snprintf(k, sizeof(k), "%s:%s", policies[i], counts[j]);
                        printf(" %s=%s", counts[j], dq_esc(field(rec, k)));
                }
                putchar('\n');
        }
}

/* Walks the registry: scopes, their total debt, and the scopes with the
 * most debt (counts, biggest first). */
static int registry_debt(dq_store_t *st, int64_t *scopes, int64_t *debt,
                         ctl_counts_t *top)
{
        uint64_t cursor = 0;

        do {
                char **ids;
                size_t n;

                if (dq_memory_scan_scopes(st, &cursor, &ids, &n))
                        return -1;
                for (size_t i = 0; i < n; i++) {
                        dq_record_t rec;
                        int64_t d = 0;

                        (*scopes)++;
                        if (!dq_job_scope_valid(ids[i]) ||
                            dq_memory_plan_status(st, ids[i], &rec))
                                continue;
                        for (size_t k = 0; k < 3; k++) {
                                char f[64];
                                snprintf(f, sizeof(f), "%s:debt", policies[k]);
                                d += strtoll(field(&rec, f), NULL, 10);
                        }
                        dq_record_release(&rec);
                        *debt += d;
                        if (d > 0)
                                ctl_counts_add(top, ids[i], d);
                }
                dq_memory_ids_free(ids, n);
        } while (cursor);
        return 0;
}

int ctl_plan_status(ctl_t *ctl, int argc, char **argv)
{
        const char *scope = NULL;
        dq_record_t rec;
        dq_store_t *st;
        dq_err_t err;
        int rc = parse(ctl, argc, argv, &scope, NULL, NULL);

        if (rc != CTL_GO_ON)
                return rc;
        if (!(st = ctl_store(ctl, true)))
                return CTL_EXIT_UNAVAILABLE;
        err = dq_memory_plan_status(st, scope, &rec);
        if (err == DQ_ERR_NOT_FOUND) {
                dq_store_destroy(st);
                if (scope)
                        fprintf(stderr,
                                "error: scope '%s' has not been planned yet "
                                "(is it registered? decayctl memory reindex "
                                "--scope registers it)\n",
                                dq_esc(scope));
                else
                        fprintf(stderr, "error: no planning pass has run yet "
                                        "(decay-planner --once runs one)\n");
                return CTL_EXIT_NOT_FOUND;
        }
        if (err) {
                dq_store_destroy(st);
                fprintf(stderr, "error: redis: %s\n", dq_err_str(err));
                return CTL_EXIT_UNAVAILABLE;
        }
        if (scope) {
                if (ctl->json)
                        ctl_json_print(record_json(&rec));
                else
                        print_scope(scope, &rec);
        } else {
                int64_t scopes = 0, debt = 0;
                ctl_counts_t top = {0};

                if (registry_debt(st, &scopes, &debt, &top)) {
                        fprintf(stderr, "error: redis: cannot read the "
                                        "registry of scopes\n");
                        rc = CTL_EXIT_UNAVAILABLE;
                } else if (ctl->json) {
                        json_t *o = json_object();
                        ctl_jset(o, "last_pass", record_json(&rec));
                        ctl_jset(o, "scopes", json_integer(scopes));
                        ctl_jset(o, "debt", json_integer(debt));
                        ctl_jset(o, "debt_by_scope", ctl_counts_json(&top));
                        ctl_json_print(o);
                } else {
                        print_pass(&rec);
                        printf("registry:    %lld scopes, %lld memories of "
                               "debt in all\n",
                               (long long)scopes, (long long)debt);
                        if (top.o && json_object_size(top.o))
                                ctl_counts_print(&top, "debt by scope", 10);
                }
                ctl_counts_release(&top);
        }
        dq_record_release(&rec);
        dq_store_destroy(st);
        return rc == CTL_GO_ON ? CTL_EXIT_OK : rc;
}

int ctl_plan_run(ctl_t *ctl, int argc, char **argv)
{
        bool no_wait = false;
        int64_t timeout = 60000, value, deadline;
        dq_store_t *st;
        int rc = parse(ctl, argc, argv, NULL, &no_wait, &timeout);

        if (rc != CTL_GO_ON)
                return rc;
        if (!(st = ctl_store(ctl, false)))
                return CTL_EXIT_UNAVAILABLE;
        if (dq_memory_trigger(st, &value)) {
                dq_store_destroy(st);
                fprintf(stderr, "error: redis: cannot write the trigger\n");
                return CTL_EXIT_UNAVAILABLE;
        }
        if (no_wait) {
                dq_store_destroy(st);
                if (ctl->json)
                        ctl_json_print(
                            json_pack("{s:I}", "trigger", (json_int_t)value));
                else
                        fprintf(stderr,
                                "plan run: trigger %lld sent; running "
                                "planners start a pass within a second\n",
                                (long long)value);
                return CTL_EXIT_OK;
        }
        if (!ctl->json)
                fprintf(stderr,
                        "plan run: trigger %lld sent; waiting for a "
                        "planner's pass...\n",
                        (long long)value);
        deadline = dq_mono_ms() + timeout;
        for (;;) {
                dq_record_t rec;
                struct timespec ts = {0, 200 * 1000000L};

                if (dq_memory_plan_status(st, NULL, &rec) == DQ_OK) {
                        bool done =
                            strtoll(field(&rec, "trigger"), NULL, 10) >= value;
                        if (done) {
                                if (ctl->json)
                                        ctl_json_print(record_json(&rec));
                                else
                                        print_pass(&rec);
                                rc = strcmp(field(&rec, "complete"), "1")
                                         ? CTL_EXIT_UNAVAILABLE
                                         : CTL_EXIT_OK;
                                dq_record_release(&rec);
                                break;
                        }
                        dq_record_release(&rec);
                }
                if (dq_mono_ms() >= deadline) {
                        fprintf(stderr,
                                "error: no planner answered trigger %lld "
                                "within %lld s: is decay-planner running as "
                                "a daemon? (decay-planner --once runs a pass "
                                "without one; the trigger stays and the "
                                "next planner to start answers it)\n",
                                (long long)value,
                                (long long)(timeout + 999) / 1000);
                        rc = CTL_EXIT_UNAVAILABLE;
                        break;
                }
                nanosleep(&ts, NULL);
        }
        dq_store_destroy(st);
        return rc;
}

/* Counts of a reindex, by action and by reason of what was skipped. */
typedef struct reindex_s {
        int64_t records;
        ctl_counts_t actions;
        ctl_counts_t skipped;
        int64_t last_report;
        bool quiet;
} reindex_t;

static void tally(reindex_t *r, char **ids, size_t n,
                  const dq_index_result_t *res, const char *what)
{
        for (size_t i = 0; i < n; i++) {
                r->records++;
                ctl_counts_add(&r->actions, res[i].action, 1);
                if (!strcmp(res[i].action, "skipped")) {
                        ctl_counts_add(&r->skipped, res[i].reason, 1);
                        fprintf(stderr,
                                "warning: %s '%s' cannot be indexed: %s\n",
                                what, dq_esc(ids[i]), res[i].reason);
                }
        }
        if (!r->quiet && dq_mono_ms() - r->last_report >= 1000) {
                r->last_report = dq_mono_ms();
                fprintf(stderr, "memory reindex: %lld records checked\n",
                        (long long)r->records);
        }
}

/* Re-derives the index entry of every record of kind in scope, then drops
 * the entries of index whose record is gone. */
static dq_err_t reindex_kind(dq_store_t *st, dq_rec_kind_t kind,
                             const char *scope, reindex_t *r)
{
        const char *what = kind == DQ_REC_EPISODE ? "episode" : "memory";
        const char *const mem_idx[] = {"candidate", "principle"};
        const char *const ep_idx[] = {"episode"};
        const char *const *idx = kind == DQ_REC_EPISODE ? ep_idx : mem_idx;
        size_t idx_cnt = kind == DQ_REC_EPISODE ? 1 : 2;
        uint64_t cursor = 0;
        dq_err_t err;

        for (int phase = -1; phase < (int)idx_cnt; phase++) {
                cursor = 0;
                do {
                        char **ids;
                        size_t n;
                        dq_index_result_t *res;

                        err = phase < 0
                                  ? dq_memory_scan_records(st, kind, scope,
                                                           &cursor, &ids, &n)
                                  : dq_memory_scan_index(st, idx[phase], scope,
                                                         &cursor, &ids, &n);
                        if (err)
                                return err;
                        res = calloc(n + 1, sizeof(*res));
                        if (!res)
                                abort();
                        err = dq_memory_reindex(st, kind, scope, ids, n, res);
                        if (!err) {
                                /* An index pass counts only what it fixed:
                                 * the records were counted in the walk. */
                                size_t m = 0;
                                for (size_t i = 0; i < n; i++)
                                        if (phase < 0 ||
                                            !strcmp(res[i].reason, "gone")) {
                                                res[m] = res[i];
                                                char *t = ids[m];
                                                ids[m++] = ids[i];
                                                ids[i] = t;
                                        }
                                tally(r, ids, m, res, what);
                        }
                        free(res);
                        dq_memory_ids_free(ids, n);
                        if (err)
                                return err;
                } while (cursor);
        }
        return DQ_OK;
}

int ctl_memory_reindex(ctl_t *ctl, int argc, char **argv)
{
        const char *scope = NULL;
        reindex_t r = {.last_report = dq_mono_ms()};
        dq_store_t *st;
        dq_err_t err;
        int rc = parse(ctl, argc, argv, &scope, NULL, NULL);

        if (rc != CTL_GO_ON)
                return rc;
        if (!scope)
                return ctl_usage_error(ctl, "--scope is required");
        r.quiet = ctl->json;
        if (!(st = ctl_store(ctl, false)))
                return CTL_EXIT_UNAVAILABLE;
        err = dq_memory_register(st, scope);
        if (!err)
                err = reindex_kind(st, DQ_REC_MEMORY, scope, &r);
        if (!err)
                err = reindex_kind(st, DQ_REC_EPISODE, scope, &r);
        dq_store_destroy(st);
        if (err) {
                fprintf(stderr,
                        "error: redis: %s after %lld records; the ones "
                        "before are fixed, and running it again is safe\n",
                        dq_err_str(err), (long long)r.records);
                rc = CTL_EXIT_UNAVAILABLE;
        } else if (ctl->json) {
                json_t *o = json_object();
                ctl_jset(o, "scope", ctl_jstr(scope));
                ctl_jset(o, "records", json_integer(r.records));
                ctl_jset(o, "actions", ctl_counts_json(&r.actions));
                ctl_jset(o, "skipped", ctl_counts_json(&r.skipped));
                ctl_json_print(o);
                rc = CTL_EXIT_OK;
        } else {
                printf("memory reindex: scope %s: %lld records checked\n",
                       dq_esc(scope), (long long)r.records);
                ctl_counts_print(&r.actions, "index entries", 10);
                if (r.skipped.o && json_object_size(r.skipped.o))
                        ctl_counts_print(&r.skipped, "skipped (fix the record)",
                                         10);
                rc = CTL_EXIT_OK;
        }
        ctl_counts_release(&r.actions);
        ctl_counts_release(&r.skipped);
        return rc;
}
