/* Clocks and RFC 3339 UTC timestamps, pure and free of locale and TZ. */
#ifndef DQ_TIME_H
#define DQ_TIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Wall clock, milliseconds since the Unix epoch. */
int64_t dq_now_ms(void);

/* Monotonic clock, milliseconds. */
int64_t dq_mono_ms(void);

/* Parses "YYYY-MM-DDTHH:MM:SS[.fraction]Z" (RFC 3339, UTC only, 'T' and
 * 'Z' upper-case, seconds 00-59, fraction of 1-9 digits) into *msp. Returns
 * false for anything else, including impossible dates. */
bool dq_time_parse_rfc3339(const char *s, size_t len, int64_t *msp);

/* Formats ms as RFC 3339 UTC; milliseconds are printed only when non-zero.
 * buf needs 25 bytes. Returns buf. */
char *dq_time_format_rfc3339(int64_t ms, char *buf, size_t size);

/* Parses a duration: a number with an optional unit ms, s, m, h or d
 * ("250ms", "5s", "7d"); a bare number is milliseconds. */
bool dq_duration_parse(const char *s, int64_t *msp);

#endif
