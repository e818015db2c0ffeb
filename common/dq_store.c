/* Redis store over hiredis: connection management, the functions library,
 * and pipelined claims and settles. */
#include "dq_store.h"
#include "dq_store_int.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

/* Generated from dq_functions.lua at build time. */
extern const char dq_functions_lua[];
extern const unsigned long dq_functions_lua_len;

#define DQ_FUNCTIONS_VERSION "11"

struct dq_store_s {
        redisContext *c;
        char *host;
        int port;
        char *username;
        char *password;
        int db;
        char *ns;
        char *worker;
        int64_t timeout_ms;
        int64_t lease_ms;
        int64_t retention_ms;
        int64_t max_attempts;
        int64_t next_connect_ms; /* reconnect backoff */
        int64_t backoff_ms;
        bool readonly; /* loads nothing, writes nothing (DQ_STORE_READONLY) */
        uint64_t conn; /* counts connections made: a ticket's is current */
        size_t owed;   /* replies of batches sent and not yet received */
};

const char *dq_store_ns(const dq_store_t *st)
{
        return st->ns;
}

int64_t dq_store_retention_ms(const dq_store_t *st)
{
        return st->retention_ms;
}

const char *dq_store_functions_version(void)
{
        return DQ_FUNCTIONS_VERSION;
}

void dq_print_version(FILE *fp, const char *program)
{
        fprintf(fp, "%s %s (functions library %s)\n", program, DQ_VERSION,
                DQ_FUNCTIONS_VERSION);
}

int dq_store_key(const dq_store_t *store, char *buf, size_t size,
                 const char *type, const char *scope, const char *id)
{
        if (id)
                return snprintf(buf, size, "%s:%s:{%s}:%s", store->ns, type,
                                scope, id);
        return snprintf(buf, size, "%s:%s:{%s}", store->ns, type, scope);
}

static void drop(dq_store_t *st)
{
        if (st->c) {
                redisFree(st->c);
                st->c = NULL;
        }
        st->owed = 0; /* lost with the connection */
}

/* Says why the connection failed, pointing at the setting to look at: a
 * read that timed out is hiredis's EAGAIN. */
static void conn_error(const dq_store_t *st, char *errstr, size_t errstr_size)
{
        if (st->c && st->c->err == REDIS_ERR_IO &&
            !strcmp(st->c->errstr, strerror(EAGAIN)))
                snprintf(errstr, errstr_size,
                         "redis %s:%d: no reply within redis.timeout (%llds)",
                         st->host, st->port,
                         (long long)(st->timeout_ms + 999) / 1000);
        else
                snprintf(errstr, errstr_size, "redis %s:%d: %s", st->host,
                         st->port, st->c ? st->c->errstr : "out of memory");
}

/* A command error, said for a person: NOAUTH names the setting. */
static void reply_error(const dq_store_t *st, const char *what,
                        const redisReply *r, char *errstr, size_t errstr_size)
{
        if (!strncmp(r->str, "NOAUTH", 6))
                snprintf(errstr, errstr_size,
                         "redis %s:%d requires a password: set "
                         "redis.password (DECAYQ_REDIS_PASSWORD)",
                         st->host, st->port);
        else
                snprintf(errstr, errstr_size, "redis %s:%d: %s: %s", st->host,
                         st->port, what, r->str);
}

/* Runs one command and returns its reply, or NULL with errstr set. A
 * command error (REDIS_REPLY_ERROR) is returned as a reply. */
static redisReply *cmd(dq_store_t *st, char *errstr, size_t errstr_size,
                       int argc, const char **argv, const size_t *lens)
{
        redisReply *r = redisCommandArgv(st->c, argc, argv, lens);
        if (!r) {
                conn_error(st, errstr, errstr_size);
                drop(st);
        }
        return r;
}

/* Reads CONFIG GET key into value; returns false when CONFIG is refused. */
static bool config_get(dq_store_t *st, const char *key, char *value,
                       size_t size, char *errstr, size_t errstr_size)
{
        const char *argv[] = {"CONFIG", "GET", key};
        redisReply *r = cmd(st, errstr, errstr_size, 3, argv, NULL);
        bool ok = false;

        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[1]->type == REDIS_REPLY_STRING) {
                snprintf(value, size, "%s", r->element[1]->str);
                ok = true;
        } else if (r && r->type == REDIS_REPLY_ERROR) {
                char what[64];
                snprintf(what, sizeof(what), "CONFIG GET %s", key);
                reply_error(st, what, r, errstr, errstr_size);
        } else if (r) {
                snprintf(errstr, errstr_size,
                         "redis %s:%d: CONFIG GET %s: unexpected reply",
                         st->host, st->port, key);
        }
        freeReplyObject(r);
        return ok;
}

/* The start-up checks of DESIGN.md: no eviction, AOF on. */
static dq_err_t check_server(dq_store_t *st, bool allow_unsafe, char *errstr,
                             size_t errstr_size)
{
        char policy[64], aof[16];

        if (!config_get(st, "maxmemory-policy", policy, sizeof(policy), errstr,
                        errstr_size) ||
            !config_get(st, "appendonly", aof, sizeof(aof), errstr,
                        errstr_size)) {
                if (!st->c)
                        return DQ_ERR_UNAVAILABLE;
                if (allow_unsafe) {
                        dq_warn("redis", "check=skipped reason=\"%s\"", errstr);
                        return DQ_OK;
                }
                return DQ_ERR_UNSAFE_CONFIG;
        }
        if (strcmp(policy, "noeviction")) {
                snprintf(errstr, errstr_size,
                         "redis maxmemory-policy is '%s': it can evict job "
                         "state and idempotency keys; set noeviction (or "
                         "redis.allow.unsafe=true)",
                         policy);
                if (!allow_unsafe)
                        return DQ_ERR_UNSAFE_CONFIG;
                dq_warn("redis", "check=unsafe reason=\"%s\"", errstr);
        }
        if (strcmp(aof, "yes")) {
                snprintf(errstr, errstr_size,
                         "redis appendonly is '%s': settled jobs would not "
                         "survive a restart; set appendonly yes (or "
                         "redis.allow.unsafe=true)",
                         aof);
                if (!allow_unsafe)
                        return DQ_ERR_UNSAFE_CONFIG;
                dq_warn("redis", "check=unsafe reason=\"%s\"", errstr);
        }
        return DQ_OK;
}

