/* Proves the test harness: a real Kafka broker that stores committed group
 * offsets, and a real Redis server configured as decayq requires. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "dq_test.h"
#include "banned.h"

#define N_MSGS 200

/* Polls rk until want messages arrived or timeout_ms passed; marks seen[i]
 * for payload "msg-<i>". Returns the number of messages read. */
static int consume_into(rd_kafka_t *rk, int want, int timeout_ms, int *seen)
{
        long long deadline = dq_test_now_ms() + timeout_ms;
        int got = 0;

        while (got < want && dq_test_now_ms() < deadline) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
                if (!m)
                        continue;
                if (!m->err) {
                        int i;
                        char buf[32];
                        size_t len =
                            m->len < sizeof(buf) - 1 ? m->len : sizeof(buf) - 1;
                        memcpy(buf, m->payload, len);
                        buf[len] = '\0';
                        cr_assert_eq(sscanf(buf, "msg-%d", &i), 1,
                                     "unexpected payload %s", buf);
                        cr_assert(i >= 0 && i < N_MSGS);
                        seen[i]++;
                        got++;
                }
                rd_kafka_message_destroy(m);
        }
        return got;
}

Test(harness, kafka_group_commits_offsets, .timeout = 120)
{
        char topic[128], group[128];
        int seen[N_MSGS] = {0};
        rd_kafka_t *p = dq_test_producer();
        rd_kafka_t *c;
        rd_kafka_topic_partition_list_t *subs, *assigned = NULL;
        int got, i;

        dq_test_unique(topic, sizeof(topic), "harness");
        dq_test_unique(group, sizeof(group), "harness-group");
        dq_test_create_topic(p, topic, 3);

        for (i = 0; i < N_MSGS; i++) {
                char payload[32], key[16];
                int plen = snprintf(payload, sizeof(payload), "msg-%d", i);
                int klen = snprintf(key, sizeof(key), "k%d", i % 7);
                cr_assert_eq(
                    rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic),
                                      RD_KAFKA_V_VALUE(payload, (size_t)plen),
                                      RD_KAFKA_V_KEY(key, (size_t)klen),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_END),
                    RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        cr_assert_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR,
                     "not every message was delivered");
        rd_kafka_destroy(p);

        /* First member reads everything and commits. */
        c = dq_test_consumer(group);
        subs = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
        cr_assert_eq(rd_kafka_subscribe(c, subs), RD_KAFKA_RESP_ERR_NO_ERROR);
        got = consume_into(c, N_MSGS, 60000, seen);
        cr_assert_eq(got, N_MSGS, "read %d of %d messages", got, N_MSGS);
        for (i = 0; i < N_MSGS; i++)
                cr_assert_eq(seen[i], 1, "message %d seen %d times", i,
                             seen[i]);
        cr_assert_eq(rd_kafka_commit(c, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR);

        /* The broker now holds committed offsets summing to N_MSGS. */
        cr_assert_eq(rd_kafka_assignment(c, &assigned),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        cr_assert_eq(rd_kafka_committed(c, assigned, 10000),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
        {
                int64_t sum = 0;
                for (i = 0; i < assigned->cnt; i++)
                        sum += assigned->elems[i].offset;
                cr_assert_eq(sum, N_MSGS, "committed offsets sum to %lld",
                             (long long)sum);
        }
        rd_kafka_topic_partition_list_destroy(assigned);
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);

        /* A second member of the same group resumes from the commits and
         * sees nothing. It waits until it owns all three partitions. */
        c = dq_test_consumer(group);
        cr_assert_eq(rd_kafka_subscribe(c, subs), RD_KAFKA_RESP_ERR_NO_ERROR);
        {
                long long deadline = dq_test_now_ms() + 30000;
                int owned = 0;
                while (owned < 3 && dq_test_now_ms() < deadline) {
                        rd_kafka_message_t *m = rd_kafka_consumer_poll(c, 200);
                        if (m) {
                                cr_assert(m->err != RD_KAFKA_RESP_ERR_NO_ERROR,
                                          "second consumer read a message");
                                rd_kafka_message_destroy(m);
                        }
                        assigned = NULL;
                        rd_kafka_assignment(c, &assigned);
                        owned = assigned ? assigned->cnt : 0;
                        rd_kafka_topic_partition_list_destroy(assigned);
                }
                cr_assert_eq(owned, 3, "second consumer never got assigned");
        }
        memset(seen, 0, sizeof(seen));
        got = consume_into(c, 1, 3000, seen);
        cr_assert_eq(got, 0, "second consumer re-read %d messages", got);

        rd_kafka_topic_partition_list_destroy(subs);
        rd_kafka_consumer_close(c);
        rd_kafka_destroy(c);
}

static char *config_get(redisContext *c, const char *key)
{
        static char value[64];
        redisReply *r = redisCommand(c, "CONFIG GET %s", key);
        cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2,
                  "CONFIG GET %s failed", key);
        snprintf(value, sizeof(value), "%s", r->element[1]->str);
        freeReplyObject(r);
        return value;
}

Test(harness, redis_is_durable_and_never_evicts)
{
        redisContext *c = dq_test_redis();
        char key[128];
        redisReply *r;

        cr_assert_str_eq(config_get(c, "appendonly"), "yes");
        cr_assert_str_eq(config_get(c, "appendfsync"), "always");
        cr_assert_str_eq(config_get(c, "maxmemory-policy"), "noeviction");

        dq_test_unique(key, sizeof(key), "harness:key");
        r = redisCommand(c, "SET %s %s", key, "value");
        cr_assert(r && r->type == REDIS_REPLY_STATUS);
        freeReplyObject(r);
        r = redisCommand(c, "GET %s", key);
        cr_assert(r && r->type == REDIS_REPLY_STRING);
        cr_assert_str_eq(r->str, "value");
        freeReplyObject(r);
        r = redisCommand(c, "DEL %s", key);
        freeReplyObject(r);
        redisFree(c);
}
