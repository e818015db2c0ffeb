/* The configuration table and its loaders. */
#include "dq_conf.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "dq_log.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

extern char **environ;

typedef enum {
        DQ_CONF_STR,
        DQ_CONF_INT,
        DQ_CONF_BOOL,
        DQ_CONF_DURATION,
        DQ_CONF_TIERS,
} dq_conf_type_t;

#define DQ_CONF_F_SECRET 0x1

typedef struct dq_conf_def_s {
        const char *key;
        dq_conf_type_t type;
        const char *def;
        size_t offset;
        int flags;
        int64_t min, max; /* INT and DURATION bounds */
        const char *doc;
} dq_conf_def_t;

#define OFF(f) offsetof(dq_conf_t, f)
#define DAY    (86400LL * 1000)

static const dq_conf_def_t dq_conf_defs[] = {
    {"log.level", DQ_CONF_STR, "info", OFF(log_level), 0, 0, 0,
     "error, warn, info or debug"},
    {"topic.jobs", DQ_CONF_STR, "decay.jobs", OFF(topic_jobs), 0, 0, 0,
     "main job topic, keyed by scope"},
    {"topic.dlq", DQ_CONF_STR, "decay.jobs.dlq", OFF(topic_dlq), 0, 0, 0,
     "dead-letter topic; same partition count as the main topic"},
    {"topic.delay.prefix", DQ_CONF_STR, "decay.jobs.delay.",
     OFF(topic_delay_prefix), 0, 0, 0,
     "delay tier topics are <prefix><tier>, e.g. decay.jobs.delay.5s"},
    {"delay.tiers", DQ_CONF_TIERS, "5s,30s,5m,1h", OFF(delay_tiers), 0, 0, 0,
     "delay tiers, ascending, comma separated durations"},
    {"job.max.bytes", DQ_CONF_INT, "1048576", OFF(job_max_bytes), 0, 64,
     64 * 1024 * 1024, "largest accepted job message, in bytes"},
    {"schedule.max.ahead", DQ_CONF_DURATION, "365d", OFF(schedule_max_ahead_ms),
     0, 1000, 36500 * DAY,
     "how far ahead scheduled_for may be; a job for later is rejected "
     "(decay.job.scheduled_too_far)"},
    {"redis.host", DQ_CONF_STR, "127.0.0.1", OFF(redis_host), 0, 0, 0,
     "Redis server host"},
    {"redis.port", DQ_CONF_INT, "6379", OFF(redis_port), 0, 1, 65535,
     "Redis server port"},
    {"redis.username", DQ_CONF_STR, "", OFF(redis_username), 0, 0, 0,
     "Redis ACL user (empty: default user)"},
    {"redis.password", DQ_CONF_STR, "", OFF(redis_password), DQ_CONF_F_SECRET,
     0, 0, "Redis password (never logged)"},
    {"redis.db", DQ_CONF_INT, "0", OFF(redis_db), 0, 0, 15,
     "Redis database number"},
    {"redis.namespace", DQ_CONF_STR, "decayq", OFF(redis_namespace), 0, 0, 0,
     "prefix of every Redis key"},
    {"redis.timeout", DQ_CONF_DURATION, "5s", OFF(redis_timeout_ms), 0, 1,
     600000, "Redis connect and command timeout"},
    {"redis.connections", DQ_CONF_INT, "4", OFF(redis_connections), 0, 1,
     DQ_REDIS_CONNECTIONS_MAX,
     "connections a consumer spreads its one-step runs over, by scope (a "
     "scope keeps to one): Redis reads 16 KiB of a connection per turn and "
     "syncs its AOF once per turn"},
    {"redis.allow.unsafe", DQ_CONF_BOOL, "false", OFF(redis_allow_unsafe), 0, 0,
     0, "start even if Redis can evict keys or has AOF off"},
    {"idempotency.retention", DQ_CONF_DURATION, "7d",
     OFF(idempotency_retention_ms), 0, 1000, 3650 * DAY,
     "how long an idempotency key is remembered"},
    {"produce.timeout", DQ_CONF_DURATION, "30s", OFF(produce_timeout_ms), 0,
     100, DAY, "how long a producer waits for delivery reports"},
    {"max.attempts", DQ_CONF_INT, "4", OFF(max_attempts), 0, 1, 100,
     "runs of a job before it is dead-lettered"},
    {"backoff.base", DQ_CONF_DURATION, "1s", OFF(backoff_base_ms), 0, 1, DAY,
     "first retry backoff (exponential, full jitter)"},
    {"backoff.max", DQ_CONF_DURATION, "5m", OFF(backoff_max_ms), 0, 1, 30 * DAY,
     "largest retry backoff"},
    {"lease", DQ_CONF_DURATION, "30s", OFF(lease_ms), 0, 1000, DAY,
     "claim lease; renewed while a job runs"},
    {"drain.timeout", DQ_CONF_DURATION, "20s", OFF(drain_timeout_ms), 0, 0, DAY,
     "how long SIGTERM waits for in-flight jobs"},
    {"batch.size", DQ_CONF_INT, "500", OFF(batch_size), 0, 1, 100000,
     "jobs claimed and settled per Redis round trip"},
    {"summary.interval", DQ_CONF_DURATION, "10s", OFF(summary_interval_ms), 0,
     0, DAY, "how often the consumer logs its run summary (0: only at exit)"},
    {"critical.after", DQ_CONF_DURATION, "10s", OFF(critical_after_ms), 0, 100,
     DAY, "Redis outage after which the consumer pauses as critical"},
    {"max.in.flight", DQ_CONF_INT, "256", OFF(max_in_flight), 0, 1, 100000,
     "jobs with a handler that are claimed or running at once; a scope "
     "has at most one (G10)"},
    {"handler.threads", DQ_CONF_INT, "0", OFF(handler_threads), 0, 0, 4096,
     "threads that run handlers (0: as many as max.in.flight, at most "
     "1024)"},
    {"handler.timeout", DQ_CONF_DURATION, "10m", OFF(handler_timeout_ms), 0,
     100, 7 * DAY,
     "a handler running longer is given up as error class timeout, which "
     "counts as an attempt (G11)"},
    {"max.pending.per.partition", DQ_CONF_INT, "10000",
     OFF(max_pending_per_partition), 0, 1, 10000000,
     "records of one partition waiting for their scope, claimed or "
     "running; the partition is paused when it holds this many and "
     "resumed below half"},
    {"worker.id", DQ_CONF_STR, "", OFF(worker_id), 0, 0, 0,
     "name of this worker in job state (default: host:pid)"},
    {"commit.interval", DQ_CONF_DURATION, "1s", OFF(commit_interval_ms), 0, 10,
     DAY, "how often settled offsets are committed"},
    {"http.port", DQ_CONF_INT, "0", OFF(http_port), 0, 0, 65535,
     "port of /metrics, /healthz and /readyz (0: no listener)"},
    {"http.address", DQ_CONF_STR, "127.0.0.1", OFF(http_address), 0, 0, 0,
     "address the HTTP listener binds (0.0.0.0 or :: for all)"},
    {"http.max.connections", DQ_CONF_INT, "256", OFF(http_max_connections), 0,
     1, 4096, "HTTP connections held at once, from all clients"},
    {"http.max.connections.per.ip", DQ_CONF_INT, "4",
     OFF(http_max_connections_per_ip), 0, 1, 4096,
     "HTTP connections held at once from one address, so that no client "
     "can crowd the probes out"},
    {"http.timeout", DQ_CONF_DURATION, "3s", OFF(http_timeout_ms), 0, 1000,
     3600000, "an HTTP connection silent this long is closed"},
    {"stats.interval", DQ_CONF_DURATION, "5s", OFF(stats_interval_ms), 0, 0,
     DAY, "how often librdkafka statistics (lag) refresh the metrics"},
    {"plan.interval", DQ_CONF_DURATION, "1h", OFF(plan_interval_ms), 0, 100,
     30 * DAY,
     "planner: length of a planning window; windows start at Redis TIME "
     "rounded down to it, and a scope yields one set of jobs a window"},
    {"plan.scope.filter", DQ_CONF_STR, "", OFF(plan_scope_filter), 0, 0, 0,
     "planner: plan only scopes matching this glob (fnmatch: * ? [...]); "
     "empty: every scope"},
    {"plan.scan.max", DQ_CONF_INT, "100000", OFF(plan_scan_max), 0, 1, 10000000,
     "planner: due memories of one scope and policy a pass looks at; the "
     "rest wait for the next pass and count as debt"},
    {"plan.batch", DQ_CONF_INT, "64", OFF(plan_batch), 0, 1, 10000,
     "planner: scopes planned in one Redis round trip; SIGTERM stops "
     "between batches"},
    {"plan.candidates.enabled", DQ_CONF_BOOL, "true",
     OFF(plan_candidates.enabled), 0, 0, 0,
     "planner: propose candidate_compression jobs"},
    {"plan.candidates.min.age", DQ_CONF_DURATION, "7d",
     OFF(plan_candidates.min_age_ms), 0, 0, 3650 * DAY,
     "planner: an active candidate decays once its created_at is this old "
     "at the window start"},
    {"plan.candidates.min.sources", DQ_CONF_INT, "2",
     OFF(plan_candidates.min_sources), 0, 1, 1000,
     "planner: fewest due candidates of a scope worth a job; fewer wait"},
    {"plan.candidates.max.sources", DQ_CONF_INT, "100",
     OFF(plan_candidates.max_sources), 0, 1, 1000,
     "planner: most candidates a job compresses; more are chunked"},
    {"plan.candidates.method", DQ_CONF_STR, "deterministic_concatenate",
     OFF(plan_candidates.method), 0, 0, 0,
     "planner: summary method of candidate jobs"},
    {"plan.episodes.enabled", DQ_CONF_BOOL, "true", OFF(plan_episodes.enabled),
     0, 0, 0, "planner: propose episode_compression jobs"},
    {"plan.episodes.min.age", DQ_CONF_DURATION, "30d",
     OFF(plan_episodes.min_age_ms), 0, 0, 3650 * DAY,
     "planner: an active episode decays once its created_at is this old"},
    {"plan.episodes.min.sources", DQ_CONF_INT, "2",
     OFF(plan_episodes.min_sources), 0, 1, 1000,
     "planner: fewest due episodes of a scope worth a job"},
    {"plan.episodes.max.sources", DQ_CONF_INT, "100",
     OFF(plan_episodes.max_sources), 0, 1, 1000,
     "planner: most episodes a job compresses"},
    {"plan.episodes.method", DQ_CONF_STR, "deterministic_concatenate",
     OFF(plan_episodes.method), 0, 0, 0,
     "planner: summary method of episode jobs"},
    {"plan.principles.enabled", DQ_CONF_BOOL, "true",
     OFF(plan_principles.enabled), 0, 0, 0,
     "planner: propose expired_principle_review jobs for active principles "
     "past their expires_at"},
    {"plan.principles.max.sources", DQ_CONF_INT, "100",
     OFF(plan_principles.max_sources), 0, 1, 1000,
     "planner: most principles one review job opens"},
    {"llm.base.url", DQ_CONF_STR, "", OFF(llm_base_url), 0, 0, 0,
     "Chat Completions endpoint base, without /chat/completions "
     "(https://api.openai.com/v1, http://vllm:8000/v1, "
     "http://localhost:11434/v1); empty: no LLM backend, llm_summary jobs "
     "dead-letter with decay.llm_summary.no_backend"},
    {"llm.model", DQ_CONF_STR, "", OFF(llm_model), 0, 0, 0,
     "model to call; an attestation must name the same model"},
    {"llm.api.key", DQ_CONF_STR, "", OFF(llm_api_key), DQ_CONF_F_SECRET, 0, 0,
     "bearer token of the endpoint (secret: masked, never logged); empty: "
     "no Authorization header"},
    {"llm.max.tokens.field", DQ_CONF_STR, "max_tokens",
     OFF(llm_max_tokens_field), 0, 0, 0,
     "request field of the token cap: max_tokens (vLLM, llama.cpp, "
     "Ollama, older OpenAI models) or max_completion_tokens (newer OpenAI "
     "models); never guessed"},
    {"llm.seed", DQ_CONF_INT, "-1", OFF(llm_seed), 0, -1, INT32_MAX,
     "seed sent with every request (temperature is always 0); -1: none"},
    {"llm.connect.timeout", DQ_CONF_DURATION, "5s", OFF(llm_connect_timeout_ms),
     0, 100, 600000, "TCP and TLS connect timeout of one call"},
    {"llm.timeout", DQ_CONF_DURATION, "60s", OFF(llm_timeout_ms), 0, 100, DAY,
     "total time of one call; past it the call is retryable "
     "(decay.llm.timeout)"},
    {"llm.concurrency", DQ_CONF_INT, "16", OFF(llm_concurrency), 0, 1, 4096,
     "LLM calls in flight at once from this consumer"},
    {"llm.prompt.file", DQ_CONF_STR, "", OFF(llm_prompt_file), 0, 0, 0,
     "file whose text replaces the built-in instructions (the system "
     "message); the memories always follow in a delimited data block"},
    {"llm.allowed.signers", DQ_CONF_STR, "", OFF(llm_allowed_signers), 0, 0, 0,
     "allowed-signers file: one operator key per line (decayctl attest "
     "keygen prints it); an llm_summary job runs only with an attestation "
     "signed by one of them"},
    {"llm.circuit.open", DQ_CONF_DURATION, "30s", OFF(llm_circuit_open_ms), 0,
     100, DAY,
     "after a 401, 403 or 429 insufficient_quota, LLM jobs wait this long "
     "(doubling to 10x while probes fail) without spending attempts"},
    {"debug.faults", DQ_CONF_BOOL, "false", OFF(debug_faults), 0, 0, 0,
     "obey fault-injection trace ids (fail-until:N, fail-always, slow:MS); "
     "for tests only"},
};