/* M1: loads this program's functions library only where the server has
 * none or an older one, never a downgrade: a server whose library is newer
 * is refused (DQ_ERR_UNSAFE_CONFIG), since this program's calls may not
 * match it. Racing loaders settle on the newest. */
static dq_err_t load_functions(dq_store_t *st, char *errstr, size_t errstr_size)
{
        const long long ours = atoll(DQ_FUNCTIONS_VERSION);

        for (int tries = 0; tries < 3; tries++) {
                const char *ask[] = {"FCALL_RO", "decayq_version", "0"};
                const char *load[] = {"FUNCTION", "LOAD", "REPLACE",
                                      dq_functions_lua};
                size_t lens[] = {8, 4, 7, dq_functions_lua_len};
                redisReply *r = cmd(st, errstr, errstr_size, 3, ask, NULL);
                long long theirs = 0;
                bool replace;

                if (!r)
                        return DQ_ERR_UNAVAILABLE;
                if (r->type == REDIS_REPLY_STRING) {
                        theirs = atoll(r->str);
                } else if (r->type != REDIS_REPLY_ERROR ||
                           !strstr(r->str, "Function not found")) {
                        reply_error(st, "FCALL_RO decayq_version", r, errstr,
                                    errstr_size);
                        freeReplyObject(r);
                        return DQ_ERR_UNAVAILABLE;
                }
                freeReplyObject(r);
                if (theirs == ours)
                        return DQ_OK;
                if (theirs > ours) {
                        snprintf(errstr, errstr_size,
                                 "redis %s:%d holds decayq functions library "
                                 "%lld, newer than this program's %lld: "
                                 "upgrade this program (loading its library "
                                 "would downgrade every consumer)",
                                 st->host, st->port, theirs, ours);
                        return DQ_ERR_UNSAFE_CONFIG;
                }
                /* None (plain LOAD fails if another loader won the race)
                 * or older (REPLACE). */
                replace = theirs > 0;
                if (!replace)
                        load[2] = dq_functions_lua, lens[2] = lens[3];
                r = cmd(st, errstr, errstr_size, replace ? 4 : 3, load, lens);
                if (!r)
                        return DQ_ERR_UNAVAILABLE;
                if (r->type != REDIS_REPLY_ERROR) {
                        freeReplyObject(r);
                        dq_info("redis",
                                "functions=loaded version=%lld "
                                "replaced=%lld",
                                ours, theirs);
                        return DQ_OK;
                }
                if (!strstr(r->str, "already exists")) {
                        reply_error(st, "FUNCTION LOAD", r, errstr,
                                    errstr_size);
                        freeReplyObject(r);
                        /* LOADING and the like pass; try again later. */
                        return DQ_ERR_UNAVAILABLE;
                }
                freeReplyObject(r); /* raced: look again */
        }
        snprintf(errstr, errstr_size,
                 "redis %s:%d: the functions library keeps changing under "
                 "this program",
                 st->host, st->port);
        return DQ_ERR_UNAVAILABLE;
}

/* Connects, authenticates, selects the db and loads the functions. */
static dq_err_t connect_now(dq_store_t *st, char *errstr, size_t errstr_size)
{
        struct timeval tv = {(time_t)(st->timeout_ms / 1000),
                             (suseconds_t)(st->timeout_ms % 1000) * 1000};
        redisReply *r;

        drop(st);
        st->c = redisConnectWithTimeout(st->host, st->port, tv);
        st->conn++;
        if (!st->c || st->c->err) {
                conn_error(st, errstr, errstr_size);
                drop(st);
                return DQ_ERR_UNAVAILABLE;
        }
        redisSetTimeout(st->c, tv);

        if (*st->password) {
                const char *argv[3] = {"AUTH"};
                int argc = 1;
                if (*st->username)
                        argv[argc++] = st->username;
                argv[argc++] = st->password;
                if (!(r = cmd(st, errstr, errstr_size, argc, argv, NULL)))
                        return DQ_ERR_UNAVAILABLE;
                if (r->type == REDIS_REPLY_ERROR) {
                        /* The server's message never echoes the password. */
                        reply_error(st, "AUTH", r, errstr, errstr_size);
                        freeReplyObject(r);
                        drop(st);
                        return DQ_ERR_INVALID;
                }
                freeReplyObject(r);
        }
        if (st->db) {
                char db[16];
                const char *argv[] = {"SELECT", db};
                snprintf(db, sizeof(db), "%d", st->db);
                if (!(r = cmd(st, errstr, errstr_size, 2, argv, NULL)))
                        return DQ_ERR_UNAVAILABLE;
                freeReplyObject(r);
        }
        if (!st->readonly) {
                dq_err_t err = load_functions(st, errstr, errstr_size);
                if (err) {
                        drop(st);
                        return err;
                }
        }
        st->backoff_ms = 0;
        return DQ_OK;
}

/* Makes sure there is a connection, reconnecting with capped exponential
 * backoff: while backing off it fails at once rather than block. */
static dq_err_t ensure(dq_store_t *st)
{
        char errstr[512];
        int64_t now;
        dq_err_t err;

        if (st->c && !st->c->err)
                return DQ_OK;
        now = dq_mono_ms();
        if (now < st->next_connect_ms)
                return DQ_ERR_UNAVAILABLE;
        err = connect_now(st, errstr, sizeof(errstr));
        if (err) {
                st->backoff_ms = st->backoff_ms ? st->backoff_ms * 2 : 100;
                if (st->backoff_ms > 5000)
                        st->backoff_ms = 5000;
                st->next_connect_ms = now + st->backoff_ms;
                dq_warn("redis",
                        "event=reconnect_failed retry_in_ms=%lld "
                        "error=\"%s\"",
                        (long long)st->backoff_ms, errstr);
                return err;
        }
        dq_info("redis", "event=reconnected host=%s port=%d", st->host,
                st->port);
        return DQ_OK;
}

dq_store_t *dq_store_new(const dq_conf_t *conf, const char *worker,
                         char *errstr, size_t errstr_size)
{
        return dq_store_open(conf, worker, 0, errstr, errstr_size);
}

