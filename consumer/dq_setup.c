/* Set-up: the group consumer and the copy producer with the settings
 * that carry the guarantees, the delay tiers' topic names, and the checks
 * of the topics (existence, partition counts, record size). */
#define _GNU_SOURCE
#include "dq_consumer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_kafka.h"
#include "dq_kafka_produce.h"
#include "dq_log.h"
#include "banned.h"

#define OFFSETS_WHY                                                       \
        "decay-consumer stores and commits offsets itself, over settled " \
        "messages only"

rd_kafka_t *dq_setup_consumer(dq_consumer_t *c, char *errstr,
                              size_t errstr_size)
{
        rd_kafka_conf_t *k = rd_kafka_conf_new();
        rd_kafka_t *rk;

        /* Defaults a user may override: eager rebalancing (librdkafka 2.0's
         * cooperative protocol has known bugs), reading a new group from
         * the start of the topics, and a small prefetch (set with the
         * user's keys by dq_kafka_consumer_conf()). */
        if (dq_kafka_set(k, "group.id", "decayq", errstr, errstr_size) ||
            dq_kafka_set(k, "partition.assignment.strategy", "range", errstr,
                         errstr_size) ||
            dq_kafka_set(k, "auto.offset.reset", "earliest", errstr,
                         errstr_size) ||
            dq_kafka_set(k, "topic.metadata.refresh.interval.ms", "30000",
                         errstr, errstr_size) ||
            dq_kafka_consumer_conf(c->conf, k, errstr, errstr_size) != DQ_OK)
                goto err;
        /* Guarantees they may not, and a key that asks otherwise is
         * refused: offsets move only over settled messages (G3), stored
         * and committed by this code. */
        if (dq_kafka_require(c->conf, k, "enable.auto.offset.store", "false",
                             OFFSETS_WHY, errstr, errstr_size) ||
            dq_kafka_require(c->conf, k, "enable.auto.commit", "false",
                             OFFSETS_WHY, errstr, errstr_size) ||
            dq_kafka_require(c->conf, k, "enable.partition.eof", "false",
                             "the consumer's loop takes no end-of-partition "
                             "events",
                             errstr, errstr_size))
                goto err;
        /* Statistics feed the lag metrics when someone can read them. */
        if (c->http && c->conf->stats_interval_ms > 0 &&
            !dq_conf_kafka_get(c->conf, "statistics.interval.ms")) {
                char ms[32];
                snprintf(ms, sizeof(ms), "%lld",
                         (long long)c->conf->stats_interval_ms);
                if (dq_kafka_set(k, "statistics.interval.ms", ms, errstr,
                                 errstr_size))
                        goto err;
        }
        /* A fetch's answer may take fetch.wait.max.ms to come. */
        char wait[32];
        size_t wait_size = sizeof(wait);
        long long silent_ms = rd_kafka_conf_get(k, "fetch.wait.max.ms", wait,
                                                &wait_size) == RD_KAFKA_CONF_OK
                                  ? strtoll(wait, NULL, 10) + 5000
                                  : 0;
        if (silent_ms > DQ_METRICS_SILENT_AFTER)
                dq_metrics_silent_after(c->metrics, silent_ms);
        rd_kafka_conf_set_stats_cb(k, dq_stats_cb);
        rd_kafka_conf_set_error_cb(k, dq_error_cb);
        rd_kafka_conf_set_rebalance_cb(k, dq_rebalance_cb);
        rd_kafka_conf_set_offset_commit_cb(k, dq_commit_cb);
        rd_kafka_conf_set_opaque(k, c);
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, k, errstr, errstr_size);
        if (!rk)
                goto err;
        return rk;
err:
        rd_kafka_conf_destroy(k);
        return NULL;
}

rd_kafka_t *dq_setup_producer(dq_consumer_t *c, char *errstr,
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
        if (dq_kafka_set(k, "message.timeout.ms", tmo, errstr, errstr_size) ||
            dq_kafka_set(k, "linger.ms", "5", errstr, errstr_size) ||
            dq_kafka_producer_conf(c->conf, k, errstr, errstr_size) ||
            dq_kafka_set(k, "message.max.bytes", max, errstr, errstr_size))
                goto err;
        rd_kafka_conf_set_dr_msg_cb(k, dq_copy_dr_cb);
        rd_kafka_conf_set_error_cb(k, dq_error_cb);
        rd_kafka_conf_set_opaque(k, c);
        pk = rd_kafka_new(RD_KAFKA_PRODUCER, k, errstr, errstr_size);
        if (!pk)
                goto err;
        return pk;
err:
        rd_kafka_conf_destroy(k);
        return NULL;
}

int dq_setup_topics(dq_consumer_t *c, int create, char *errstr,
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

int dq_setup_tiers(dq_consumer_t *c)
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
