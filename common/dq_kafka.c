/* Kafka helpers: topic administration and record headers. */
#include "dq_kafka.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dq_conf.h"
#include "dq_text.h"
#include "dq_time.h"
#include "banned.h"

dq_err_t dq_kafka_set(rd_kafka_conf_t *k, const char *name, const char *value,
                      char *errstr, size_t errstr_size)
{
        if (rd_kafka_conf_set(k, name, value, errstr, errstr_size) ==
            RD_KAFKA_CONF_OK)
                return DQ_OK;
        dq_chomp(errstr);
        return DQ_ERR_INVALID;
}

dq_err_t dq_kafka_require(const dq_conf_t *conf, rd_kafka_conf_t *k,
                          const char *name, const char *value, const char *why,
                          char *errstr, size_t errstr_size)
{
        /* Each key goes on a scratch conf that holds name=value: one that
         * changes it, by its name or an alias, is refused. Values compare in
         * librdkafka's own spelling ("all" and "-1" are one acks). A key
         * librdkafka refuses is left for dq_conf_kafka_apply() to report. */
        rd_kafka_conf_t *t = rd_kafka_conf_new();
        char want[64], got[64], e[256];
        size_t n = sizeof(want);
        dq_err_t err = DQ_OK;

        if (dq_kafka_set(t, name, value, errstr, errstr_size) ||
            rd_kafka_conf_get(t, name, want, &n) != RD_KAFKA_CONF_OK) {
                rd_kafka_conf_destroy(t);
                return DQ_ERR_INVALID;
        }
        for (size_t i = 0; i < conf->kafka_cnt && err == DQ_OK; i++) {
                const dq_conf_kv_t *kv = &conf->kafka[i];

                n = sizeof(got);
                if (rd_kafka_conf_set(t, kv->key, kv->value, e, sizeof(e)) ==
                        RD_KAFKA_CONF_OK &&
                    rd_kafka_conf_get(t, name, got, &n) == RD_KAFKA_CONF_OK &&
                    strcmp(want, got)) {
                        snprintf(errstr, errstr_size,
                                 "%s: kafka.%s=%s: decayq keeps %s=%s: %s",
                                 kv->origin, kv->key, kv->value, name, value,
                                 why);
                        err = DQ_ERR_INVALID;
                }
        }
        rd_kafka_conf_destroy(t);
        return err ? err : dq_kafka_set(k, name, value, errstr, errstr_size);
}

dq_err_t dq_kafka_conf_prefetch(rd_kafka_conf_t *k, char *errstr,
                                size_t errstr_size)
{
        /* librdkafka's defaults (64 MiB queued, 50 MiB per fetch) let a
         * deep backlog fill the process's memory. Before librdkafka 2.2
         * (fetch.queue.backoff.ms), a partition found over either bound is
         * not fetched again for about a second, so the prefetch must hold
         * enough to keep the loop fed meanwhile: a deep backlog ran at
         * 11,000 jobs/s with 2 MiB and 1,000 messages, 13,800 with 3 MiB
         * (bench/RESULTS.md).
         *
         * Each fetch lands whole on top of the prefetch, whatever is queued,
         * so a fetch is kept to 256 KiB: 1 MiB fetches held 12-13 MiB more of
         * the consumer's RSS and were no faster. The broker still returns a
         * first batch larger than fetch.max.bytes, so a job at the size
         * limit is read all the same. librdkafka refuses a fetch.max.bytes
         * below message.max.bytes, which on a consumer bounds only the
         * requests it sends (its copies go through their own producer). */
        static const char *const kv[][2] = {
            {"queued.max.messages.kbytes", "3072"},
            {"queued.min.messages", "100000"},
            {"message.max.bytes", "262144"},
            {"fetch.max.bytes", "262144"},
        };

        for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
                if (dq_kafka_set(k, kv[i][0], kv[i][1], errstr, errstr_size) !=
                    DQ_OK)
                        return DQ_ERR_INVALID;
        return DQ_OK;
}

static long long conf_num(rd_kafka_conf_t *k, const char *name)
{
        char v[32];
        size_t n = sizeof(v);

        if (rd_kafka_conf_get(k, name, v, &n) != RD_KAFKA_CONF_OK)
                return -1;
        return strtoll(v, NULL, 10);
}

/* Keeps k's fetch.max.bytes no smaller than its message.max.bytes, which
 * librdkafka requires of a consumer, when the user set just one of them
 * (fetch_set, msg_set): the default of the other follows it. Both set, and
 * in conflict, are left for librdkafka to refuse. */