#define DQ_CONF_CNT (sizeof(dq_conf_defs) / sizeof(dq_conf_defs[0]))

static const dq_conf_def_t *dq_conf_find(const char *key)
{
        for (size_t i = 0; i < DQ_CONF_CNT; i++)
                if (!strcmp(dq_conf_defs[i].key, key))
                        return &dq_conf_defs[i];
        return NULL;
}

bool dq_conf_is_secret(const char *key)
{
        static const char *const words[] = {
            "password", "secret", "oauthbearer.config", "key.pem", "sasl.jaas",
            "api.key",  "token",
        };
        const dq_conf_def_t *def = dq_conf_find(key);
        char low[256];
        size_t n = 0;

        if (def)
                return def->flags & DQ_CONF_F_SECRET;
        /* Any spelling: kafka.Sasl.Password is a password too. */
        for (; key[n] && n + 1 < sizeof(low); n++)
                low[n] = (char)tolower((unsigned char)key[n]);
        low[n] = '\0';
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
                if (strstr(low, words[i]))
                        return true;
        return false;
}

static bool parse_tiers(dq_conf_t *conf, const char *value)
{
        int64_t tiers[DQ_CONF_MAX_TIERS];
        int cnt = 0;
        const char *p = value;

        while (*p) {
                char tok[32];
                size_t n = strcspn(p, ",");
                if (n == 0 || n >= sizeof(tok) || cnt == DQ_CONF_MAX_TIERS)
                        return false;
                memcpy(tok, p, n);
                tok[n] = '\0';
                if (!dq_duration_parse(tok, &tiers[cnt]) || tiers[cnt] <= 0 ||
                    (cnt > 0 && tiers[cnt] <= tiers[cnt - 1]))
                        return false;
                cnt++;
                p += n;
                if (*p == ',')
                        p++;
        }
        if (cnt == 0)
                return false;
        memcpy(conf->delay_tier_ms, tiers, sizeof(tiers));
        conf->delay_tier_cnt = cnt;
        return true;
}

