/* The HTTP listener; see dq_http.h. */
#define _GNU_SOURCE
#include "dq_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "banned.h"

struct dq_http_s {
        struct MHD_Daemon *d;
        dq_http_probe_t probe;
        int64_t stall_ms;
};

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned status,
                             const char *type, char *body, size_t len,
                             bool owned)
{
        struct MHD_Response *r = MHD_create_response_from_buffer(
            len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_MUST_COPY);
        enum MHD_Result ret;

        if (!r)
                return MHD_NO;
        MHD_add_response_header(r, "Content-Type", type);
        MHD_add_response_header(r, "Cache-Control", "no-store");
        ret = MHD_queue_response(conn, status, r);
        MHD_destroy_response(r);
        return ret;
}

static enum MHD_Result text(struct MHD_Connection *conn, unsigned status,
                            const char *msg)
{
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "%s\n", msg);
        return reply(conn, status, "text/plain; charset=utf-8", buf, (size_t)n,
                     false);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload,
                              size_t *upload_size, void **state)
{
        dq_http_t *h = cls;
        char why[128];
        int64_t since;

        (void)version;
        (void)upload;
        if (!*state) {
                /* First call: headers only. Answer on the next. */
                *state = h;
                return MHD_YES;
        }
        if (*upload_size) {
                *upload_size = 0; /* a body we do not read */
                return MHD_YES;
        }
        if (strcmp(method, MHD_HTTP_METHOD_GET) &&
            strcmp(method, MHD_HTTP_METHOD_HEAD))
                return text(conn, MHD_HTTP_METHOD_NOT_ALLOWED,
                            "only GET and HEAD");
        if (!strcmp(url, "/metrics")) {
                size_t len;
                char *body = h->probe.render(h->probe.opaque, &len);
                return reply(conn, MHD_HTTP_OK,
                             "text/plain; version=0.0.4; charset=utf-8", body,
                             len, true);
        }
        if (!strcmp(url, "/healthz")) {
                if (h->probe.alive(h->probe.opaque, h->stall_ms, &since))
                        return text(conn, MHD_HTTP_OK, "ok");
                snprintf(why, sizeof(why), "main loop silent for %lld ms",
                         (long long)since);
                return text(conn, MHD_HTTP_SERVICE_UNAVAILABLE, why);
        }
        if (!strcmp(url, "/readyz")) {
                bool ok = h->probe.ready(h->probe.opaque, why, sizeof(why));
                return text(
                    conn, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, why);
        }
        return text(conn, MHD_HTTP_NOT_FOUND,
                    "not found: try /metrics, /healthz or /readyz");
}

static void quiet(void *cls, const char *fmt, va_list ap)
{
        (void)cls;
        (void)fmt;
        (void)ap;
}

dq_http_t *dq_http_start(const char *address, int port,
                         const dq_http_limits_t *lim,
                         const dq_http_probe_t *probe, int64_t stall_ms,
                         char *errstr, size_t errstr_size)
{
        dq_http_t *h = calloc(1, sizeof(*h));
        struct sockaddr_storage ss;
        struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
        sigset_t all, mask;
        int err;
        /* One polling thread (epoll where there is one) serves every
         * connection, so a slow client holds a slot, never the thread. */
        unsigned flags =
            MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;

        if (!h) {
                snprintf(errstr, errstr_size, "out of memory");
                return NULL;
        }
        memset(&ss, 0, sizeof(ss));
        if (inet_pton(AF_INET, address, &v4->sin_addr) == 1) {
                v4->sin_family = AF_INET;
                v4->sin_port = htons((uint16_t)port);
        } else if (inet_pton(AF_INET6, address, &v6->sin6_addr) == 1) {
                v6->sin6_family = AF_INET6;
                v6->sin6_port = htons((uint16_t)port);
                flags |= MHD_USE_IPv6;
        } else {
                snprintf(errstr, errstr_size,
                         "http.address: expected an IPv4 or IPv6 address, "
                         "got '%s'",
                         address);
                free(h);
                return NULL;
        }
        h->probe = *probe;
        h->stall_ms = stall_ms;
        /* The listener's thread starts with every signal blocked, so that a
         * drain signal reaches the daemon's main thread, the one that reads
         * what the signal handler set. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &mask);
        h->d = MHD_start_daemon(
            flags, (uint16_t)port, NULL, NULL, handle, h, MHD_OPTION_SOCK_ADDR,
            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
            lim->max_connections, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
            lim->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, lim->timeout_s,
            MHD_OPTION_EXTERNAL_LOGGER, quiet, NULL, MHD_OPTION_END);
        err = errno;
        pthread_sigmask(SIG_SETMASK, &mask, NULL);
        if (!h->d) {
                snprintf(errstr, errstr_size, "cannot listen on %s:%d: %s",
                         address, port, strerror(err));
                free(h);
                return NULL;
        }
        return h;
}

void dq_http_stop(dq_http_t *h)
{
        if (!h)
                return;
        MHD_stop_daemon(h->d);
        free(h);
}
