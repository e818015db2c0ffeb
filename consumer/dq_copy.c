/* Copies to the delay tiers and the DLQ. A copy keeps its record's key,
 * payload and partition number, and carries the provenance headers of
 * DESIGN.md in place of the record's own. Its message settles when its
 * delivery report succeeds (a dead letter's state becomes dead then, G9);
 * a failed send goes again after a capped backoff, never dropped. */
#include "dq_consumer_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/sha.h>

#include "dq_envelope.h"
#include "dq_kafka_produce.h"
#include "dq_log.h"
#include "dq_retry.h"
#include "dq_time.h"
#include "banned.h"

#define COPY_FRAMING     512  /* a record's own framing in its batch */
#define COPY_BACKOFF_MAX 5000 /* ms between sends of a failing copy */
#define COPY_KEY_KEPT    1024 /* a cut copy keeps this much of its key */

/* The envelope of a copy. It replaces the record's earlier headers, so a
 * record's size stays bounded however often it hops. */
static void copy_envelope(dq_consumer_t *c, const dq_item_t *it,
                          dq_envelope_t *e)
{
        dq_envelope_t in;

        dq_envelope_decode_msg(&in, it->msg);
        memset(e, 0, sizeof(*e));
        if (dq_envelope_has(&in, DQ_ENV_SCHEMA))
                dq_envelope_set_str(e, DQ_ENV_SCHEMA, in.schema);
        if (dq_envelope_has(&in, DQ_ENV_TRACE_ID))
                dq_envelope_set_str(e, DQ_ENV_TRACE_ID, in.trace_id);
        dq_envelope_set_int(e, DQ_ENV_ATTEMPTS, it->attempts);
        dq_envelope_set_int(e, DQ_ENV_NOT_BEFORE,
                            it->copy == DQ_COPY_DELAY ? it->not_before
                                                      : dq_now_ms());
        dq_envelope_set_str(e, DQ_ENV_ORIGINAL_TOPIC, it->orig_topic);
        dq_envelope_set_int(e, DQ_ENV_ORIGINAL_PARTITION, it->orig_partition);
        dq_envelope_set_int(e, DQ_ENV_ORIGINAL_OFFSET, it->orig_offset);
        dq_envelope_set_int(e, DQ_ENV_ORIGINAL_TIMESTAMP, it->orig_ts);
        dq_envelope_set_str(e, DQ_ENV_CONSUMER_GROUP, c->group);
        dq_envelope_set_str(e, DQ_ENV_WORKER, c->worker);
        if (it->err_class) {
                dq_envelope_set_str(e, DQ_ENV_ERROR_CLASS, it->err_class);
                dq_envelope_set_str(e, DQ_ENV_ERROR_CODE, it->err_code);
                dq_envelope_set_str(e, DQ_ENV_ERROR_MESSAGE, it->err_message);
        }
        if (it->first_failed_at)
                dq_envelope_set_int(e, DQ_ENV_FIRST_FAILED_AT,
                                    it->first_failed_at);
        dq_envelope_set_int(e, DQ_ENV_REPLAY_COUNT, it->replay_count);
}

/* The header set of e, or NULL when a header could not be added. */
static rd_kafka_headers_t *headers_of(const dq_envelope_t *e)
{
        rd_kafka_headers_t *h = rd_kafka_headers_new(DQ_ENV__CNT);

        if (dq_envelope_encode(e, h) == 0)
                return h;
        rd_kafka_headers_destroy(h);
        return NULL;
}

/* What a header set adds to a record, with room for its framing. */
static size_t hdrs_size(const rd_kafka_headers_t *h)
{
        const char *name;
        const void *v;
        size_t len, n = 0;

        for (size_t i = 0; !rd_kafka_header_get_all(h, i, &name, &v, &len); i++)
                n += strlen(name) + len + 16;
        return n;
}

/* Cuts a DLQ copy that would not fit in max bytes (G7: it reaches the DLQ
 * all the same): the key to COPY_KEY_KEPT bytes, then the payload to what
 * is left. Headers say what was cut, with the original sizes and the
 * payload's SHA-256, so that an operator can match it with the original.
 * Returns the copy's new header set (NULL: see headers_of()). */
