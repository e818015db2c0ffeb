/* The daemons' HTTP listener on its own: it answers the probes from its
 * thread, and that thread leaves drain signals to the daemon's main one. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "dq_http.h"
#include "dq_test.h"
#include "banned.h"

static char *render(void *opaque, size_t *lenp)
{
        (void)opaque;
        *lenp = strlen("decayq_up 1\n");
        return strdup("decayq_up 1\n");
}

static bool ready(void *opaque, char *why, size_t why_size)
{
        snprintf(why, why_size, "%s", (const char *)opaque);
        return strcmp(opaque, "ready") == 0;
}

static bool alive(void *opaque, int64_t stall_ms, int64_t *since_ms)
{
        (void)opaque;
        (void)stall_ms;
        *since_ms = 0;
        return true;
}

static dq_http_t *listen_on(int port, const char *state)
{
        dq_http_limits_t lim = {8, 4, 5};
        dq_http_probe_t probe = {render, ready, alive, (void *)state};
        char err[256] = "";
        dq_http_t *h = dq_http_start("127.0.0.1", port, &lim, &probe, 1000, err,
                                     sizeof(err));

        cr_assert_not_null(h, "%s", err);
        return h;
}

/* A drain signal (SIGTERM from the kubelet) must reach the main loop's
 * thread, which reads what the handler sets: a listener thread that took
 * it would leave the stop flag written from a thread nobody watches. */
Test(http, the_listener_thread_blocks_the_signals_the_main_loop_handles)
{
        long before[64];
        int nb = dq_test_tasks(before, 64), port = dq_test_free_port();
        dq_http_t *h = listen_on(port, "ready");
        char body[256];

        cr_expect_eq(dq_test_http_get(port, "/metrics", body, sizeof(body)),
                     200);
        cr_expect_geq(dq_test_expect_new_threads_block_signals(before, nb), 1);
        dq_http_stop(h);
}

/* The caller's own mask is left as it was. */
Test(http, the_caller_keeps_its_signal_mask)
{
        sigset_t before, after;
        dq_http_t *h;

        pthread_sigmask(SIG_SETMASK, NULL, &before);
        h = listen_on(dq_test_free_port(), "not ready: redis down");
        pthread_sigmask(SIG_SETMASK, NULL, &after);
        cr_expect_eq(sigismember(&after, SIGTERM),
                     sigismember(&before, SIGTERM));
        cr_expect_eq(sigismember(&after, SIGINT), sigismember(&before, SIGINT));
        dq_http_stop(h);
}

/* A second listener on a port already taken fails with a reason, and
 * leaves the mask as it was too. */
Test(http, a_port_in_use_is_an_error_with_a_reason)
{
        int port = dq_test_free_port();
        dq_http_t *h = listen_on(port, "ready");
        dq_http_limits_t lim = {8, 4, 5};
        dq_http_probe_t probe = {render, ready, alive, (void *)"ready"};
        char err[256] = "";
        sigset_t mask;

        cr_expect_null(dq_http_start("127.0.0.1", port, &lim, &probe, 1000, err,
                                     sizeof(err)));
        cr_expect(strstr(err, "cannot listen on 127.0.0.1:"), "%s", err);
        pthread_sigmask(SIG_SETMASK, NULL, &mask);
        cr_expect_not(sigismember(&mask, SIGTERM));
        dq_http_stop(h);
}
