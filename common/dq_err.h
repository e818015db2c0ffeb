/* decayq's one error enum, with names, descriptions and the predicates that
 * alone decide between retry, dead-letter and shutdown. */
#ifndef DQ_ERR_H
#define DQ_ERR_H

#include <stdbool.h>

typedef enum dq_err_e {
        DQ_OK = 0,
        /* The input (a job message, a flag, a config line) is invalid.
         * Fatal for a job: it goes to the DLQ. */
        DQ_ERR_INVALID,
        /* A referenced object does not exist (job, memory, source). */
        DQ_ERR_NOT_FOUND,
        /* The job cannot run as asked and never will (inactive source,
         * missing attestation). Fatal. */
        DQ_ERR_REJECTED,
        /* The claim was superseded: stale epoch or lease. The worker must
         * drop the job without settling it. */
        DQ_ERR_FENCED,
        /* The job is already terminal; nothing was changed. */
        DQ_ERR_TERMINAL,
        /* A transient failure of the job itself; retry with backoff. */
        DQ_ERR_TRANSIENT,
        /* A timeout; the outcome may be unknown. Retryable. */
        DQ_ERR_TIMEOUT,
        /* Redis or Kafka is unreachable or the outcome of a write is
         * unknown. Critical: pause, never dead-letter. */
        DQ_ERR_UNAVAILABLE,
        /* Out of memory or another fault of the process. Critical. */
        DQ_ERR_INTERNAL,
        /* The Redis server is configured unsafely (eviction, no AOF). */
        DQ_ERR_UNSAFE_CONFIG,
        DQ_ERR__CNT
} dq_err_t;

/* Short, stable identifier, e.g. "DQ_ERR_FENCED". Never NULL. */
const char *dq_err_name(dq_err_t err);

/* Human description. Never NULL. */
const char *dq_err_str(dq_err_t err);

/* True when a job failing with err should be retried with backoff. */
bool dq_err_is_retryable(dq_err_t err);

/* True when a job failing with err should be dead-lettered at once. */
bool dq_err_is_fatal(dq_err_t err);

/* True when err is the environment's fault, not the job's: the process must
 * pause and must not settle or dead-letter anything because of it. */
bool dq_err_is_critical(dq_err_t err);

#endif