static dq_err_t set_kafka(dq_conf_t *conf, const char *key, const char *value,
                          const char *origin)
{
        dq_conf_kv_t *kv = NULL;
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (!strcmp(conf->kafka[i].key, key))
                        kv = &conf->kafka[i];
        if (!kv) {
                dq_conf_kv_t *n =
                    realloc(conf->kafka, (conf->kafka_cnt + 1) * sizeof(*n));
                if (!n)
                        return DQ_ERR_INTERNAL;
                conf->kafka = n;
                kv = &conf->kafka[conf->kafka_cnt++];
                kv->key = strdup(key);
                kv->value = kv->origin = NULL;
        }
        free(kv->value);
        free(kv->origin);
        kv->value = strdup(value);
        kv->origin = strdup(origin);
        return kv->key && kv->value && kv->origin ? DQ_OK : DQ_ERR_INTERNAL;
}

dq_err_t dq_conf_set(dq_conf_t *conf, const char *key, const char *value,
                     const char *origin, char *errstr, size_t errstr_size)
{
        const dq_conf_def_t *def;
        char *field;
        char *end;
        long long v;
        int64_t ms;

        if (!strncmp(key, "kafka.", 6) && key[6]) {
                if (set_kafka(conf, key + 6, value, origin)) {
                        snprintf(errstr, errstr_size, "%s: out of memory",
                                 origin);
                        return DQ_ERR_INTERNAL;
                }
                return DQ_OK;
        }
        def = dq_conf_find(key);
        if (!def) {
                snprintf(errstr, errstr_size, "%s: unknown key '%s'", origin,
                         key);
                return DQ_ERR_INVALID;
        }
        field = (char *)conf + def->offset;
        if (!strcmp(key, "log.level") && dq_log_level_parse(value) < 0) {
                snprintf(errstr, errstr_size,
                         "%s: log.level: expected error, warn, info or "
                         "debug, got '%s'",
                         origin, value);
                return DQ_ERR_INVALID;
        }

        switch (def->type) {
        case DQ_CONF_TIERS:
                if (!parse_tiers(conf, value)) {
                        snprintf(errstr, errstr_size,
                                 "%s: %s: expected up to %d ascending "
                                 "durations like 5s,30s,5m,1h",
                                 origin, key, DQ_CONF_MAX_TIERS);
                        return DQ_ERR_INVALID;
                }
                /* Keep the text as well. */
                __attribute__((fallthrough));
        case DQ_CONF_STR: {
                char *s = strdup(value);
                if (!s) {
                        snprintf(errstr, errstr_size, "%s: out of memory",
                                 origin);
                        return DQ_ERR_INTERNAL;
                }
                free(*(char **)field);
                *(char **)field = s;
                return DQ_OK;
        }
        case DQ_CONF_BOOL:
                if (!strcmp(value, "true") || !strcmp(value, "1"))
                        *(bool *)field = true;
                else if (!strcmp(value, "false") || !strcmp(value, "0"))
                        *(bool *)field = false;
                else {
                        snprintf(errstr, errstr_size,
                                 "%s: %s: expected true or false, got '%s'",
                                 origin, key, value);
                        return DQ_ERR_INVALID;
                }
                return DQ_OK;
        case DQ_CONF_INT:
                v = strtoll(value, &end, 10);
                if (!*value || *end || v < def->min || v > def->max) {
                        snprintf(errstr, errstr_size,
                                 "%s: %s: expected an integer from %lld to "
                                 "%lld, got '%s'",
                                 origin, key, (long long)def->min,
                                 (long long)def->max, value);
                        return DQ_ERR_INVALID;
                }
                *(int64_t *)field = v;
                return DQ_OK;
        case DQ_CONF_DURATION:
                if (!dq_duration_parse(value, &ms) || ms < def->min ||
                    ms > def->max) {
                        snprintf(errstr, errstr_size,
                                 "%s: %s: expected a duration like 250ms, "
                                 "30s, 5m, 1h or 7d within bounds, got '%s'",
                                 origin, key, value);
                        return DQ_ERR_INVALID;
                }
                *(int64_t *)field = ms;
                return DQ_OK;
        }
        return DQ_ERR_INTERNAL;
}

