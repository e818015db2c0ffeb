/* Producer library over librdkafka. */
#include "dq_producer.h"

#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dq_envelope.h"
#include "dq_kafka.h"
#include "dq_kafka_produce.h"
#include "dq_time.h"
#include "banned.h"

struct dq_producer_s {
        rd_kafka_t *rk;
        char *topic;
        size_t max_bytes;
        int64_t max_ahead_ms;
        dq_delivery_cb_t *cb;
        void *opaque;
        int outstanding;
};

/* Per-message state, freed in the delivery report. */
typedef struct dq_msg_s {
        char job_id[DQ_ULID_LEN + 1];
        void *msg_opaque;
} dq_msg_t;

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
        dq_producer_t *p = opaque;
        dq_msg_t *msg = m->_private;
        dq_delivery_t d = {
            .job_id = msg->job_id,
            .err = DQ_OK,
            .errstr = NULL,
            .partition = m->partition,
            .offset = m->offset,
            .msg_opaque = msg->msg_opaque,
        };

        (void)rk;
        if (m->err) {
                d.err = m->err == RD_KAFKA_RESP_ERR__MSG_TIMED_OUT ||
                                m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
                                m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT
                            ? DQ_ERR_TIMEOUT
                            : DQ_ERR_UNAVAILABLE;
                d.errstr = rd_kafka_err2str(m->err);
        }
        p->outstanding--;
        if (p->cb)
                p->cb(&d, p->opaque);
        free(msg);
}

dq_producer_t *dq_producer_new(const dq_conf_t *conf, dq_delivery_cb_t *cb,
                               void *opaque, char *errstr, size_t errstr_size)
{
        dq_producer_t *p = calloc(1, sizeof(*p));
        rd_kafka_conf_t *rkc = NULL;
        char tmo[32];

        if (!p) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        p->cb = cb;
        p->opaque = opaque;
        p->max_bytes = (size_t)conf->job_max_bytes;
        p->max_ahead_ms = conf->schedule_max_ahead_ms;
        if (!dq_conf_kafka_get(conf, "bootstrap.servers")) {
                /* Else librdkafka waits out message.timeout.ms in
                 * silence. */
                snprintf(errstr, errstr_size,
                         "kafka.bootstrap.servers is not set (-X "
                         "kafka.bootstrap.servers=HOST:PORT, or "
                         "DECAYQ_KAFKA_BOOTSTRAP_SERVERS)");
                free(p);
                return NULL;
        }
        p->topic = strdup(conf->topic_jobs);
        if (!p->topic)
                goto err;

        rkc = rd_kafka_conf_new();
        /* Defaults a user may override... */
        snprintf(tmo, sizeof(tmo), "%lld", (long long)conf->produce_timeout_ms);
        if (dq_kafka_set(rkc, "message.timeout.ms", tmo, errstr, errstr_size) ||
            dq_kafka_set(rkc, "linger.ms", "5", errstr, errstr_size) ||
            dq_kafka_set(rkc, "compression.codec", "lz4", errstr, errstr_size))
                goto err;
        /* ...and guarantees they may not. */
        if (dq_kafka_producer_conf(conf, rkc, errstr, errstr_size))
                goto err;
        rd_kafka_conf_set_dr_msg_cb(rkc, dr_msg_cb);
        rd_kafka_conf_set_opaque(rkc, p);

        p->rk = rd_kafka_new(RD_KAFKA_PRODUCER, rkc, errstr, errstr_size);
        if (!p->rk)
                goto err;
        return p; /* rkc is now owned by p->rk */

err:
        if (!p->rk && rkc)
                rd_kafka_conf_destroy(rkc);
        free(p->topic);
        free(p);
        return NULL;
}

