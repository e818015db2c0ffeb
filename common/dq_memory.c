/* The memory store's planner side; see dq_memory.h. */
#include "dq_memory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_log.h"
#include "dq_store_int.h"
#include "dq_text.h"
#include "banned.h"

static const char *rec_type(dq_rec_kind_t kind)
{
        return kind == DQ_REC_EPISODE ? "ep" : "mem";
}

/* KEYS of decayq_put and decayq_index: the record, then its indexes. */
static void record_keys(dq_store_t *st, dq_args_t *a, dq_rec_kind_t kind,
                        const char *scope, const char *id)
{
        dq_args_add(a, kind == DQ_REC_EPISODE ? "2" : "3");
        dq_args_key(st, a, rec_type(kind), scope, id);
        if (kind == DQ_REC_EPISODE) {
                dq_args_key(st, a, "idx", scope, "episode");
        } else {
                dq_args_key(st, a, "idx", scope, "candidate");
                dq_args_key(st, a, "idx", scope, "principle");
        }
}

/* The commands and replies of an n-command pipeline. */
static void pipeline_alloc(size_t n, dq_args_t **a, redisReply ***r)
{
        *a = calloc(n ? n : 1, sizeof(**a));
        *r = calloc(n ? n : 1, sizeof(**r));
        if (!*a || !*r)
                abort();
}

static const char *str_at(const redisReply *r, size_t i)
{
        if (r && r->type == REDIS_REPLY_ARRAY && i < r->elements &&
            r->element[i]->type == REDIS_REPLY_STRING)
                return r->element[i]->str;
        return NULL;
}

/* A reply of decayq_put or decayq_index into res; its error class. */
static dq_err_t index_reply(dq_store_t *st, const redisReply *r,
                            dq_index_result_t *res)
{
        const char *action = str_at(r, 0), *reason = str_at(r, 1);

        if (!r)
                return DQ_ERR_UNAVAILABLE;
        if (r->type == REDIS_REPLY_ERROR) {
                dq_warn("redis", "event=command_error error=\"%s\"",
                        dq_esc(r->str));
                return dq_store_command_error(st, r->str);
        }
        if (!action || !reason)
                return DQ_ERR_INTERNAL;
        if (res) {
                snprintf(res->action, sizeof(res->action), "%s", action);
                snprintf(res->reason, sizeof(res->reason), "%s", reason);
        }
        return DQ_OK;
}

dq_err_t dq_memory_put(dq_store_t *st, dq_rec_kind_t kind, const char *scope,
                       const char *id, const char *const *kv, size_t pairs,
                       dq_index_result_t *res)
{
        dq_args_t a[2] = {{0}};
        redisReply *r[2];
        dq_err_t err;

        /* Registered first: an indexed scope is always in the registry. */
        dq_args_add(&a[0], "SADD");
        dq_args_addf(&a[0], "%s:scopes", dq_store_ns(st));
        dq_args_add(&a[0], scope);
        dq_args_add(&a[1], "FCALL");
        dq_args_add(&a[1], "decayq_put");
        record_keys(st, &a[1], kind, scope, id);
        dq_args_add(&a[1], rec_type(kind));
        dq_args_add(&a[1], id);
        dq_args_add(&a[1], scope);
        for (size_t i = 0; i < 2 * pairs; i++)
                dq_args_add(&a[1], kv[i]);
        err = dq_store_pipeline(st, a, 2, r);
        if (!err && (!r[0] || r[0]->type == REDIS_REPLY_ERROR))
                err = r[0] ? dq_store_command_error(st, r[0]->str)
                           : DQ_ERR_UNAVAILABLE;
        if (!err)
                err = index_reply(st, r[1], res);
        for (int i = 0; i < 2; i++) {
                freeReplyObject(r[i]);
                dq_args_release(&a[i]);
        }
        return err;
}

dq_err_t dq_store_record_put(dq_store_t *st, dq_rec_kind_t kind,
                             const char *scope, const char *id,
                             const char *const *kv, size_t pairs)
{
        return dq_memory_put(st, kind, scope, id, kv, pairs, NULL);
}

dq_err_t dq_memory_reindex(dq_store_t *st, dq_rec_kind_t kind,
                           const char *scope, char *const *ids, size_t n,
                           dq_index_result_t *res)
{
        dq_args_t *a;
        redisReply **r;
        dq_err_t err;

        pipeline_alloc(n, &a, &r);
        for (size_t i = 0; i < n; i++) {
                dq_args_add(&a[i], "FCALL");
                dq_args_add(&a[i], "decayq_index");
                record_keys(st, &a[i], kind, scope, ids[i]);
                dq_args_add(&a[i], rec_type(kind));
                dq_args_add(&a[i], ids[i]);
        }
        err = dq_store_pipeline(st, a, n, r);
        for (size_t i = 0; i < n; i++) {
                dq_err_t e = index_reply(st, r[i], &res[i]);
                if (!err)
                        err = e;
                freeReplyObject(r[i]);
                dq_args_release(&a[i]);
        }
        free(a);
        free(r);
        return err;
}