static dq_err_t fetch_fit(rd_kafka_conf_t *k, bool fetch_set, bool msg_set,
                          char *errstr, size_t errstr_size)
{
        long long msg = conf_num(k, "message.max.bytes");
        long long fetch = conf_num(k, "fetch.max.bytes");
        const char *name;
        char v[32], rerr[256];

        if (fetch >= msg || (fetch_set && msg_set))
                return DQ_OK;
        /* The one the user set stands; the default of the other follows. */
        name = fetch_set ? "message.max.bytes" : "fetch.max.bytes";
        snprintf(v, sizeof(v), "%lld", fetch_set ? fetch : msg);
        if (dq_kafka_set(k, name, v, rerr, sizeof(rerr))) {
                snprintf(errstr, errstr_size,
                         "kafka.%s=%lld: the consumer's %s cannot follow it: "
                         "%s",
                         fetch_set ? "fetch.max.bytes" : "message.max.bytes",
                         fetch_set ? fetch : msg, name, rerr);
                return DQ_ERR_INVALID;
        }
        return DQ_OK;
}

dq_err_t dq_kafka_consumer_conf(const dq_conf_t *conf, rd_kafka_conf_t *k,
                                char *errstr, size_t errstr_size)
{
        if (dq_kafka_conf_prefetch(k, errstr, errstr_size) != DQ_OK ||
            dq_conf_kafka_apply(conf, k, errstr, errstr_size) != DQ_OK)
                return DQ_ERR_INVALID;
        return fetch_fit(k, dq_conf_kafka_get(conf, "fetch.max.bytes") != NULL,
                         dq_conf_kafka_get(conf, "message.max.bytes") != NULL,
                         errstr, errstr_size);
}

/* True when every topic is in rk's metadata, with its partitions led. */
static bool all_visible(rd_kafka_t *rk, const char *const *topics, size_t cnt)
{
        const struct rd_kafka_metadata *md;
        size_t seen = 0;

        if (rd_kafka_metadata(rk, 1, NULL, &md, 2000))
                return false;
        for (size_t i = 0; i < cnt; i++) {
                for (int t = 0; t < md->topic_cnt; t++) {
                        const struct rd_kafka_metadata_topic *mt =
                            &md->topics[t];
                        bool led = !mt->err && mt->partition_cnt > 0;

                        if (strcmp(mt->topic, topics[i]))
                                continue;
                        for (int p = 0; led && p < mt->partition_cnt; p++)
                                led = mt->partitions[p].leader >= 0 &&
                                      !mt->partitions[p].err;
                        seen += led;
                        break;
                }
        }
        rd_kafka_metadata_destroy(md);
        return seen == cnt;
}

dq_err_t dq_kafka_create_topics(rd_kafka_t *rk, const char *const *topics,
                                size_t cnt, int partitions,
                                int64_t max_message_bytes, int timeout_ms,
                                char *errstr, size_t errstr_size)
{
        char max[32];
        rd_kafka_NewTopic_t **nt = NULL;
        rd_kafka_queue_t *q = NULL;
        rd_kafka_AdminOptions_t *opts = NULL;
        rd_kafka_event_t *ev = NULL;
        dq_err_t ret = DQ_ERR_UNAVAILABLE;
        size_t i, created = 0;

        nt = calloc(cnt, sizeof(*nt));
        if (!nt) {
                snprintf(errstr, errstr_size, "out of memory");
                return DQ_ERR_INTERNAL;
        }
        for (i = 0; i < cnt; i++) {
                nt[i] = rd_kafka_NewTopic_new(topics[i], partitions, 1, errstr,
                                              errstr_size);
                if (!nt[i]) {
                        ret = DQ_ERR_INVALID;
                        goto done;
                }
                created++;
                snprintf(max, sizeof(max), "%lld",
                         (long long)max_message_bytes);
                if (max_message_bytes > 0 &&
                    rd_kafka_NewTopic_set_config(nt[i], "max.message.bytes",
                                                 max)) {
                        snprintf(errstr, errstr_size,
                                 "create topic '%s': cannot set "
                                 "max.message.bytes",
                                 topics[i]);
                        ret = DQ_ERR_INVALID;
                        goto done;
                }
        }

        q = rd_kafka_queue_new(rk);
        opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
        rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, NULL, 0);
        rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, NULL, 0);
        rd_kafka_CreateTopics(rk, nt, cnt, opts, q);

        ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
        if (!ev) {
                snprintf(errstr, errstr_size, "create topics: timed out");
                ret = DQ_ERR_TIMEOUT;
                goto done;
        }
        if (rd_kafka_event_error(ev)) {
                snprintf(errstr, errstr_size, "create topics: %s",
                         rd_kafka_event_error_string(ev));
                goto done;
        }

        {
                const rd_kafka_CreateTopics_result_t *res =
                    rd_kafka_event_CreateTopics_result(ev);
                size_t rcnt;
                const rd_kafka_topic_result_t **tr =
                    rd_kafka_CreateTopics_result_topics(res, &rcnt);
                for (i = 0; i < rcnt; i++) {
                        rd_kafka_resp_err_t e =
                            rd_kafka_topic_result_error(tr[i]);
                        if (e && e != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
                                snprintf(
                                    errstr, errstr_size,
                                    "create topic '%s': %s",
                                    rd_kafka_topic_result_name(tr[i]),
                                    rd_kafka_topic_result_error_string(tr[i]));
                                goto done;
                        }
                }
        }
        /* A created topic reaches the metadata of every broker a moment
         * later: a client started at once would find it missing. */
        for (int64_t until = dq_mono_ms() + timeout_ms;;) {
                if (all_visible(rk, topics, cnt))
                        break;
                if (dq_mono_ms() >= until) {
                        snprintf(errstr, errstr_size,
                                 "create topics: created, but not in the "
                                 "metadata within %d ms",
                                 timeout_ms);
                        ret = DQ_ERR_TIMEOUT;
                        goto done;
                }
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
        }
        ret = DQ_OK;