dq_conf_t *dq_conf_new(void)
{
        char errstr[256];
        dq_conf_t *conf = calloc(1, sizeof(*conf));

        if (!conf)
                return NULL;
        for (size_t i = 0; i < DQ_CONF_CNT; i++) {
                if (dq_conf_set(conf, dq_conf_defs[i].key, dq_conf_defs[i].def,
                                "default", errstr, sizeof(errstr))) {
                        dq_conf_destroy(conf);
                        return NULL;
                }
        }
        return conf;
}

void dq_conf_destroy(dq_conf_t *conf)
{
        if (!conf)
                return;
        for (size_t i = 0; i < DQ_CONF_CNT; i++) {
                const dq_conf_def_t *def = &dq_conf_defs[i];
                if (def->type == DQ_CONF_STR || def->type == DQ_CONF_TIERS)
                        free(*(char **)((char *)conf + def->offset));
        }
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                free(conf->kafka[i].key);
                free(conf->kafka[i].value);
                free(conf->kafka[i].origin);
        }
        free(conf->kafka);
        free(conf);
}

static char *trim(char *s)
{
        char *e;
        while (isspace((unsigned char)*s))
                s++;
        e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
                *--e = '\0';
        return s;
}

dq_err_t dq_conf_load_file(dq_conf_t *conf, const char *path, char *errstr,
                           size_t errstr_size)
{
        FILE *fp = fopen(path, "r");
        char *line = NULL, *logical = NULL;
        size_t cap = 0, llen = 0;
        ssize_t n;
        int lineno = 0, startline = 0;
        dq_err_t err = DQ_OK;

        if (!fp) {
                snprintf(errstr, errstr_size, "cannot open '%s': %s", path,
                         strerror(errno));
                return DQ_ERR_INVALID;
        }
        while ((n = getline(&line, &cap, fp)) >= 0) {
                char *s, *key, *value, *sep, origin[512];
                bool cont;
                size_t add;
                char *grown;

                lineno++;
                while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
                        line[--n] = '\0';
                s = llen ? line + strspn(line, " \t\f") : line;
                if (!llen) {
                        startline = lineno;
                        s = trim(line);
                        if (!*s || *s == '#' || *s == '!')
                                continue;
                }
                /* An odd number of trailing backslashes continues the line. */
                add = strlen(s);
                {
                        size_t bs = 0;
                        while (bs < add && s[add - 1 - bs] == '\\')
                                bs++;
                        cont = bs % 2 == 1;
                }
                if (cont)
                        add--;
                grown = realloc(logical, llen + add + 1);
                if (!grown) {
                        err = DQ_ERR_INTERNAL;
                        snprintf(errstr, errstr_size, "%s:%d: out of memory",
                                 path, lineno);
                        break;
                }
                logical = grown;
                memcpy(logical + llen, s, add);
                llen += add;
                logical[llen] = '\0';
                if (cont)
                        continue;
                llen = 0;

                snprintf(origin, sizeof(origin), "%s:%d", path, startline);
                sep = logical + strcspn(logical, "=: \t");
                if (!*sep) {
                        snprintf(errstr, errstr_size,
                                 "%s: expected key=value, got '%.64s'", origin,
                                 logical);
                        err = DQ_ERR_INVALID;
                        break;
                }
                key = logical;
                value = sep + strspn(sep, " \t");
                if (*value == '=' || *value == ':')
                        value++;
                *sep = '\0';
                value = trim(value);
                err =
                    dq_conf_set(conf, key, value, origin, errstr, errstr_size);
                if (err)
                        break;
        }
        if (!err && llen) {
                snprintf(errstr, errstr_size,
                         "%s:%d: file ends inside a continued line", path,
                         startline);
                err = DQ_ERR_INVALID;
        }
        free(line);
        free(logical);
        fclose(fp);
        return err;
}

