/* Criterion test support: service addresses, unique names and clients. */
#include "dq_test.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "dq_kafka.h"
#include "banned.h"

static const char *dq_test_env(const char *name)
{
        const char *v = getenv(name);
        if (!v || !*v)
                cr_assert_fail(
                    "%s is not set: run the tests through scripts/test "
                    "(or scripts/services run ctest)",
                    name);
        return v;
}

const char *dq_test_bootstrap(void)
{
        return dq_test_env("DQ_TEST_BOOTSTRAP");
}

const char *dq_test_redis_host(void)
{
        return dq_test_env("DQ_TEST_REDIS_HOST");
}

int dq_test_redis_port(void)
{
        return atoi(dq_test_env("DQ_TEST_REDIS_PORT"));
}

void dq_test_unique(char *buf, size_t size, const char *prefix)
{
        static unsigned counter;
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        srand((unsigned)(ts.tv_nsec ^ getpid()));
        snprintf(buf, size, "%s-%d-%u-%x", prefix, (int)getpid(), ++counter,
                 (unsigned)rand() ^ (unsigned)ts.tv_nsec);
}

redisContext *dq_test_redis(void)
{
        struct timeval tv = {5, 0};
        redisContext *c = redisConnectWithTimeout(dq_test_redis_host(),
                                                  dq_test_redis_port(), tv);
        cr_assert(c && !c->err, "redis connect: %s",
                  c ? c->errstr : "out of memory");
        return c;
}

static rd_kafka_conf_t *dq_test_conf(void)
{
        rd_kafka_conf_t *conf = rd_kafka_conf_new();
        char errstr[256];

        cr_assert(rd_kafka_conf_set(conf, "bootstrap.servers",
                                    dq_test_bootstrap(), errstr,
                                    sizeof(errstr)) == RD_KAFKA_CONF_OK,
                  "%s", errstr);
        return conf;
}

static void dq_test_set(rd_kafka_conf_t *conf, const char *k, const char *v)
{
        char errstr[256];
        cr_assert(rd_kafka_conf_set(conf, k, v, errstr, sizeof(errstr)) ==
                      RD_KAFKA_CONF_OK,
                  "%s=%s: %s", k, v, errstr);
}

rd_kafka_t *dq_test_producer(void)
{
        rd_kafka_conf_t *conf = dq_test_conf();
        char errstr[256];
        rd_kafka_t *rk;

        dq_test_set(conf, "enable.idempotence", "true");
        dq_test_set(conf, "linger.ms", "5");
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        cr_assert(rk, "producer: %s", errstr);
        return rk;
}

rd_kafka_t *dq_test_consumer(const char *group)
{
        rd_kafka_conf_t *conf = dq_test_conf();
        char errstr[256];
        rd_kafka_t *rk;

        dq_test_set(conf, "group.id", group);
        dq_test_set(conf, "enable.auto.commit", "false");
        dq_test_set(conf, "auto.offset.reset", "earliest");
        dq_test_set(conf, "session.timeout.ms", "6000");
        dq_test_set(conf, "partition.assignment.strategy", "range");
        rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
        cr_assert(rk, "consumer: %s", errstr);
        rd_kafka_poll_set_consumer(rk);
        return rk;
}

void dq_test_create_topic(rd_kafka_t *rk, const char *topic, int partitions)
{
        char errstr[512];
        const char *topics[] = {topic};
        dq_err_t err = dq_kafka_create_topics(rk, topics, 1, partitions, 0,
                                              15000, errstr, sizeof(errstr));
        cr_assert_eq(err, DQ_OK, "create topic %s: %s", topic, errstr);
}