static rd_kafka_headers_t *cut_copy(const dq_item_t *it, dq_envelope_t *e,
                                    int64_t max, size_t *key_len, size_t *len)
{
        unsigned char md[SHA256_DIGEST_LENGTH];
        char hex[2 * SHA256_DIGEST_LENGTH + 1];
        rd_kafka_headers_t *h;
        int64_t room;

        SHA256(it->msg->payload, it->msg->len, md);
        for (size_t i = 0; i < sizeof(md); i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
        dq_envelope_set_str(e, DQ_ENV_TRUNCATED,
                            *key_len > COPY_KEY_KEPT ? "key,payload"
                                                     : "payload");
        dq_envelope_set_int(e, DQ_ENV_ORIGINAL_SIZE, (int64_t)it->msg->len);
        dq_envelope_set_int(e, DQ_ENV_ORIGINAL_KEY_SIZE, (int64_t)*key_len);
        dq_envelope_set_str(e, DQ_ENV_ORIGINAL_SHA256, hex);
        if (!(h = headers_of(e)))
                return NULL;
        if (*key_len > COPY_KEY_KEPT)
                *key_len = COPY_KEY_KEPT;
        room = max - (int64_t)(hdrs_size(h) + COPY_FRAMING + *key_len);
        *len = room <= 0 ? 0 : (size_t)room < *len ? (size_t)room : *len;
        return h;
}

/* A copy's send failed: it goes again after a capped backoff, never
 * dropped, and readiness says so until it is delivered. A copy too large
 * for its topic is cut (DLQ) or, as a delay copy cannot be cut, sent to
 * the DLQ instead. */
static void copy_failed(dq_consumer_t *c, dq_item_t *it,
                        rd_kafka_resp_err_t err)
{
        int64_t backoff =
            dq_capped_backoff(it->send_failures++, COPY_BACKOFF_MAX);

        if (err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE) {
                if (it->copy == DQ_COPY_DELAY) {
                        char msg[256];
                        snprintf(msg, sizeof(msg),
                                 "a %zu-byte delay copy does not fit in "
                                 "topic %s",
                                 it->msg->len + it->msg->key_len,
                                 c->tier_topics[it->tier]);
                        dq_copy_to_dlq(it, "fatal", "decay.copy.too_large", msg,
                                       it->epoch > 0);
                        backoff = 0;
                } else {
                        int64_t cur =
                            it->max_bytes ? it->max_bytes : c->copy_max;
                        it->max_bytes = cur / 2 > 4096 ? cur / 2 : 4096;
                        if (it->max_bytes < cur)
                                backoff = 0; /* smaller: try it at once */
                }
        }
        it->next_try = dq_mono_ms() + backoff;
        dq_warn("dispatch",
                "topic=%s partition=%d offset=%lld job=%s copy=%s "
                "produce=failed err=%s failures=%d action=retry "
                "retry_in_ms=%lld",
                it->topic, (int)it->partition, (long long)it->offset,
                dq_item_job_id(it), it->copy == DQ_COPY_DLQ ? "dlq" : "delay",
                rd_kafka_err2name(err), it->send_failures, (long long)backoff);
        dq_item_push(&c->redeliver, it);
}

/* Produces its copy; the delivery report finishes it (dq_copy_dr_cb). */
static void produce_copy(dq_consumer_t *c, dq_item_t *it)
{
        const char *topic = it->copy == DQ_COPY_DLQ ? c->conf->topic_dlq
                                                    : c->tier_topics[it->tier];
        size_t key_len = it->msg->key_len, len = it->msg->len;
        int64_t max = it->max_bytes ? it->max_bytes : c->copy_max;
        rd_kafka_resp_err_t err;
        rd_kafka_headers_t *h;
        dq_envelope_t e;

        copy_envelope(c, it, &e);
        h = headers_of(&e);
        if (h && it->copy == DQ_COPY_DLQ &&
            (int64_t)(key_len + len + hdrs_size(h) + COPY_FRAMING) > max) {
                rd_kafka_headers_destroy(h);
                h = cut_copy(it, &e, max, &key_len, &len);
                dq_warn("dispatch",
                        "topic=%s partition=%d offset=%lld job=%s "
                        "copy=dlq truncated=true original_bytes=%zu "
                        "kept_bytes=%zu",
                        it->topic, (int)it->partition, (long long)it->offset,
                        dq_item_job_id(it), it->msg->len, len);
        }
        if (!h) {
                copy_failed(c, it, RD_KAFKA_RESP_ERR__FAIL);
                return;
        }
        err = dq_kafka_produce(c->pk, &(dq_kafka_record_t){
                                          .topic = topic,
                                          .partition = it->orig_partition,
                                          .key = it->msg->key,
                                          .key_len = key_len,
                                          .value = it->msg->payload,
                                          .len = len,
                                          .headers = h,
                                          .opaque = it,
                                      });
        if (err) {
                rd_kafka_headers_destroy(h);
                copy_failed(c, it, err);
                return;
        }
        c->outstanding++;
        dq_debug("dispatch",
                 "topic=%s partition=%d offset=%lld job=%s to=%s "
                 "attempts=%lld class=%s code=%s",
                 it->topic, (int)it->partition, (long long)it->offset,
                 dq_item_job_id(it), topic, (long long)it->attempts,
                 it->err_class ? it->err_class : "-",
                 it->err_class ? it->err_code : "-");
}

void dq_copy_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
        dq_consumer_t *c = opaque;
        dq_item_t *it = m->_private;

        (void)rk;
        c->outstanding--;
        if (m->err) {
                copy_failed(c, it, m->err);
                return;
        }
        dq_item_push(&c->delivered, it);
}

