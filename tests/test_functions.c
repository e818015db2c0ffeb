/* The functions library as a shared resource of one Redis, and the words
 * a person reads when a connection fails (M1, M6). It changes server-wide
 * state (the library, requirepass, ACL users), so it runs alone, and puts
 * everything back. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "dq_test.h"
#include "dq_test_store.h"
#include "banned.h"

#define DECAYCTL DQ_BINARY_DIR "/ctl/decayctl"

static redisReply *redis(const char *fmt, const char *arg)
{
        static redisContext *c;
        if (!c)
                c = dq_test_redis();
        return arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
}

static void ok(redisReply *r)
{
        cr_assert(r && r->type != REDIS_REPLY_ERROR, "%s", r ? r->str : "-");
        freeReplyObject(r);
}

/* Replaces the server's decayq library by one whose decayq_version answers
 * version. */
static void fake_library(const char *version)
{
        char lua[512];
        snprintf(lua, sizeof(lua),
                 "#!lua name=decayq\n"
                 "redis.register_function{function_name='decayq_version', "
                 "callback=function() return '%s' end, flags={'no-writes'}}",
                 version);
        ok(redis("FUNCTION LOAD REPLACE %s", lua));
}

static char *server_version(void)
{
        static char v[32];
        redisReply *r = redis("FCALL_RO decayq_version 0", NULL);
        cr_assert(r && r->type == REDIS_REPLY_STRING, "%s",
                  r && r->str ? r->str : "-");
        snprintf(v, sizeof(v), "%s", r->str);
        freeReplyObject(r);
        return v;
}

static dq_conf_t *conf_with(const char *kv1, const char *kv2)
{
        char host[128], port[64], errstr[512];
        char *X[4];
        int n = 0;
        dq_conf_t *conf;

        snprintf(host, sizeof(host), "redis.host=%s", dq_test_redis_host());
        snprintf(port, sizeof(port), "redis.port=%d", dq_test_redis_port());
        X[n++] = host;
        X[n++] = port;
        if (kv1)
                X[n++] = (char *)kv1;
        if (kv2)
                X[n++] = (char *)kv2;
        conf = dq_conf_load(NULL, X, n, errstr, sizeof(errstr));
        cr_assert_not_null(conf, "%s", errstr);
        return conf;
}

static void restore(void)
{
        /* Whatever happened, the real library and no password. */
        freeReplyObject(redis("AUTH %s", "decayq-test-pw"));
        freeReplyObject(redis("CONFIG SET requirepass %s", ""));
        freeReplyObject(redis("ACL DELUSER dqro", NULL));
        freeReplyObject(redis("FUNCTION DELETE decayq", NULL));
        dq_store_destroy(dq_test_store("restore", NULL, 0, NULL));
}

Test(functions, loaded_when_missing_or_older_never_downgraded, .fini = restore)
{
        dq_conf_t *conf = conf_with(NULL, NULL);
        char errstr[512];
        dq_store_t *st;
        dq_record_t rec;

        /* None: loaded. */
        ok(redis("FUNCTION DELETE decayq", NULL));
        st = dq_store_new(conf, "w", errstr, sizeof(errstr));
        cr_assert_not_null(st, "%s", errstr);
        cr_assert_str_eq(server_version(), dq_store_functions_version());
        dq_store_destroy(st);

        /* Older: replaced. */
        fake_library("3");
        st = dq_store_new(conf, "w", errstr, sizeof(errstr));
        cr_assert_not_null(st, "%s", errstr);
        cr_assert_str_eq(server_version(), dq_store_functions_version());
        dq_store_destroy(st);

        /* Newer: refused, and left as it is. */
        fake_library("99");
        st = dq_store_new(conf, "w", errstr, sizeof(errstr));
        cr_assert_null(st);
        cr_assert(strstr(errstr, "library 99, newer than this program's"), "%s",
                  errstr);
        cr_assert_str_eq(server_version(), "99");

        /* A reader loads nothing and still reads. */
        st =
            dq_store_open(conf, "w", DQ_STORE_READONLY, errstr, sizeof(errstr));
        cr_assert_not_null(st, "%s", errstr);
        cr_assert_eq(
            dq_store_job_get(st, "s/1", "01JD3Q6V2R8YB6K3ZKQ9T1M4XH", &rec),
            DQ_ERR_NOT_FOUND);
        cr_assert_str_eq(server_version(), "99");
        dq_store_destroy(st);
        dq_conf_destroy(conf);
}