int64_t dq_test_high(const char *topic, int32_t partition)
{
        rd_kafka_t *p = dq_test_producer();
        int64_t lo = 0, hi = 0;

        cr_assert_eq(rd_kafka_query_watermark_offsets(p, topic, partition, &lo,
                                                      &hi, 10000),
                     RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks of %s", topic);
        rd_kafka_destroy(p);
        return hi;
}

const char *dq_test_program(const char *rel, char *buf, size_t size)
{
        const char *dir = getenv("DQ_TEST_PROGRAMS");

        snprintf(buf, size, "%s/%s", dir && *dir ? dir : DQ_BINARY_DIR, rel);
        return buf;
}

char *dq_test_slurp(const char *path)
{
        FILE *fp = fopen(path, "r");
        char *buf = NULL;
        size_t len = 0;
        FILE *m = open_memstream(&buf, &len);
        int ch;

        cr_assert(m);
        while (fp && (ch = fgetc(fp)) != EOF)
                fputc(ch, m);
        if (fp)
                fclose(fp);
        fclose(m);
        return buf;
}

long long dq_test_now_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dq_test_sleep_ms(long ms)
{
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0)
                ;
}

void dq_test_services(const char *verb)
{
        char cmd[1024];
        int rc;

        snprintf(cmd, sizeof(cmd), "'%s' %s '%s' >/dev/null",
                 dq_test_env("DQ_SERVICES_SCRIPT"), verb,
                 dq_test_env("DQ_TEST_SERVICES"));
        rc = system(cmd);
        cr_assert_eq(rc, 0, "services %s failed (%d)", verb, rc);
}

int dq_test_free_port(void)
{
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t len = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port;

        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
        cr_assert(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
        port = ntohs(a.sin_port);
        close(fd);
        return port;
}

/* Sends raw bytes; returns the status code (0: no answer) and the body. */
int dq_test_http(int port, const char *req, char *body, size_t size)
{
        struct sockaddr_in a = {.sin_family = AF_INET};
        struct timeval tv = {5, 0};
        int fd = socket(AF_INET, SOCK_STREAM, 0), status = 0;
        size_t n = 0;
        ssize_t r;
        char *buf = malloc(1 << 20), *p;

        cr_assert(buf);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons((uint16_t)port);
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
            write(fd, req, strlen(req)) == (ssize_t)strlen(req)) {
                while (n < (1 << 20) - 1 &&
                       (r = read(fd, buf + n, (1 << 20) - 1 - n)) > 0)
                        n += (size_t)r;
        }
        close(fd);
        buf[n] = '\0';
        sscanf(buf, "HTTP/1.%*d %d", &status);
        if (body) {
                p = strstr(buf, "\r\n\r\n");
                snprintf(body, size, "%s", p ? p + 4 : "");
        }
        free(buf);
        return status;
}

int dq_test_http_get(int port, const char *path, char *body, size_t size)
{
        char req[256];
        snprintf(req, sizeof(req),
                 "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: "
                 "close\r\n\r\n",
                 path);
        return dq_test_http(port, req, body, size);
}

int dq_test_tasks(long *ids, int max)
{
        DIR *d = opendir("/proc/self/task");
        struct dirent *e;
        int n = 0;

        cr_assert_not_null(d);
        while ((e = readdir(d)) && n < max)
                if (e->d_name[0] != '.')
                        ids[n++] = atol(e->d_name);
        closedir(d);
        return n;
}

/* The signals thread tid blocks, from its SigBlk line. */
static unsigned long long blocked(long tid)
{
        char path[64], line[256];
        unsigned long long mask = 0;
        FILE *f;

        snprintf(path, sizeof(path), "/proc/self/task/%ld/status", tid);
        cr_assert_not_null(f = fopen(path, "r"));
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "SigBlk: %llx", &mask) == 1)
                        break;
        fclose(f);
        return mask;
}

int dq_test_expect_new_threads_block_signals(const long *before, int nb)
{
        static const int sigs[] = {SIGTERM, SIGINT,  SIGHUP,
                                   SIGQUIT, SIGUSR1, SIGUSR2};
        long after[256];
        int na = dq_test_tasks(after, 256), n = 0;

        for (int i = 0; i < na; i++) {
                bool old = false;
                for (int j = 0; j < nb; j++)
                        old = old || after[i] == before[j];
                if (old)
                        continue;
                n++;
                for (size_t k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++)
                        cr_expect(blocked(after[i]) & (1ULL << (sigs[k] - 1)),
                                  "thread %ld does not block signal %d",
                                  after[i], sigs[k]);
        }
        return n;
}
