/* Built into decay-consumer only with DECAYQ_TSAN. librdkafka starts its
 * threads with C11 thrd_create(), which glibc implements without going
 * through pthread_create(), so ThreadSanitizer never sets those threads up
 * and crashes in them. This definition takes the place of glibc's for the
 * whole process and starts each thread through pthread_create(), which
 * ThreadSanitizer intercepts. thrd_join() needs nothing: glibc's turns the
 * thread's pointer result back into the int returned here. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <threads.h>

#include "banned.h"

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg);

typedef struct start_s {
        thrd_start_t func;
        void *arg;
} start_t;

static void *trampoline(void *p)
{
        start_t s = *(start_t *)p;

        free(p);
        return (void *)(intptr_t)s.func(s.arg);
}

int thrd_create(thrd_t *thr, thrd_start_t func, void *arg)
{
        start_t *s = malloc(sizeof(*s));
        int err;

        if (!s)
                return thrd_nomem;
        s->func = func;
        s->arg = arg;
        err = pthread_create((pthread_t *)thr, NULL, trampoline, s);
        if (err) {
                free(s);
                return err == EAGAIN ? thrd_nomem : thrd_error;
        }
        return thrd_success;
}