Test(functions, decayctl_reads_as_a_read_only_user, .fini = restore)
{
        char cmd[1024], out[] = "/tmp/decayq-fn-XXXXXX", *text;
        int rc;

        close(mkstemp(out));
        ok(redis("ACL SETUSER dqro on >ro-pw ~* resetchannels -@all +@read "
                 "+@connection +fcall_ro",
                 NULL));
        snprintf(cmd, sizeof(cmd),
                 "%s job status --scope s/1 01JD3Q6V2R8YB6K3ZKQ9T1M4XH -X "
                 "redis.host=%s -X redis.port=%d -X redis.username=dqro -X "
                 "redis.password=ro-pw >%s 2>&1",
                 DECAYCTL, dq_test_redis_host(), dq_test_redis_port(), out);
        rc = system(cmd);
        text = dq_test_slurp(out);
        cr_assert_eq(WEXITSTATUS(rc), 1, "%s", text);
        cr_assert(strstr(text, "has no state"), "%s", text);
        cr_assert_null(strstr(text, "NOPERM"), "%s", text);
        free(text);
        unlink(out);
}

Test(functions, connection_errors_name_what_to_fix, .fini = restore)
{
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t len = sizeof(a);
        int mute = socket(AF_INET, SOCK_STREAM, 0);
        char port[64], errstr[512], cmd[1024], out[] = "/tmp/decayq-fn-XXXXXX";
        dq_conf_t *conf;
        char *text;

        /* A server that accepts and never answers. */
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        cr_assert_eq(bind(mute, (struct sockaddr *)&a, sizeof(a)), 0);
        cr_assert_eq(listen(mute, 8), 0);
        getsockname(mute, (struct sockaddr *)&a, &len);
        snprintf(port, sizeof(port), "redis.port=%d", ntohs(a.sin_port));
        conf = conf_with(port, "redis.timeout=1s");
        cr_assert_null(dq_store_new(conf, "w", errstr, sizeof(errstr)));
        cr_assert(strstr(errstr, "no reply within redis.timeout (1s)"), "%s",
                  errstr);
        dq_conf_destroy(conf);
        close(mute);

        /* A password is needed and none is set. */
        ok(redis("CONFIG SET requirepass %s", "decayq-test-pw"));
        conf = conf_with(NULL, NULL);
        cr_assert_null(dq_store_new(conf, "w", errstr, sizeof(errstr)));
        cr_assert(strstr(errstr, "set redis.password (DECAYQ_REDIS_PASSWORD)"),
                  "%s", errstr);
        dq_conf_destroy(conf);
        freeReplyObject(redis("AUTH %s", "decayq-test-pw"));
        ok(redis("CONFIG SET requirepass %s", ""));

        /* One prefix, never "redis: redis". */
        close(mkstemp(out));
        snprintf(cmd, sizeof(cmd),
                 "%s job status --scope s/1 01JD3Q6V2R8YB6K3ZKQ9T1M4XH -X "
                 "redis.host=127.0.0.1 -X redis.port=1 >%s 2>&1",
                 DECAYCTL, out);
        cr_assert_eq(WEXITSTATUS(system(cmd)), 3);
        text = dq_test_slurp(out);
        cr_assert(strstr(text, "error: redis 127.0.0.1:1: "), "%s", text);
        cr_assert_null(strstr(text, "redis: redis"), "%s", text);
        free(text);
        unlink(out);
}
