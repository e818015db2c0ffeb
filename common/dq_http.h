/* The daemons' HTTP listener (libmicrohttpd): GET /metrics, /healthz and
 * /readyz, on its own thread. Anything else is answered 404 or 405, and a
 * malformed request 400, without touching the daemon's work. */
#ifndef DQ_HTTP_H
#define DQ_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include <stdbool.h>

typedef struct dq_http_s dq_http_t;

/* What the listener asks the daemon, from its own thread: each callback
 * must be safe to call while the daemon runs. */
typedef struct dq_http_probe_s {
        /* The /metrics body (malloc'ed, the listener frees it). */
        char *(*render)(void *opaque, size_t *lenp);
        /* /readyz: true when ready; why says what, either way. */
        bool (*ready)(void *opaque, char *why, size_t why_size);
        /* /healthz: false when the main loop has been silent longer than
         * stall_ms; since_ms gets how long. */
        bool (*alive)(void *opaque, int64_t stall_ms, int64_t *since_ms);
        void *opaque;
} dq_http_probe_t;

/* Limits of the listener: connections held at once in all and from one
 * address, and the silence after which a connection is closed. */
typedef struct dq_http_limits_s {
        unsigned max_connections;
        unsigned max_per_ip;
        unsigned timeout_s;
} dq_http_limits_t;

/* Listens on address:port (an IPv4 or IPv6 literal), within lim, and
 * answers from probe (copied). stall_ms bounds the main loop's silence
 * before /healthz fails. NULL with errstr on failure. */
dq_http_t *dq_http_start(const char *address, int port,
                         const dq_http_limits_t *lim,
                         const dq_http_probe_t *probe, int64_t stall_ms,
                         char *errstr, size_t errstr_size);

/* Stops listening; NULL is a no-op. */
void dq_http_stop(dq_http_t *h);

#endif