/* Appends s with glob's special characters escaped, for SCAN MATCH: a
 * scope or namespace holding '*' must match only itself. */
static void glob_escaped(dq_args_t *a, const char *prefix, const char *s,
                         const char *suffix)
{
        size_t n = strlen(prefix) + 2 * strlen(s) + strlen(suffix) + 1;
        char *out = malloc(n), *o = out;

        if (!out)
                abort();
        for (const char *p = prefix; *p; p++) {
                if (strchr("*?[]\\", *p))
                        *o++ = '\\';
                *o++ = *p;
        }
        for (const char *p = s; *p; p++) {
                if (strchr("*?[]\\", *p))
                        *o++ = '\\';
                *o++ = *p;
        }
        memcpy(o, suffix, strlen(suffix) + 1);
        dq_args_take(a, out, strlen(out));
}

/* A SCAN-like reply: {cursor, {items}}; every stride-th item from the
 * first, with skip bytes cut from its front. */
static dq_err_t scan_reply(dq_store_t *st, dq_args_t *a, uint64_t *cursor,
                           size_t skip, size_t stride, char ***ids, size_t *n)
{
        redisReply *r = NULL;
        dq_err_t err = dq_store_pipeline(st, a, 1, &r);
        const redisReply *items;

        dq_args_release(a);
        *ids = NULL;
        *n = 0;
        if (!err && r && r->type == REDIS_REPLY_ERROR)
                err = dq_store_command_error(st, r->str);
        else if (!err &&
                 (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
                  !str_at(r, 0) || r->element[1]->type != REDIS_REPLY_ARRAY))
                err = r ? DQ_ERR_INTERNAL : DQ_ERR_UNAVAILABLE;
        if (err) {
                freeReplyObject(r);
                return err;
        }
        *cursor = strtoull(str_at(r, 0), NULL, 10);
        items = r->element[1];
        *ids = calloc(items->elements / stride + 1, sizeof(**ids));
        if (!*ids)
                abort();
        for (size_t i = 0; i < items->elements; i += stride) {
                const redisReply *e = items->element[i];
                if (e->type != REDIS_REPLY_STRING || e->len < skip)
                        continue;
                (*ids)[*n] = strndup(e->str + skip, e->len - skip);
                if (!(*ids)[(*n)++])
                        abort();
        }
        freeReplyObject(r);
        return DQ_OK;
}

dq_err_t dq_memory_scan_records(dq_store_t *st, dq_rec_kind_t kind,
                                const char *scope, uint64_t *cursor,
                                char ***ids, size_t *n)
{
        dq_args_t a = {0};
        int prefix = dq_store_key(st, NULL, 0, rec_type(kind), scope, "");
        char *head = malloc((size_t)prefix + 1);

        if (!head)
                abort();
        dq_store_key(st, head, (size_t)prefix + 1, rec_type(kind), scope, "");
        dq_args_add(&a, "SCAN");
        dq_args_addf(&a, "%llu", (unsigned long long)*cursor);
        dq_args_add(&a, "MATCH");
        glob_escaped(&a, head, "", "*");
        dq_args_add(&a, "COUNT");
        dq_args_add(&a, "1000");
        free(head);
        return scan_reply(st, &a, cursor, (size_t)prefix, 1, ids, n);
}

dq_err_t dq_memory_scan_index(dq_store_t *st, const char *index,
                              const char *scope, uint64_t *cursor, char ***ids,
                              size_t *n)
{
        dq_args_t a = {0};

        dq_args_add(&a, "ZSCAN");
        dq_args_key(st, &a, "idx", scope, index);
        dq_args_addf(&a, "%llu", (unsigned long long)*cursor);
        dq_args_add(&a, "COUNT");
        dq_args_add(&a, "1000");
        return scan_reply(st, &a, cursor, 0, 2, ids, n);
}

dq_err_t dq_memory_scan_scopes(dq_store_t *st, uint64_t *cursor, char ***ids,
                               size_t *n)
{
        dq_args_t a = {0};

        dq_args_add(&a, "SSCAN");
        dq_args_addf(&a, "%s:scopes", dq_store_ns(st));
        dq_args_addf(&a, "%llu", (unsigned long long)*cursor);
        dq_args_add(&a, "COUNT");
        dq_args_add(&a, "1000");
        return scan_reply(st, &a, cursor, 0, 1, ids, n);
}