static dq_err_t produce(dq_producer_t *p, const dq_job_t *job, const char *buf,
                        size_t len, void *msg_opaque, char *errstr,
                        size_t errstr_size)
{
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(2);
        dq_envelope_t env = {0};
        dq_kafka_record_t rec = {
            .topic = p->topic,
            .partition = RD_KAFKA_PARTITION_UA,
            .key = job->scope,
            .key_len = strlen(job->scope),
            .value = buf,
            .len = len,
        };
        dq_msg_t *msg = malloc(sizeof(*msg));
        rd_kafka_resp_err_t err;

        if (!msg || !hdrs) {
                free(msg);
                if (hdrs)
                        rd_kafka_headers_destroy(hdrs);
                snprintf(errstr, errstr_size, "out of memory");
                return DQ_ERR_INTERNAL;
        }
        memcpy(msg->job_id, job->id, sizeof(msg->job_id));
        msg->msg_opaque = msg_opaque;
        dq_envelope_set_str(&env, DQ_ENV_SCHEMA, DQ_ENVELOPE_SCHEMA);
        if (job->trace_id)
                dq_envelope_set_str(&env, DQ_ENV_TRACE_ID, job->trace_id);
        rec.headers = hdrs;
        rec.opaque = msg;
        if (dq_envelope_encode(&env, hdrs))
                err = RD_KAFKA_RESP_ERR__FAIL;
        else
                err = dq_kafka_produce(p->rk, &rec);
        if (err) {
                rd_kafka_headers_destroy(hdrs);
                free(msg);
                snprintf(errstr, errstr_size, "produce: %s",
                         rd_kafka_err2str(err));
                return DQ_ERR_UNAVAILABLE;
        }
        p->outstanding++; /* hdrs and msg are now owned by librdkafka */
        return DQ_OK;
}

dq_err_t dq_producer_send(dq_producer_t *p, const char *buf, size_t len,
                          void *msg_opaque, char *job_idp, dq_reject_t *rej,
                          char *errstr, size_t errstr_size)
{
        dq_job_t *job = dq_job_parse(buf, len, p->max_bytes, rej);
        dq_err_t err;

        if (job &&
            !dq_job_check_schedule(job, dq_now_ms(), p->max_ahead_ms, rej)) {
                dq_job_destroy(job);
                job = NULL;
        }
        if (!job) {
                snprintf(errstr, errstr_size, "%s: %s", rej->code,
                         rej->message);
                return DQ_ERR_INVALID;
        }
        if (job_idp)
                memcpy(job_idp, job->id, DQ_ULID_LEN + 1);
        err = produce(p, job, buf, len, msg_opaque, errstr, errstr_size);
        dq_job_destroy(job);
        return err;
}

dq_err_t dq_producer_send_job(dq_producer_t *p, const dq_job_t *job,
                              void *msg_opaque, dq_reject_t *rej, char *errstr,
                              size_t errstr_size)
{
        size_t len;
        char *buf;
        dq_err_t err;

        if (!dq_job_validate(job, rej) ||
            !dq_job_check_schedule(job, dq_now_ms(), p->max_ahead_ms, rej)) {
                snprintf(errstr, errstr_size, "%s: %s", rej->code,
                         rej->message);
                return DQ_ERR_INVALID;
        }
        buf = dq_job_serialize(job, &len);
        if (!buf) {
                snprintf(errstr, errstr_size, "out of memory");
                return DQ_ERR_INTERNAL;
        }
        /* Check what goes on the wire exactly as a consumer will. */
        if (len > p->max_bytes) {
                free(buf);
                rej->err = DQ_ERR_INVALID;
                rej->code = "decay.job.too_large";
                snprintf(rej->message, sizeof(rej->message),
                         "message is %zu bytes, at most %zu allowed", len,
                         p->max_bytes);
                snprintf(errstr, errstr_size, "%s: %s", rej->code,
                         rej->message);
                return DQ_ERR_INVALID;
        }
        err = produce(p, job, buf, len, msg_opaque, errstr, errstr_size);
        free(buf);
        return err;
}

void dq_producer_poll(dq_producer_t *p, int timeout_ms)
{
        rd_kafka_poll(p->rk, timeout_ms);
}

int dq_producer_outstanding(const dq_producer_t *p)
{
        return p->outstanding;
}

dq_err_t dq_producer_flush(dq_producer_t *p, int timeout_ms)
{
        rd_kafka_flush(p->rk, timeout_ms);
        rd_kafka_poll(p->rk, 0);
        if (p->outstanding == 0)
                return DQ_OK;
        rd_kafka_purge(p->rk,
                       RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        /* Purged messages are reported on the next poll. */
        for (int i = 0; i < 50 && p->outstanding > 0; i++)
                rd_kafka_poll(p->rk, 100);
        return DQ_ERR_TIMEOUT;
}

void dq_producer_destroy(dq_producer_t *p)
{
        if (!p)
                return;
        if (p->outstanding)
                dq_producer_flush(p, 0);
        rd_kafka_destroy(p->rk);
        free(p->topic);
        free(p);
}