dq_store_t *dq_store_open(const dq_conf_t *conf, const char *worker,
                          unsigned flags, char *errstr, size_t errstr_size)
{
        dq_store_t *st = calloc(1, sizeof(*st));
        dq_err_t err;

        if (!st) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        st->host = strdup(conf->redis_host);
        st->username = strdup(conf->redis_username);
        st->password = strdup(conf->redis_password);
        st->ns = strdup(conf->redis_namespace);
        st->worker = strdup(worker ? worker : "unknown");
        if (!st->host || !st->username || !st->password || !st->ns ||
            !st->worker) {
                snprintf(errstr, errstr_size, "out of memory");
                goto err;
        }
        st->port = (int)conf->redis_port;
        st->db = (int)conf->redis_db;
        st->timeout_ms = conf->redis_timeout_ms;
        st->lease_ms = conf->lease_ms;
        st->retention_ms = conf->idempotency_retention_ms;
        st->max_attempts = conf->max_attempts;
        st->readonly = flags & DQ_STORE_READONLY;

        if ((err = connect_now(st, errstr, errstr_size)))
                goto err;
        /* The durability checks guard writes; a reader needs none. */
        if (!st->readonly && (err = check_server(st, conf->redis_allow_unsafe,
                                                 errstr, errstr_size))) {
                dq_error("redis", "check=refused reason=\"%s\"", errstr);
                goto err;
        }
        return st;

err:
        dq_store_destroy(st);
        return NULL;
}

void dq_store_destroy(dq_store_t *st)
{
        if (!st)
                return;
        drop(st);
        free(st->host);
        free(st->username);
        if (st->password) {
                /* Leave no copy of the secret in freed memory. */
                memset(st->password, 0, strlen(st->password));
                free(st->password);
        }
        free(st->ns);
        free(st->worker);
        free(st);
}

static void grow(dq_args_t *a)
{
        int cap = a->cap ? a->cap * 2 : 16;
        const char **argv = realloc(a->argv, (size_t)cap * sizeof(*argv));
        size_t *lens = realloc(a->lens, (size_t)cap * sizeof(*lens));
        char *owned = realloc(a->owned, (size_t)cap);
        if (!argv || !lens || !owned)
                abort(); /* a few KiB at most: nothing sane to do */
        a->argv = argv;
        a->lens = lens;
        a->owned = owned;
        a->cap = cap;
}

void dq_args_add(dq_args_t *a, const char *s)
{
        if (a->argc == a->cap)
                grow(a);
        a->owned[a->argc] = 0;
        a->argv[a->argc] = s;
        a->lens[a->argc++] = strlen(s);
}

/* Appends s of len bytes, which dq_args_release() will free. */
void dq_args_take(dq_args_t *a, char *s, size_t len)
{
        dq_args_add(a, s);
        a->owned[a->argc - 1] = 1;
        a->lens[a->argc - 1] = len;
}

void dq_args_addf(dq_args_t *a, const char *fmt, ...)
{
        va_list ap;
        char *s;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        s = malloc((size_t)n + 1);
        if (!s)
                abort();
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
        dq_args_take(a, s, (size_t)n);
}

/* Appends the key "<ns>:<type>:{<scope>}[:<id>]" (see dq_store_key()). */
void dq_args_key(const dq_store_t *st, dq_args_t *a, const char *type,
                 const char *scope, const char *id)
{
        int n = dq_store_key(st, NULL, 0, type, scope, id);
        char *s = malloc((size_t)n + 1);
        if (!s)
                abort();
        dq_store_key(st, s, (size_t)n + 1, type, scope, id);
        dq_args_take(a, s, (size_t)n);
}

void dq_args_release(dq_args_t *a)
{
        for (int i = 0; i < a->argc; i++)
                if (a->owned[i])
                        free((char *)a->argv[i]);
        free(a->argv);
        free(a->lens);
        free(a->owned);
        memset(a, 0, sizeof(*a));
}

static void job_key_arg(dq_store_t *st, dq_args_t *a, const dq_job_t *job)
{
        dq_args_key(st, a, "job", job->scope, job->id);
}

/* Appends every command to the connection's output, and with flush
 * writes it all to the socket too. DQ_ERR_UNAVAILABLE, the connection
 * dropped, when it could not. */
static dq_err_t send_cmds(dq_store_t *st, dq_args_t *cmds, size_t n, bool flush)
{
        int done = !flush;
        size_t i;

        for (i = 0; i < n; i++)
                if (redisAppendCommandArgv(st->c, cmds[i].argc, cmds[i].argv,
                                           cmds[i].lens) != REDIS_OK)
                        break;
        while (i == n && !done)
                if (redisBufferWrite(st->c, &done) != REDIS_OK)
                        break;
        if (i < n || !done) {
                dq_warn("redis", "event=send_failed error=\"%s\"",
                        st->c->errstr);
                drop(st);
                return DQ_ERR_UNAVAILABLE;
        }
        return DQ_OK;
}

/* Reads n replies, in order, into replies (NULL from the first one that
 * could not be read: the connection is dropped). */
static dq_err_t read_replies(dq_store_t *st, redisReply **replies, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                void *r = NULL;
                if (redisGetReply(st->c, &r) != REDIS_OK) {
                        dq_warn("redis",
                                "event=connection_lost replies_read=%zu "
                                "of=%zu error=\"%s\"",
                                i, n, st->c->errstr);
                        drop(st);
                        return DQ_ERR_UNAVAILABLE;
                }
                replies[i] = r;
        }
        return DQ_OK;
}

/* Sends every command of the batch, then reads every reply. replies[i] is
 * NULL where the outcome is unknown. Returns DQ_ERR_UNAVAILABLE when the
 * connection failed. */
dq_err_t dq_store_pipeline(dq_store_t *st, dq_args_t *cmds, size_t n,
                           redisReply **replies)
{
        memset(replies, 0, n * sizeof(*replies));
        if (st->owed) {
                /* Their replies would be read as this call's. */
                dq_error("redis",
                         "event=replies_owed count=%zu action=reconnect",
                         st->owed);
                drop(st);
        }
        if (ensure(st) || send_cmds(st, cmds, n, false))
                return DQ_ERR_UNAVAILABLE;
        return read_replies(st, replies, n);
}