void dq_memory_ids_free(char **ids, size_t n)
{
        for (size_t i = 0; i < n; i++)
                free(ids[i]);
        free(ids);
}

/* One command whose reply only has to be no error. */
static dq_err_t simple(dq_store_t *st, dq_args_t *a, redisReply **out)
{
        redisReply *r = NULL;
        dq_err_t err = dq_store_pipeline(st, a, 1, &r);

        dq_args_release(a);
        if (!err && !r)
                err = DQ_ERR_UNAVAILABLE;
        if (!err && r->type == REDIS_REPLY_ERROR)
                err = dq_store_command_error(st, r->str);
        if (out && !err)
                *out = r;
        else
                freeReplyObject(r);
        return err;
}

dq_err_t dq_memory_register(dq_store_t *st, const char *scope)
{
        dq_args_t a = {0};

        dq_args_add(&a, "SADD");
        dq_args_addf(&a, "%s:scopes", dq_store_ns(st));
        dq_args_add(&a, scope);
        return simple(st, &a, NULL);
}

/*
 * The planner's calls
 */

static int64_t num_at(const redisReply *r, size_t i)
{
        const char *s = str_at(r, i);
        return s ? strtoll(s, NULL, 10) : 0;
}

static char *dup_or_die(const char *s)
{
        char *d = strdup(s ? s : "");
        if (!d)
                abort();
        return d;
}

/* {window, now, next_due, {counts...}, {job...}...} into p. */
static void parse_plan(dq_store_t *st, const redisReply *r, dq_plan_t *p)
{
        const redisReply *c;
        int64_t *const counts[] = {
            &p->open,  &p->released, &p->republished, &p->held,     &p->gone,
            &p->stale, &p->bad,      &p->due,         &p->proposed, &p->debt};

        p->err = DQ_OK;
        p->message[0] = '\0';
        if (!r) {
                p->err = DQ_ERR_UNAVAILABLE;
                return;
        }
        if (r->type == REDIS_REPLY_ERROR) {
                p->err = dq_store_command_error(st, r->str);
                snprintf(p->message, sizeof(p->message), "redis: %s", r->str);
                return;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 4 ||
            r->element[3]->type != REDIS_REPLY_ARRAY ||
            r->element[3]->elements < 11) {
                p->err = DQ_ERR_INTERNAL;
                snprintf(p->message, sizeof(p->message),
                         "decayq_plan: reply of the wrong shape");
                return;
        }
        p->window = num_at(r, 0);
        p->now = num_at(r, 1);
        p->next_due = num_at(r, 2);
        c = r->element[3];
        for (size_t i = 0; i < sizeof(counts) / sizeof(*counts); i++)
                *counts[i] = num_at(c, i);
        p->job_cnt = 0;
        p->jobs = calloc(r->elements - 4 + 1, sizeof(*p->jobs));
        if (!p->jobs)
                abort();
        for (size_t i = 4; i < r->elements; i++) {
                const redisReply *j = r->element[i];
                dq_plan_job_t *pj = &p->jobs[p->job_cnt];

                if (j->type != REDIS_REPLY_ARRAY || j->elements < 6 ||
                    !str_at(j, 0) || strlen(str_at(j, 0)) != DQ_ULID_LEN) {
                        p->err = DQ_ERR_INTERNAL;
                        snprintf(p->message, sizeof(p->message),
                                 "decayq_plan: a job of the wrong shape");
                        return;
                }
                snprintf(pj->id, sizeof(pj->id), "%s", str_at(j, 0));
                pj->idempotency_key = dup_or_die(str_at(j, 1));
                pj->method = dup_or_die(str_at(j, 3));
                pj->created_at = num_at(j, 4);
                pj->source_cnt = j->elements - 5;
                pj->sources = calloc(pj->source_cnt, sizeof(*pj->sources));
                if (!pj->sources)
                        abort();
                for (size_t k = 0; k < pj->source_cnt; k++)
                        pj->sources[k] = dup_or_die(str_at(j, 5 + k));
                p->job_cnt++;
        }
}