/* "redis.port" -> "DECAYQ_REDIS_PORT" */
static void env_name(const char *key, char *buf, size_t size)
{
        size_t o = (size_t)snprintf(buf, size, "DECAYQ_");
        for (; *key && o + 1 < size; key++)
                buf[o++] =
                    *key == '.' ? '_' : (char)toupper((unsigned char)*key);
        buf[o] = '\0';
}

/* True when the variable name[0..eq) names a declared key. */
static bool env_known(const char *name, const char *eq)
{
        char want[128];

        for (size_t i = 0; i < DQ_CONF_CNT; i++) {
                env_name(dq_conf_defs[i].key, want, sizeof(want));
                if (strlen(want) == (size_t)(eq - name) &&
                    !strncmp(want, name, (size_t)(eq - name)))
                        return true;
        }
        return false;
}

dq_err_t dq_conf_load_env(dq_conf_t *conf, char *errstr, size_t errstr_size)
{
        dq_err_t err;

        for (size_t i = 0; i < DQ_CONF_CNT; i++) {
                char name[128], origin[160];
                const char *v;
                env_name(dq_conf_defs[i].key, name, sizeof(name));
                if (!(v = getenv(name)))
                        continue;
                snprintf(origin, sizeof(origin), "env %s", name);
                if ((err = dq_conf_set(conf, dq_conf_defs[i].key, v, origin,
                                       errstr, errstr_size)))
                        return err;
        }
        for (char **e = environ; e && *e; e++) {
                char key[256], origin[300];
                const char *eq = strchr(*e, '=');
                size_t o = 0;
                if (!strncmp(*e, "DECAYQ_", 7) && eq &&
                    strncmp(*e, "DECAYQ_KAFKA_", 13) && !env_known(*e, eq)) {
                        char name[128];
                        dq_escape(*e, (size_t)(eq - *e), name, sizeof(name));
                        dq_warn("config",
                                "env=%s known=false action=ignored "
                                "hint=\"DECAYQ_<KEY> sets a key of --help, "
                                "DECAYQ_KAFKA_<PROPERTY> a librdkafka "
                                "property\"",
                                name);
                }
                if (strncmp(*e, "DECAYQ_KAFKA_", 13) || !eq)
                        continue;
                for (const char *p = *e + 13; p < eq && o + 1 < sizeof(key);
                     p++)
                        key[o++] =
                            *p == '_' ? '.' : (char)tolower((unsigned char)*p);
                key[o] = '\0';
                snprintf(origin, sizeof(origin), "env %.*s", (int)(eq - *e),
                         *e);
                if (set_kafka(conf, key, eq + 1, origin))
                        return DQ_ERR_INTERNAL;
        }
        return DQ_OK;
}

