/* Retry timing: capped exponential backoff with full jitter, and the choice
 * of a delay tier for a wait. */
#ifndef DQ_RETRY_H
#define DQ_RETRY_H

#include <stdint.h>

/* The backoff before the run after `attempt` (1-based) failed: a uniform
 * random value in [0, min(max_ms, base_ms * 2^(attempt-1))]. rnd is a
 * uniform random 64-bit value supplied by the caller. */
int64_t dq_backoff_ms(int64_t attempt, int64_t base_ms, int64_t max_ms,
                      uint64_t rnd);

/* The tier that serves a wait of wait_ms: the largest tier whose delay fits
 * in the wait, or the smallest when none does (the job then runs late, never
 * early). tiers_ms is ascending. */
int dq_tier_pick(const int64_t *tiers_ms, int cnt, int64_t wait_ms);

#endif