/* The class of a command error. An outage (the server cannot serve now:
 * loading, busy, out of memory, read-only, failing over, refusing our
 * credentials) leaves the outcome unknown: DQ_ERR_UNAVAILABLE, try again.
 * A library the server lost (restarted without AOF, flushed) is loaded
 * again at the next call. Any other error is the command's own (a key of
 * the wrong type, a script error): DQ_ERR_REJECTED, fatal for that item
 * only, for the caller to dead-letter with the server's message. */
dq_err_t dq_store_command_error(dq_store_t *st, const char *msg)
{
        static const char *const outage[] = {
            "LOADING",  "BUSY",        "OOM",        "READONLY",  "MASTERDOWN",
            "TRYAGAIN", "CLUSTERDOWN", "NOAUTH",     "NOPERM",    "MISCONF",
            "MOVED",    "ASK",         "NOREPLICAS", "UNBLOCKED",
        };
        size_t word = strcspn(msg, " ");

        if (strstr(msg, "Function not found")) {
                drop(st);
                return DQ_ERR_UNAVAILABLE;
        }
        for (size_t i = 0; i < sizeof(outage) / sizeof(outage[0]); i++)
                if (word == strlen(outage[i]) && !strncmp(msg, outage[i], word))
                        return DQ_ERR_UNAVAILABLE;
        return DQ_ERR_REJECTED;
}

/* Status string of a functions reply, or NULL (then err says why; for
 * DQ_ERR_REJECTED the server's message is r->str). */
static const char *reply_status(const redisReply *r, dq_store_t *st,
                                dq_err_t *err)
{
        if (!r) {
                *err = DQ_ERR_UNAVAILABLE;
                return NULL;
        }
        if (r->type == REDIS_REPLY_ERROR) {
                *err = dq_store_command_error(st, r->str);
                dq_log(*err == DQ_ERR_REJECTED ? DQ_LOG_ERROR : DQ_LOG_WARN,
                       "redis", "event=command_error class=%s error=\"%s\"",
                       *err == DQ_ERR_REJECTED ? "fatal" : "outage",
                       dq_esc(r->str));
                return NULL;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
            r->element[0]->type != REDIS_REPLY_STRING) {
                *err = DQ_ERR_INTERNAL;
                return NULL;
        }
        *err = DQ_OK;
        return r->element[0]->str;
}

/* The server message of a command error (see command_error()). */
static void command_message(const redisReply *r, char *buf, size_t size)
{
        snprintf(buf, size, "redis: %s",
                 r && r->type == REDIS_REPLY_ERROR ? r->str : "error");
}

static const char *elem(const redisReply *r, size_t i)
{
        if (i < r->elements && r->element[i]->type == REDIS_REPLY_STRING)
                return r->element[i]->str;
        return "";
}

/* A batch is n items, each one command: build() writes its argv, parse()
 * reads its reply (NULL when the outcome is unknown) into the item. */
typedef void(batch_build_fn)(dq_store_t *st, dq_args_t *a, void *item,
                             int64_t now_ms);
typedef void(batch_parse_fn)(dq_store_t *st, const redisReply *r, void *item);

/* Sends the whole batch in one pipelined round trip. */
static dq_err_t batch(dq_store_t *st, void *items, size_t item_size, size_t n,
                      int64_t now_ms, batch_build_fn *build,
                      batch_parse_fn *parse)
{
        dq_args_t *cmds = calloc(n ? n : 1, sizeof(*cmds));
        redisReply **replies = calloc(n ? n : 1, sizeof(*replies));
        dq_err_t ret;

        if (!cmds || !replies) {
                free(cmds);
                free(replies);
                return DQ_ERR_INTERNAL;
        }
        for (size_t i = 0; i < n; i++)
                build(st, &cmds[i], (char *)items + i * item_size, now_ms);
        ret = dq_store_pipeline(st, cmds, n, replies);
        for (size_t i = 0; i < n; i++) {
                parse(st, replies[i], (char *)items + i * item_size);
                freeReplyObject(replies[i]);
                dq_args_release(&cmds[i]);
        }
        free(cmds);
        free(replies);
        return ret;
}

/* The arguments of decayq_claim, which decayq_run takes too. */
static void claim_args(dq_store_t *st, dq_args_t *a, const dq_claim_t *c,
                       int64_t now_ms)
{
        const dq_job_t *job = c->job;

        dq_args_addf(a, "%lld", (long long)now_ms);
        dq_args_addf(a, "%lld", (long long)st->lease_ms);
        dq_args_add(a, st->worker);
        dq_args_add(a, dq_kind_name(job->kind));
        dq_args_addf(a, "%lld", (long long)st->max_attempts);
        dq_args_add(a, job->id);
        dq_args_addf(a, "%lld", (long long)st->retention_ms);
        dq_args_add(a, c->msg ? c->msg : "");
        dq_args_addf(a, "%lld",
                     c->is_copy ? (long long)c->copy_attempts : -1LL);
}

void dq_sources_free(dq_sources_t *s)
{
        if (!s)
                return;
        for (size_t i = 0; i < s->cnt; i++) {
                free((char *)s->v[i].id);
                free((char *)s->v[i].text);
        }
        free(s->v);
        free(s);
}

static void source_keys(dq_store_t *st, dq_args_t *a, const dq_job_t *job);

/* decayq_claim_llm: the claim, the nonce and the sources in one step. */
static void build_claim_llm(dq_store_t *st, dq_args_t *a, const dq_claim_t *c,
                            int64_t now_ms)
{
        const dq_job_t *job = c->job;
        bool idem = job->idempotency_key != NULL;

        dq_args_add(a, "FCALL");
        dq_args_add(a, "decayq_claim_llm");
        dq_args_addf(a, "%zu", 2 + (idem ? 1 : 0) + job->source_cnt);
        job_key_arg(st, a, job);
        dq_args_key(st, a, "attest", job->scope, c->nonce);
        if (idem)
                dq_args_key(st, a, "idem", job->scope, job->idempotency_key);
        source_keys(st, a, job);
        dq_args_add(a, idem ? "1" : "0");
        claim_args(st, a, c, now_ms);
        dq_args_addf(a, "%lld", (long long)c->nonce_until_ms);
        for (size_t i = 0; i < job->source_cnt; i++)
                dq_args_add(a, job->source_ids[i]);
}

/* The sources of a claimed llm job: digest, n, then n times id, text,
 * created_at, from element 5 on. */