dq_err_t dq_memory_plan(dq_store_t *st, dq_plan_t *plans, size_t n,
                        int64_t interval_ms, int64_t scan_max)
{
        dq_args_t *a;
        redisReply **r;
        dq_err_t err;

        pipeline_alloc(n, &a, &r);
        for (size_t i = 0; i < n; i++) {
                const dq_plan_policy_t *pol = plans[i].policy;
                const char *scope = plans[i].scope;

                plans[i].jobs = NULL;
                plans[i].job_cnt = 0;
                dq_args_add(&a[i], "FCALL");
                dq_args_add(&a[i], "decayq_plan");
                dq_args_add(&a[i], "4");
                dq_args_key(st, &a[i], "idx", scope,
                            dq_store_index_name(pol->kind));
                dq_args_key(st, &a[i], "held", scope, NULL);
                dq_args_key(st, &a[i], "plan", scope, NULL);
                dq_args_key(st, &a[i], "pjobs", scope, pol->name);
                dq_args_add(&a[i], dq_store_ns(st));
                dq_args_add(&a[i], scope);
                dq_args_add(&a[i], pol->name);
                dq_args_add(&a[i], dq_kind_name(pol->kind));
                dq_args_addf(&a[i], "%lld", (long long)interval_ms);
                dq_args_addf(&a[i], "%lld", (long long)pol->min_age_ms);
                dq_args_addf(&a[i], "%lld", (long long)pol->min_sources);
                dq_args_addf(&a[i], "%lld", (long long)pol->max_sources);
                dq_args_add(&a[i], dq_method_name(pol->method));
                dq_args_addf(&a[i], "%lld", (long long)scan_max);
                dq_args_addf(&a[i], "%lld",
                             (long long)dq_store_retention_ms(st));
        }
        err = dq_store_pipeline(st, a, n, r);
        for (size_t i = 0; i < n; i++) {
                parse_plan(st, r[i], &plans[i]);
                freeReplyObject(r[i]);
                dq_args_release(&a[i]);
        }
        free(a);
        free(r);
        return err;
}

void dq_plan_release(dq_plan_t *p)
{
        for (size_t i = 0; i < p->job_cnt; i++) {
                dq_plan_job_t *j = &p->jobs[i];
                free(j->idempotency_key);
                free(j->method);
                for (size_t k = 0; k < j->source_cnt; k++)
                        free(j->sources[k]);
                free(j->sources);
        }
        free(p->jobs);
        p->jobs = NULL;
        p->job_cnt = 0;
}

dq_err_t dq_memory_plan_published(dq_store_t *st, const char *scope,
                                  char *const *job_ids, size_t n)
{
        dq_args_t a = {0};

        if (!n)
                return DQ_OK;
        dq_args_add(&a, "FCALL");
        dq_args_add(&a, "decayq_plan_published");
        dq_args_addf(&a, "%zu", n);
        for (size_t i = 0; i < n; i++)
                dq_args_key(st, &a, "pjob", scope, job_ids[i]);
        return simple(st, &a, NULL);
}

dq_err_t dq_memory_time(dq_store_t *st, int64_t *now_ms)
{
        dq_args_t a = {0};
        redisReply *r = NULL;
        dq_err_t err;

        dq_args_add(&a, "TIME");
        if ((err = simple(st, &a, &r)))
                return err;
        if (!str_at(r, 0) || !str_at(r, 1))
                err = DQ_ERR_INTERNAL;
        else
                *now_ms = num_at(r, 0) * 1000 + num_at(r, 1) / 1000;
        freeReplyObject(r);
        return err;
}

dq_err_t dq_memory_plan_status(dq_store_t *st, const char *scope,
                               dq_record_t *rec)
{
        dq_args_t a = {0};

        dq_args_add(&a, "HGETALL");
        if (scope)
                dq_args_key(st, &a, "plan", scope, NULL);
        else
                dq_args_addf(&a, "%s:plan:last", dq_store_ns(st));
        return dq_store_hgetall(st, &a, rec);
}

dq_err_t dq_memory_pass_record(dq_store_t *st, const char *const *kv,
                               size_t pairs)
{
        dq_args_t a = {0};

        dq_args_add(&a, "HSET");
        dq_args_addf(&a, "%s:plan:last", dq_store_ns(st));
        for (size_t i = 0; i < 2 * pairs; i++)
                dq_args_add(&a, kv[i]);
        return simple(st, &a, NULL);
}

static dq_err_t trigger_call(dq_store_t *st, const char *cmd, int64_t *value)
{
        dq_args_t a = {0};
        redisReply *r = NULL;
        dq_err_t err;

        dq_args_add(&a, cmd);
        dq_args_addf(&a, "%s:plan:trigger", dq_store_ns(st));
        if ((err = simple(st, &a, &r)))
                return err;
        if (r->type == REDIS_REPLY_INTEGER)
                *value = r->integer;
        else if (r->type == REDIS_REPLY_STRING)
                *value = strtoll(r->str, NULL, 10);
        else
                *value = 0;
        freeReplyObject(r);
        return DQ_OK;
}

dq_err_t dq_memory_trigger_get(dq_store_t *st, int64_t *value)
{
        return trigger_call(st, "GET", value);
}

dq_err_t dq_memory_trigger(dq_store_t *st, int64_t *value)
{
        return trigger_call(st, "INCR", value);
}