done:
        if (ev)
                rd_kafka_event_destroy(ev);
        if (opts)
                rd_kafka_AdminOptions_destroy(opts);
        if (q)
                rd_kafka_queue_destroy(q);
        for (i = 0; i < created; i++)
                rd_kafka_NewTopic_destroy(nt[i]);
        free(nt);
        return ret;
}

dq_err_t dq_kafka_topic_max_bytes(rd_kafka_t *rk, const char *const *topics,
                                  size_t cnt, int64_t *bytes, int timeout_ms,
                                  char *errstr, size_t errstr_size)
{
        rd_kafka_ConfigResource_t **res = calloc(cnt ? cnt : 1, sizeof(*res));
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_AdminOptions_t *opts =
            rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
        rd_kafka_event_t *ev = NULL;
        dq_err_t ret = DQ_ERR_UNAVAILABLE;
        size_t i, n = 0;

        for (i = 0; i < cnt; i++)
                bytes[i] = -1;
        if (!res) {
                snprintf(errstr, errstr_size, "out of memory");
                ret = DQ_ERR_INTERNAL;
                goto done;
        }
        for (n = 0; n < cnt; n++)
                res[n] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC,
                                                     topics[n]);
        rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, NULL, 0);
        rd_kafka_DescribeConfigs(rk, res, cnt, opts, q);
        ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
        if (!ev) {
                snprintf(errstr, errstr_size, "describe configs: timed out");
                ret = DQ_ERR_TIMEOUT;
                goto done;
        }
        if (rd_kafka_event_error(ev)) {
                snprintf(errstr, errstr_size, "describe configs: %s",
                         rd_kafka_event_error_string(ev));
                goto done;
        }
        {
                const rd_kafka_DescribeConfigs_result_t *r =
                    rd_kafka_event_DescribeConfigs_result(ev);
                size_t rcnt, ccnt;
                const rd_kafka_ConfigResource_t **rr =
                    rd_kafka_DescribeConfigs_result_resources(r, &rcnt);

                for (size_t k = 0; k < rcnt; k++) {
                        const char *name = rd_kafka_ConfigResource_name(rr[k]);
                        const rd_kafka_ConfigEntry_t **ce =
                            rd_kafka_ConfigResource_configs(rr[k], &ccnt);
                        for (i = 0; i < cnt && strcmp(topics[i], name); i++)
                                ;
                        for (size_t j = 0; i < cnt && j < ccnt; j++) {
                                const char *v =
                                    rd_kafka_ConfigEntry_value(ce[j]);
                                if (!strcmp(rd_kafka_ConfigEntry_name(ce[j]),
                                            "max.message.bytes") &&
                                    v)
                                        bytes[i] = strtoll(v, NULL, 10);
                        }
                }
        }
        ret = DQ_OK;
        for (i = 0; i < cnt; i++)
                if (bytes[i] <= 0) {
                        snprintf(errstr, errstr_size,
                                 "describe configs: no max.message.bytes for "
                                 "topic %s",
                                 topics[i]);
                        ret = DQ_ERR_UNAVAILABLE;
                }
done:
        if (ev)
                rd_kafka_event_destroy(ev);
        rd_kafka_AdminOptions_destroy(opts);
        rd_kafka_queue_destroy(q);
        for (i = 0; i < n; i++)
                rd_kafka_ConfigResource_destroy(res[i]);
        free(res);
        return ret;
}

void dq_kafka_log_offsets(rd_kafka_t *rk,
                          const rd_kafka_topic_partition_list_t *parts,
                          int64_t where, int timeout_ms, int64_t *out)
{
        rd_kafka_topic_partition_list_t *l =
            rd_kafka_topic_partition_list_copy(parts);

        /* ListOffsets takes -1 (latest) and -2 (earliest) as times. */
        for (int i = 0; i < l->cnt; i++)
                l->elems[i].offset = where;
        if (rd_kafka_offsets_for_times(rk, l, timeout_ms))
                for (int i = 0; i < l->cnt; i++)
                        l->elems[i].offset = -1;
        for (int i = 0; i < l->cnt; i++)
                out[i] = l->elems[i].err ? -1 : l->elems[i].offset;
        rd_kafka_topic_partition_list_destroy(l);
}