dq_conf_t *dq_conf_load(const char *path, char *const *overrides, int cnt,
                        char *errstr, size_t errstr_size)
{
        dq_conf_t *conf = dq_conf_new();

        if (!conf) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        if (path && dq_conf_load_file(conf, path, errstr, errstr_size))
                goto err;
        if (dq_conf_load_env(conf, errstr, errstr_size))
                goto err;
        for (int i = 0; i < cnt; i++) {
                char kv[4096];
                char *eq;
                snprintf(kv, sizeof(kv), "%s", overrides[i]);
                eq = strchr(kv, '=');
                if (!eq || eq == kv) {
                        snprintf(errstr, errstr_size,
                                 "-X %s: expected key=value", overrides[i]);
                        goto err;
                }
                *eq = '\0';
                if (dq_conf_set(conf, kv, eq + 1, "-X", errstr, errstr_size))
                        goto err;
        }
        return conf;

err:
        dq_conf_destroy(conf);
        return NULL;
}

dq_err_t dq_conf_kafka_apply_one(const dq_conf_kv_t *kv,
                                 rd_kafka_conf_t *rk_conf, char *errstr,
                                 size_t errstr_size)
{
        char rerr[256];

        if (rd_kafka_conf_set(rk_conf, kv->key, kv->value, rerr,
                              sizeof(rerr)) == RD_KAFKA_CONF_OK)
                return DQ_OK;
        snprintf(errstr, errstr_size, "%s: kafka.%s: %s", kv->origin, kv->key,
                 dq_chomp(rerr));
        return DQ_ERR_INVALID;
}

