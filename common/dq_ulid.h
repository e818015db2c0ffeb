/* ULIDs: 26 Crockford base32 characters, 48-bit time + 80 random bits. */
#ifndef DQ_ULID_H
#define DQ_ULID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DQ_ULID_LEN 26

/* Writes a new ULID for time ms and a NUL into out[27]. Randomness comes
 * from getrandom(2). @locality any thread. */
void dq_ulid_new(int64_t ms, char out[DQ_ULID_LEN + 1]);

/* True when s[0..len) is a canonical (upper-case) ULID. */
bool dq_ulid_valid(const char *s, size_t len);

/* The time part of a valid ULID, in ms. */
int64_t dq_ulid_time_ms(const char *s);

#endif
