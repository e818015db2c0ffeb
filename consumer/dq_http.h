/* decay-consumer's HTTP listener (libmicrohttpd): GET /metrics, /healthz
 * and /readyz, on its own thread. Anything else is answered 404 or 405,
 * and a malformed request 400, without touching consumption. */
#ifndef DQ_HTTP_H
#define DQ_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "dq_metrics.h"

typedef struct dq_http_s dq_http_t;

/* Limits of the listener: connections held at once in all and from one
 * address, and the silence after which a connection is closed. */
typedef struct dq_http_limits_s {
        unsigned max_connections;
        unsigned max_per_ip;
        unsigned timeout_s;
} dq_http_limits_t;

/* Listens on address:port (an IPv4 or IPv6 literal), within lim. stall_ms
 * bounds the main loop's silence before /healthz fails. NULL with errstr
 * on failure. */
dq_http_t *dq_http_start(const char *address, int port,
                         const dq_http_limits_t *lim, dq_metrics_t *m,
                         int64_t stall_ms, char *errstr, size_t errstr_size);

/* Stops listening; NULL is a no-op. */
void dq_http_stop(dq_http_t *h);

#endif