static bool parse_sources(const redisReply *r, dq_claim_t *c)
{
        size_t n;
        dq_sources_t *src;

        snprintf(c->digest, sizeof(c->digest), "%s", elem(r, 5));
        n = (size_t)strtoull(elem(r, 6), NULL, 10);
        if (r->elements != 7 + 3 * n || !(src = calloc(1, sizeof(*src))))
                return false;
        if (n && !(src->v = calloc(n, sizeof(*src->v)))) {
                free(src);
                return false;
        }
        for (size_t i = 0; i < n; i++) {
                const redisReply *id = r->element[7 + 3 * i],
                                 *text = r->element[8 + 3 * i];
                if (id->type != REDIS_REPLY_STRING ||
                    text->type != REDIS_REPLY_STRING)
                        break;
                src->v[i].id = strndup(id->str, id->len);
                src->v[i].text = strndup(text->str, text->len);
                src->v[i].created_at_ms = strtoll(elem(r, 9 + 3 * i), NULL, 10);
                src->cnt = i + 1;
                if (!src->v[i].id || !src->v[i].text)
                        break;
        }
        if (src->cnt != n || (n && !src->v[n - 1].text)) {
                dq_sources_free(src);
                return false;
        }
        c->sources = src;
        return true;
}

static void build_claim(dq_store_t *st, dq_args_t *a, void *item,
                        int64_t now_ms)
{
        const dq_claim_t *c = item;
        const dq_job_t *job = c->job;

        if (c->nonce) {
                build_claim_llm(st, a, c, now_ms);
                return;
        }
        dq_args_add(a, "FCALL");
        dq_args_add(a, "decayq_claim");
        dq_args_add(a, job->idempotency_key ? "2" : "1");
        job_key_arg(st, a, job);
        if (job->idempotency_key)
                dq_args_key(st, a, "idem", job->scope, job->idempotency_key);
        claim_args(st, a, c, now_ms);
}

static void parse_claim(dq_store_t *st, const redisReply *r, void *item)
{
        dq_claim_t *c = item;
        const char *status = reply_status(r, st, &c->err);

        c->message[0] = c->code[0] = '\0';
        c->sources = NULL;
        if (c->err == DQ_ERR_REJECTED)
                command_message(r, c->message, sizeof(c->message));
        if (!status)
                return;
        if (!strcmp(status, "rejected") && c->nonce) {
                /* Claimed, with the attempt counted, and to dead-letter. */
                c->status = DQ_CLAIM_CLAIMED;
                snprintf(c->state, sizeof(c->state), "%s", elem(r, 1));
                c->attempts = strtoll(elem(r, 2), NULL, 10);
                c->epoch = strtoll(elem(r, 3), NULL, 10);
                snprintf(c->code, sizeof(c->code), "%s", elem(r, 4));
                snprintf(c->message, sizeof(c->message), "%s", elem(r, 5));
                c->ref[0] = '\0';
                c->until = 0;
                c->took_over = false;
                return;
        }
        if (!strcmp(status, "claimed"))
                c->status = DQ_CLAIM_CLAIMED;
        else if (!strcmp(status, "duplicate"))
                c->status = DQ_CLAIM_DUPLICATE;
        else if (!strcmp(status, "terminal"))
                c->status = DQ_CLAIM_TERMINAL;
        else if (!strcmp(status, "busy"))
                c->status = DQ_CLAIM_BUSY;
        else if (!strcmp(status, "not_due"))
                c->status = DQ_CLAIM_NOT_DUE;
        else if (!strcmp(status, "stale"))
                c->status = DQ_CLAIM_STALE;
        else
                c->status = DQ_CLAIM_EXHAUSTED;
        snprintf(c->state, sizeof(c->state), "%s",
                 c->status == DQ_CLAIM_DUPLICATE ? "duplicate" : elem(r, 1));
        c->attempts = strtoll(elem(r, 2), NULL, 10);
        c->epoch = strtoll(elem(r, 3), NULL, 10);
        snprintf(c->ref, sizeof(c->ref), "%s", elem(r, 4));
        c->until = c->status == DQ_CLAIM_BUSY || c->status == DQ_CLAIM_NOT_DUE
                       ? strtoll(elem(r, 4), NULL, 10)
                       : 0;
        c->took_over = c->status == DQ_CLAIM_CLAIMED && *elem(r, 4);
        if (c->status == DQ_CLAIM_CLAIMED && c->nonce && !parse_sources(r, c))
                c->err = DQ_ERR_INTERNAL;
}

dq_err_t dq_store_claim(dq_store_t *st, dq_claim_t *claims, size_t n,
                        int64_t now_ms)
{
        return batch(st, claims, sizeof(*claims), n, now_ms, build_claim,
                     parse_claim);
}

/* The keys of a complete after the job's: target, index and held; then
 * the sources (source_keys); and its arguments from the method on
 * (complete_args). decayq_complete and decayq_run share them. */
static void complete_keys(dq_store_t *st, dq_args_t *a, const dq_job_t *job,
                          const char *sum_id)
{
        if (job->kind == DQ_KIND_EXPIRED_PRINCIPLE_REVIEW)
                dq_args_key(st, a, "reviews", job->scope, NULL);
        else
                dq_args_key(st, a, "mem", job->scope, sum_id);
        dq_args_key(st, a, "idx", job->scope, dq_store_index_name(job->kind));
        dq_args_key(st, a, "held", job->scope, NULL);
}

static void source_keys(dq_store_t *st, dq_args_t *a, const dq_job_t *job)
{
        const char *rec =
            job->kind == DQ_KIND_EPISODE_COMPRESSION ? "ep" : "mem";
        for (size_t i = 0; i < job->source_cnt; i++)
                dq_args_key(st, a, rec, job->scope, job->source_ids[i]);
}

static void complete_args(dq_args_t *a, const dq_job_t *job, const char *sum_id)
{
        dq_args_add(a, dq_method_name(job->method));
        dq_args_add(a, job->scope);
        dq_args_addf(a, "%s", sum_id); /* a copy: sum_id is the caller's */
        for (size_t i = 0; i < job->source_cnt; i++)
                dq_args_add(a, job->source_ids[i]);
}

/* The head both completes share: fn, the keys (job, target, index,
 * held, sources), then epoch, now, retention, kind and job id. */
