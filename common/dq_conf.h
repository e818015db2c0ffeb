/* decayq configuration: one declarative table of keys, loaded from Java
 * properties files, DECAYQ_* environment variables and command-line
 * overrides, with kafka.* keys passed through to librdkafka. */
#ifndef DQ_CONF_H
#define DQ_CONF_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <librdkafka/rdkafka.h>

#include "dq_err.h"

#define DQ_CONF_MAX_TIERS        8
#define DQ_REDIS_CONNECTIONS_MAX 16

/* A kafka.* pair, without the "kafka." prefix, and where it was set. */
typedef struct dq_conf_kv_s {
        char *key;
        char *value;
        char *origin;
} dq_conf_kv_t;

/* One planning policy (plan.<name>.*). */
typedef struct dq_conf_policy_s {
        bool enabled;
        int64_t min_age_ms;
        int64_t min_sources;
        int64_t max_sources;
        char *method;
} dq_conf_policy_t;

/* The effective configuration. Fields are read directly; only the loader
 * writes them. Strings are owned by the conf. */
typedef struct dq_conf_s {
        char *log_level;

        char *topic_jobs;
        char *topic_dlq;
        char *topic_delay_prefix;
        char *delay_tiers; /* "5s,30s,5m,1h" */
        int64_t delay_tier_ms[DQ_CONF_MAX_TIERS];
        int delay_tier_cnt;
        int64_t job_max_bytes;
        int64_t schedule_max_ahead_ms;

        char *redis_host;
        int64_t redis_port;
        char *redis_username;
        char *redis_password;
        int64_t redis_db;
        char *redis_namespace;
        int64_t redis_timeout_ms;
        bool redis_allow_unsafe;
        int64_t redis_connections;
        int64_t idempotency_retention_ms;

        int64_t produce_timeout_ms;

        int64_t max_attempts;
        int64_t backoff_base_ms;
        int64_t backoff_max_ms;
        int64_t lease_ms;
        int64_t drain_timeout_ms;
        int64_t batch_size;
        int64_t summary_interval_ms;
        int64_t critical_after_ms;
        char *worker_id;
        int64_t max_in_flight;
        int64_t handler_threads;
        int64_t handler_timeout_ms;
        int64_t max_pending_per_partition;
        int64_t commit_interval_ms;
        bool debug_faults;
        int64_t http_port;
        char *http_address;
        int64_t http_max_connections;
        int64_t http_max_connections_per_ip;
        int64_t http_timeout_ms;
        int64_t stats_interval_ms;

        int64_t plan_interval_ms;
        char *plan_scope_filter;
        int64_t plan_scan_max;
        int64_t plan_batch;
        dq_conf_policy_t plan_candidates;
        dq_conf_policy_t plan_episodes;
        dq_conf_policy_t plan_principles;

        char *llm_base_url;
        char *llm_model;
        char *llm_api_key;
        char *llm_max_tokens_field;
        int64_t llm_seed;
        int64_t llm_connect_timeout_ms;
        int64_t llm_timeout_ms;
        int64_t llm_concurrency;
        char *llm_prompt_file;
        char *llm_allowed_signers;
        int64_t llm_circuit_open_ms;

        dq_conf_kv_t *kafka;
        size_t kafka_cnt;
} dq_conf_t;

/* A conf holding every default. NULL on out of memory. */
dq_conf_t *dq_conf_new(void);

/* Frees conf and all it owns; NULL is a no-op. */
void dq_conf_destroy(dq_conf_t *conf);

/* Sets one key ("redis.port", "kafka.bootstrap.servers") from its text
 * value. origin ("file.properties:12", "env DECAYQ_REDIS_PORT", "-X")
 * prefixes any error in errstr. */
dq_err_t dq_conf_set(dq_conf_t *conf, const char *key, const char *value,
                     const char *origin, char *errstr, size_t errstr_size);

/* Loads a Java-properties file: "key=value", "key: value" or "key value",
 * '#' and '!' comments, backslash line continuation. Errors read
 * "path:line: message". */
dq_err_t dq_conf_load_file(dq_conf_t *conf, const char *path, char *errstr,
                           size_t errstr_size);

/* Applies DECAYQ_* variables: DECAYQ_REDIS_PORT sets redis.port, and
 * DECAYQ_KAFKA_SASL_USERNAME sets kafka.sasl.username. Variables that
 * name no key are ignored. */
dq_err_t dq_conf_load_env(dq_conf_t *conf, char *errstr, size_t errstr_size);

/* The usual order: defaults, then path (when not NULL), then environment,
 * then each "key=value" of overrides (cnt of them). Returns a new conf, or
 * NULL with errstr set. */
dq_conf_t *dq_conf_load(const char *path, char *const *overrides, int cnt,
                        char *errstr, size_t errstr_size);

/* Copies one kafka.* pair into rk_conf. DQ_ERR_INVALID with errstr
 * "<origin>: kafka.<key>: <librdkafka's reason, on one line>". */
dq_err_t dq_conf_kafka_apply_one(const dq_conf_kv_t *kv,
                                 rd_kafka_conf_t *rk_conf, char *errstr,
                                 size_t errstr_size);

/* Copies every kafka.* pair into rk_conf, as dq_conf_kafka_apply_one(). */
dq_err_t dq_conf_kafka_apply(const dq_conf_t *conf, rd_kafka_conf_t *rk_conf,
                             char *errstr, size_t errstr_size);

/* The value of kafka.<key>, or NULL. */
const char *dq_conf_kafka_get(const dq_conf_t *conf, const char *key);

/* Prints the effective configuration as properties, secrets masked. */
void dq_conf_dump(const dq_conf_t *conf, FILE *fp);

/* Prints each key with its default and description, for --help. */
void dq_conf_describe(FILE *fp);

/* True when key's value must never be printed or logged. */
bool dq_conf_is_secret(const char *key);

#endif
