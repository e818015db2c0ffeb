/* See dq_kafka_produce.h. */
#include "dq_kafka_produce.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "dq_kafka.h"
#include "banned.h"

rd_kafka_resp_err_t dq_kafka_produce(rd_kafka_t *rk, const dq_kafka_record_t *r)
{
        rd_kafka_resp_err_t err;

        for (;;) {
                err = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(r->topic),
                    RD_KAFKA_V_PARTITION(r->partition),
                    RD_KAFKA_V_KEY(r->key, r->key_len),
                    RD_KAFKA_V_VALUE((void *)r->value, r->len),
                    RD_KAFKA_V_HEADERS(r->headers),
                    RD_KAFKA_V_OPAQUE(r->opaque),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
                        return err;
                /* Back-pressure: delivery reports make room. */
                rd_kafka_poll(rk, DQ_KAFKA_QUEUE_FULL_POLL_MS);
        }
}

/* Keys a shared configuration may hold for the group consumer; a producer
 * would warn about each. */
static bool consumer_only(const char *key)
{
        static const char *const keys[] = {
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "partition.assignment.strategy",
            "auto.offset.reset",
            "enable.auto.commit",
            "enable.auto.offset.store",
            "auto.commit.interval.ms",
            "max.poll.interval.ms",
            "isolation.level",
            "enable.partition.eof",
            "check.crcs",
            "coordinator.query.interval.ms",
            "statistics.interval.ms",
        };
        if (!strncmp(key, "group.", 6) || !strncmp(key, "fetch.", 6) ||
            !strncmp(key, "queued.", 7))
                return true;
        for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++)
                if (!strcmp(key, keys[i]))
                        return true;
        return false;
}

dq_err_t dq_kafka_producer_conf(const dq_conf_t *conf, rd_kafka_conf_t *k,
                                char *errstr, size_t errstr_size)
{
        for (size_t i = 0; i < conf->kafka_cnt; i++) {
                const dq_conf_kv_t *kv = &conf->kafka[i];

                if (consumer_only(kv->key) ||
                    !strcmp(kv->key, "transactional.id"))
                        continue;
                if (dq_conf_kafka_apply_one(kv, k, errstr, errstr_size))
                        return DQ_ERR_INVALID;
        }
        /* No duplicates, no loss. */
        if (dq_kafka_require(conf, k, "enable.idempotence", "true",
                             "a send retried must never write a job twice",
                             errstr, errstr_size) ||
            dq_kafka_require(conf, k, "acks", "all",
                             "a job counts as sent only once every in-sync "
                             "replica has it",
                             errstr, errstr_size))
                return DQ_ERR_INVALID;
        return DQ_OK;
}