static void complete_head(dq_store_t *st, dq_args_t *a, const char *fn,
                          const dq_settle_t *s, const char *sum_id,
                          int64_t now_ms)
{
        const dq_job_t *job = s->job;

        dq_args_add(a, fn);
        dq_args_addf(a, "%zu", 4 + job->source_cnt);
        job_key_arg(st, a, job);
        complete_keys(st, a, job, sum_id);
        source_keys(st, a, job);
        dq_args_addf(a, "%lld", (long long)s->epoch);
        dq_args_addf(a, "%lld", (long long)now_ms);
        dq_args_addf(a, "%lld", (long long)st->retention_ms);
        dq_args_add(a, dq_kind_name(job->kind));
        dq_args_add(a, job->id);
}

static void build_complete_llm(dq_store_t *st, dq_args_t *a,
                               const dq_settle_t *s, const char *sum_id,
                               int64_t now_ms)
{
        const dq_job_t *job = s->job;
        const dq_summary_t *m = s->summary;

        complete_head(st, a, "decayq_complete_llm", s, sum_id, now_ms);
        dq_args_add(a, job->scope);
        dq_args_addf(a, "%s", sum_id);
        dq_args_add(a, m->digest);
        dq_args_add(a, m->content);
        dq_args_add(a, m->model ? m->model : "");
        dq_args_add(a, m->fingerprint ? m->fingerprint : "");
        dq_args_addf(a, "%lld", (long long)m->prompt_tokens);
        dq_args_addf(a, "%lld", (long long)m->completion_tokens);
        dq_args_add(a, m->operator_name ? m->operator_name : "");
        dq_args_add(a, m->key_id ? m->key_id : "");
        for (size_t i = 0; i < job->source_cnt; i++)
                dq_args_add(a, job->source_ids[i]);
}

static void build_settle(dq_store_t *st, dq_args_t *a, void *item,
                         int64_t now_ms)
{
        const dq_settle_t *s = item;
        const dq_job_t *job = s->job;
        char sum_id[DQ_ULID_LEN + 5];

        dq_args_add(a, "FCALL");
        switch (s->op) {
        case DQ_SETTLE_COMPLETE:
                snprintf(sum_id, sizeof(sum_id), "sum_%s", job->id);
                if (s->summary) {
                        build_complete_llm(st, a, s, sum_id, now_ms);
                        break;
                }
                complete_head(st, a, "decayq_complete", s, sum_id, now_ms);
                complete_args(a, job, sum_id);
                break;
        case DQ_SETTLE_RELEASE:
                dq_args_add(a, "decayq_release");
                dq_args_add(a, "1");
                job_key_arg(st, a, job);
                dq_args_addf(a, "%lld", (long long)s->epoch);
                dq_args_addf(a, "%lld", (long long)now_ms);
                dq_args_addf(a, "%lld", (long long)s->not_before_ms);
                dq_args_add(a, s->error_code ? s->error_code : "");
                break;
        case DQ_SETTLE_RETRY:
        case DQ_SETTLE_DEAD: {
                /* Same shape: the third argument is the not-before time of
                 * a retry, or the retention of a dead job's state. */
                bool retry = s->op == DQ_SETTLE_RETRY;
                dq_args_add(a, retry ? "decayq_retry" : "decayq_dead");
                dq_args_add(a, "1");
                job_key_arg(st, a, job);
                dq_args_addf(a, "%lld", (long long)s->epoch);
                dq_args_addf(a, "%lld", (long long)now_ms);
                dq_args_addf(
                    a, "%lld",
                    (long long)(retry ? s->not_before_ms : st->retention_ms));
                dq_args_add(a, s->error_class ? s->error_class
                               : retry        ? "retryable"
                                              : "fatal");
                dq_args_add(a, s->error_code ? s->error_code : "");
                dq_args_add(a, s->error_message ? s->error_message : "");
                break;
        }
        }
}

static void parse_settle(dq_store_t *st, const redisReply *r, void *item)
{
        dq_settle_t *s = item;
        const char *status = reply_status(r, st, &s->err);

        s->code[0] = s->message[0] = s->result[0] = '\0';
        if (s->err == DQ_ERR_REJECTED) {
                snprintf(s->code, sizeof(s->code), "%s",
                         DQ_STORE_COMMAND_ERROR);
                command_message(r, s->message, sizeof(s->message));
        }
        if (!status)
                return;
        s->superseded = false;
        if (!strcmp(status, "ok")) {
                snprintf(s->result, sizeof(s->result), "%s", elem(r, 1));
                s->superseded = !strcmp(elem(r, 2), "superseded");
        } else if (!strcmp(status, "fenced")) {
                s->err = DQ_ERR_FENCED;
        } else if (!strcmp(status, "terminal")) {
                s->err = DQ_ERR_TERMINAL;
                snprintf(s->result, sizeof(s->result), "%s", elem(r, 1));
        } else if (!strcmp(status, "rejected")) {
                s->err = DQ_ERR_REJECTED;
                snprintf(s->code, sizeof(s->code), "%s", elem(r, 1));
                snprintf(s->message, sizeof(s->message), "%s", elem(r, 2));
        } else {
                s->err = DQ_ERR_INTERNAL;
        }
}

dq_err_t dq_store_settle(dq_store_t *st, dq_settle_t *settles, size_t n,
                         int64_t now_ms)
{
        return batch(st, settles, sizeof(*settles), n, now_ms, build_settle,
                     parse_settle);
}

static void build_run(dq_store_t *st, dq_args_t *a, void *item, int64_t now_ms)
{
        const dq_store_run_t *rn = item;
        const dq_claim_t *c = &rn->claim;
        const dq_job_t *job = c->job;
        bool idem = job->idempotency_key != NULL;
        char sum_id[DQ_ULID_LEN + 5];

        snprintf(sum_id, sizeof(sum_id), "sum_%s", job->id);
        dq_args_add(a, "FCALL");
        dq_args_add(a, "decayq_run");
        dq_args_addf(a, "%zu", 4 + (idem ? 1 : 0) + job->source_cnt);
        job_key_arg(st, a, job);
        complete_keys(st, a, job, sum_id);
        if (idem)
                dq_args_key(st, a, "idem", job->scope, job->idempotency_key);
        source_keys(st, a, job);
        dq_args_add(a, idem ? "1" : "0");
        claim_args(st, a, c, now_ms);
        complete_args(a, job, sum_id);
}