void dq_copy_to_dlq(dq_item_t *it, const char *cls, const char *code,
                    const char *message, bool dead_after)
{
        it->copy = DQ_COPY_DLQ;
        it->err_class = cls;
        snprintf(it->err_code, sizeof(it->err_code), "%s", code);
        snprintf(it->err_message, sizeof(it->err_message), "%s", message);
        it->dead_after = dead_after;
        if (!it->first_failed_at)
                it->first_failed_at = dq_now_ms();
        it->outcome = DQ_OUTCOME_DEAD;
}

void dq_copy_to_delay(dq_consumer_t *c, dq_item_t *it, int64_t not_before,
                      dq_outcome_t outcome)
{
        it->copy = DQ_COPY_DELAY;
        it->not_before = not_before;
        it->tier = dq_tier_pick(c->conf->delay_tier_ms, c->conf->delay_tier_cnt,
                                not_before - dq_now_ms());
        it->outcome = outcome;
}

/* Finishes delivered copies: a dead-lettered job's state becomes dead now
 * that its DLQ copy exists (G9: the payload stays in Kafka until the job is
 * terminal); every other copy settles its message at once. Then sends again
 * the copies whose delivery failed. */
static void finish_delivered(dq_consumer_t *c)
{
        dq_item_t *list = c->delivered, *it, *next;
        dq_item_t **dead = NULL;
        size_t n = 0, cnt = 0;

        c->delivered = NULL;
        for (it = list; it; it = it->next)
                cnt++;
        if (cnt && !(dead = calloc(cnt, sizeof(*dead))))
                dq_oom();
        for (it = list; it; it = next) {
                next = it->next;
                if (it->dead_after && dq_item_part(c, it)) {
                        it->settle = (dq_settle_t){
                            .job = it->job,
                            .op = DQ_SETTLE_DEAD,
                            .epoch = it->epoch,
                            .error_class = it->err_class,
                            .error_code = it->err_code,
                            .error_message = it->err_message,
                        };
                        dead[n++] = it;
                } else {
                        dq_item_settle(c, it, it->outcome);
                }
        }
        if (n)
                dq_batch_settle(c, dead, n, NULL);
        free(dead);

        list = c->redeliver;
        c->redeliver = NULL;
        for (it = list; it; it = next) {
                next = it->next;
                if (!dq_item_part(c, it))
                        dq_item_abandon(c, it, "revoked");
                else if (dq_consumer_stopping(c))
                        dq_item_abandon(c, it, "shutdown");
                else if (it->next_try > dq_mono_ms())
                        dq_item_push(&c->redeliver, it); /* in its backoff */
                else
                        produce_copy(c, it);
        }
}

void dq_copy_serve(dq_consumer_t *c, int timeout_ms)
{
        rd_kafka_poll(c->pk, timeout_ms);
        if (c->delivered || c->redeliver)
                finish_delivered(c);
}

void dq_copy_produce(dq_consumer_t *c, dq_item_t *copies)
{
        dq_item_t *rev = NULL, *it, *next;

        for (it = copies; it; it = next) {
                next = it->next;
                it->next = rev;
                rev = it;
        }
        for (it = rev; it; it = next) {
                next = it->next;
                if (dq_item_part(c, it))
                        produce_copy(c, it);
                else
                        dq_item_free(it);
        }
}