dq_err_t dq_conf_kafka_apply(const dq_conf_t *conf, rd_kafka_conf_t *rk_conf,
                             char *errstr, size_t errstr_size)
{
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (dq_conf_kafka_apply_one(&conf->kafka[i], rk_conf, errstr,
                                            errstr_size))
                        return DQ_ERR_INVALID;
        return DQ_OK;
}

const char *dq_conf_kafka_get(const dq_conf_t *conf, const char *key)
{
        for (size_t i = 0; i < conf->kafka_cnt; i++)
                if (!strcmp(conf->kafka[i].key, key))
                        return conf->kafka[i].value;
        return NULL;
}

static void dump_value(FILE *fp, const char *key, const char *value)
{
        fprintf(fp, "%s=%s\n", key,
                dq_conf_is_secret(key) && *value ? "********" : value);
}

void dq_conf_dump(const dq_conf_t *conf, FILE *fp)
{
        for (size_t i = 0; i < DQ_CONF_CNT; i++) {
                const dq_conf_def_t *def = &dq_conf_defs[i];
                const char *field = (const char *)conf + def->offset;
                char num[64];
                switch (def->type) {
                case DQ_CONF_STR:
                case DQ_CONF_TIERS:
                        dump_value(fp, def->key, *(char *const *)field);
                        break;
                case DQ_CONF_BOOL:
                        dump_value(fp, def->key,
                                   *(const bool *)field ? "true" : "false");
                        break;
                case DQ_CONF_INT:
                        snprintf(num, sizeof(num), "%lld",
                                 (long long)*(const int64_t *)field);
                        dump_value(fp, def->key, num);
                        break;
                case DQ_CONF_DURATION:
                        snprintf(num, sizeof(num), "%lldms",
                                 (long long)*(const int64_t *)field);
                        dump_value(fp, def->key, num);
                        break;
                }
        }
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                char key[300];
                snprintf(key, sizeof(key), "kafka.%s", conf->kafka[i].key);
                dump_value(fp, key, conf->kafka[i].value);
        }
}

void dq_conf_describe(FILE *fp)
{
        for (size_t i = 0; i < DQ_CONF_CNT; i++)
                fprintf(fp, "  %-22s %-14s %s\n", dq_conf_defs[i].key,
                        dq_conf_defs[i].def[0] ? dq_conf_defs[i].def : "\"\"",
                        dq_conf_defs[i].doc);
        fprintf(fp, "  %-22s %-14s %s\n", "kafka.<property>", "",
                "passed to librdkafka (see its CONFIGURATION.md)");
}