static void parse_run(dq_store_t *st, const redisReply *r, void *item)
{
        dq_store_run_t *rn = item;
        dq_claim_t *c = &rn->claim;
        dq_settle_t *s = &rn->settle;
        const char *status =
            r && r->type == REDIS_REPLY_ARRAY && r->elements >= 6 ? elem(r, 0)
                                                                  : "";
        bool done = !strcmp(status, "completed");

        *s = (dq_settle_t){.job = c->job, .op = DQ_SETTLE_COMPLETE};
        if (!done && strcmp(status, "rejected")) {
                parse_claim(st, r, c);
                return;
        }
        c->err = DQ_OK;
        c->message[0] = c->ref[0] = '\0';
        c->status = DQ_CLAIM_CLAIMED;
        snprintf(c->state, sizeof(c->state), "%s", elem(r, 1));
        c->attempts = strtoll(elem(r, 2), NULL, 10);
        c->epoch = s->epoch = strtoll(elem(r, 3), NULL, 10);
        c->until = 0;
        c->took_over = false;
        if (done) {
                s->err = DQ_OK;
                snprintf(s->result, sizeof(s->result), "%s", elem(r, 4));
                s->superseded = !strcmp(elem(r, 5), "superseded");
        } else {
                s->err = DQ_ERR_REJECTED;
                snprintf(s->code, sizeof(s->code), "%s", elem(r, 4));
                snprintf(s->message, sizeof(s->message), "%s", elem(r, 5));
        }
}

dq_err_t dq_store_run(dq_store_t *st, dq_store_run_t *runs, size_t n,
                      int64_t now_ms)
{
        return batch(st, runs, sizeof(*runs), n, now_ms, build_run, parse_run);
}

void dq_store_run_send(dq_store_t *st, dq_store_run_t *runs, size_t n,
                       int64_t now_ms, dq_store_ticket_t *t)
{
        dq_args_t *cmds;

        *t = (dq_store_ticket_t){0};
        if (!n || ensure(st) || !(cmds = calloc(n, sizeof(*cmds))))
                return;
        for (size_t i = 0; i < n; i++)
                build_run(st, &cmds[i], &runs[i], now_ms);
        if (send_cmds(st, cmds, n, true) == DQ_OK) {
                t->conn = st->conn;
                st->owed += n;
        }
        for (size_t i = 0; i < n; i++)
                dq_args_release(&cmds[i]);
        free(cmds);
}

dq_err_t dq_store_run_recv(dq_store_t *st, dq_store_run_t *runs, size_t n,
                           const dq_store_ticket_t *t)
{
        redisReply **replies = calloc(n ? n : 1, sizeof(*replies));
        dq_err_t ret = DQ_ERR_UNAVAILABLE;

        if (replies && t->conn && t->conn == st->conn && st->c &&
            st->owed >= n) {
                ret = read_replies(st, replies, n);
                if (ret == DQ_OK)
                        st->owed -= n;
        }
        for (size_t i = 0; i < n; i++) {
                parse_run(st, replies ? replies[i] : NULL, &runs[i]);
                if (replies)
                        freeReplyObject(replies[i]);
        }
        free(replies);
        return ret;
}

/* One command through the pipeline; returns its reply or NULL. */
static redisReply *one(dq_store_t *st, dq_args_t *a, dq_err_t *err)
{
        redisReply *r = NULL;
        *err = dq_store_pipeline(st, a, 1, &r);
        dq_args_release(a);
        return r;
}

dq_err_t dq_store_ping(dq_store_t *st)
{
        dq_args_t a = {0};
        dq_err_t err;
        redisReply *r;

        dq_args_add(&a, "PING");
        r = one(st, &a, &err);
        if (r)
                freeReplyObject(r);
        return err;
}

dq_err_t dq_store_supersede(dq_store_t *st, const dq_job_t *job,
                            const char *by_id, int64_t now_ms)
{
        dq_args_t a = {0};
        dq_err_t err;
        redisReply *r;
        const char *status;

        dq_args_add(&a, "FCALL");
        dq_args_add(&a, "decayq_supersede");
        dq_args_add(&a, "1");
        job_key_arg(st, &a, job);
        dq_args_addf(&a, "%lld", (long long)now_ms);
        dq_args_addf(&a, "%lld", (long long)st->retention_ms);
        dq_args_add(&a, by_id);
        r = one(st, &a, &err);
        status = err ? NULL : reply_status(r, st, &err);
        if (status && !strcmp(status, "terminal"))
                err = DQ_ERR_TERMINAL;
        else if (status && !strcmp(status, "busy"))
                err = DQ_ERR_FENCED;
        else if (!err && !status)
                err = DQ_ERR_UNAVAILABLE;
        freeReplyObject(r);
        return err;
}

static void build_renew(dq_store_t *st, dq_args_t *a, void *item,
                        int64_t now_ms)
{
        const dq_renew_t *rn = item;

        dq_args_add(a, "FCALL");
        dq_args_add(a, "decayq_renew");
        dq_args_add(a, "1");
        job_key_arg(st, a, rn->job);
        dq_args_addf(a, "%lld", (long long)rn->epoch);
        dq_args_addf(a, "%lld", (long long)now_ms);
        dq_args_addf(a, "%lld", (long long)st->lease_ms);
}

static void parse_renew(dq_store_t *st, const redisReply *r, void *item)
{
        dq_renew_t *rn = item;
        const char *status = reply_status(r, st, &rn->err);

        if (status && strcmp(status, "ok"))
                rn->err = !strcmp(status, "terminal") ? DQ_ERR_TERMINAL
                                                      : DQ_ERR_FENCED;
}

dq_err_t dq_store_renew_many(dq_store_t *st, dq_renew_t *renews, size_t n,
                             int64_t now_ms)
{
        return batch(st, renews, sizeof(*renews), n, now_ms, build_renew,
                     parse_renew);
}

dq_err_t dq_store_renew(dq_store_t *st, const dq_job_t *job, int64_t epoch,
                        int64_t now_ms)
{
        dq_renew_t rn = {.job = job, .epoch = epoch};

        dq_store_renew_many(st, &rn, 1, now_ms);
        return rn.err;
}

/* Starts "FCALL fn 1 <job key>" for an operator call on one job. */
static void job_fcall(dq_store_t *st, dq_args_t *a, const char *fn,
                      const char *scope, const char *id)
{
        dq_args_add(a, "FCALL");
        dq_args_add(a, fn);
        dq_args_add(a, "1");
        dq_args_key(st, a, "job", scope, id);
}

/* Sends a call whose reply is {"ok"|refusal, state}: DQ_OK or
 * DQ_ERR_TERMINAL, with the state in state_out. */
static dq_err_t state_call(dq_store_t *st, dq_args_t *a, char *state_out,
                           size_t state_size)
{
        dq_err_t err;
        redisReply *r = one(st, a, &err);
        const char *status = reply_status(r, st, &err);

        if (status) {
                if (state_out)
                        snprintf(state_out, state_size, "%s", elem(r, 1));
                if (strcmp(status, "ok"))
                        err = DQ_ERR_TERMINAL;
        }
        freeReplyObject(r);
        return err;
}

dq_err_t dq_store_cancel(dq_store_t *st, const char *scope, const char *id,
                         const char *reason, bool force, int64_t now_ms,
                         char *state_out, size_t state_size)
{
        dq_args_t a = {0};
        char state[32];
        dq_err_t err;

        job_fcall(st, &a, "decayq_cancel", scope, id);
        dq_args_addf(&a, "%lld", (long long)now_ms);
        dq_args_addf(&a, "%lld", (long long)st->retention_ms);
        dq_args_add(&a, reason ? reason : "");
        dq_args_add(&a, force ? "1" : "0");
        err = state_call(st, &a, state, sizeof(state));
        if (err == DQ_ERR_TERMINAL && !strcmp(state, "missing"))
                err = DQ_ERR_NOT_FOUND;
        if (state_out)
                snprintf(state_out, state_size, "%s", state);
        return err;
}

dq_err_t dq_store_replay(dq_store_t *st, const char *scope, const char *id,
                         const char *from, int64_t replay_count, bool dry_run,
                         int64_t now_ms, char *state_out, size_t state_size)
{
        dq_args_t a = {0};

        /* A dry run reads only, so it runs on a replica too. */
        if (dry_run) {
                dq_args_add(&a, "FCALL_RO");
                dq_args_add(&a, "decayq_replay_dry");
                dq_args_add(&a, "1");
                dq_args_key(st, &a, "job", scope, id);
        } else {
                job_fcall(st, &a, "decayq_replay", scope, id);
        }
        dq_args_addf(&a, "%lld", (long long)now_ms);
        dq_args_add(&a, from);
        dq_args_addf(&a, "%lld", (long long)replay_count);
        dq_args_add(&a, dry_run ? "1" : "0");
        return state_call(st, &a, state_out, state_size);
}

dq_err_t dq_store_audit(dq_store_t *st, const char *const *kv, size_t pairs,
                        char *id_out, size_t id_size)
{
        dq_args_t a = {0};
        dq_err_t err;
        redisReply *r;

        dq_args_add(&a, "XADD");
        dq_args_addf(&a, "%s:audit", st->ns);
        dq_args_add(&a, "*");
        for (size_t i = 0; i < 2 * pairs; i++)
                dq_args_add(&a, kv[i]);
        r = one(st, &a, &err);
        if (r && r->type != REDIS_REPLY_STRING)
                err = DQ_ERR_UNAVAILABLE;
        if (!err && id_out)
                snprintf(id_out, id_size, "%s", r->str);
        freeReplyObject(r);
        return err;
}

dq_err_t dq_store_hgetall(dq_store_t *st, dq_args_t *a, dq_record_t *rec)
{
        dq_err_t err;
        redisReply *r = one(st, a, &err);

        memset(rec, 0, sizeof(*rec));
        if (!r)
                return err ? err : DQ_ERR_UNAVAILABLE;
        if (r->type != REDIS_REPLY_ARRAY) {
                freeReplyObject(r);
                return DQ_ERR_UNAVAILABLE;
        }
        if (r->elements == 0) {
                freeReplyObject(r);
                return DQ_ERR_NOT_FOUND;
        }
        rec->cnt = r->elements / 2;
        rec->fields = calloc(rec->cnt, sizeof(char *));
        rec->values = calloc(rec->cnt, sizeof(char *));
        if (!rec->fields || !rec->values) {
                freeReplyObject(r);
                dq_record_release(rec);
                return DQ_ERR_INTERNAL;
        }
        for (size_t i = 0; i < rec->cnt; i++) {
                rec->fields[i] = strdup(r->element[2 * i]->str);
                rec->values[i] = strndup(r->element[2 * i + 1]->str,
                                         r->element[2 * i + 1]->len);
        }
        freeReplyObject(r);
        return DQ_OK;
}

dq_err_t dq_store_job_get(dq_store_t *st, const char *scope, const char *id,
                          dq_record_t *rec)
{
        dq_args_t a = {0};
        dq_args_add(&a, "HGETALL");
        dq_args_key(st, &a, "job", scope, id);
        return dq_store_hgetall(st, &a, rec);
}

const char *dq_store_index_name(dq_kind_t kind)
{
        switch (kind) {
        case DQ_KIND_EPISODE_COMPRESSION:
                return "episode";
        case DQ_KIND_EXPIRED_PRINCIPLE_REVIEW:
                return "principle";
        default:
                return "candidate";
        }
}

static const char *rec_type(dq_rec_kind_t kind)
{
        return kind == DQ_REC_EPISODE ? "ep" : "mem";
}

dq_err_t dq_store_record_get(dq_store_t *st, dq_rec_kind_t kind,
                             const char *scope, const char *id,
                             dq_record_t *rec)
{
        dq_args_t a = {0};
        dq_args_add(&a, "HGETALL");
        dq_args_key(st, &a, rec_type(kind), scope, id);
        return dq_store_hgetall(st, &a, rec);
}

const char *dq_record_get(const dq_record_t *rec, const char *field)
{
        for (size_t i = 0; i < rec->cnt; i++)
                if (rec->fields[i] && !strcmp(rec->fields[i], field))
                        return rec->values[i];
        return NULL;
}

void dq_record_release(dq_record_t *rec)
{
        for (size_t i = 0; i < rec->cnt; i++) {
                if (rec->fields)
                        free(rec->fields[i]);
                if (rec->values)
                        free(rec->values[i]);
        }
        free(rec->fields);
        free(rec->values);
        memset(rec, 0, sizeof(*rec));
}
