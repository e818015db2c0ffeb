/* Retry timing (dq_retry): capped exponential backoff with full jitter,
 * and the delay tier that serves a wait (G6: never early). */
#include <criterion/criterion.h>

#include "dq_retry.h"
#include "banned.h"

Test(retry, backoff_is_capped_exponential_with_full_jitter)
{
        /* The cap doubles per attempt up to max; the value is in [0, cap]. */
        cr_assert_eq(dq_backoff_ms(1, 1000, 300000, 1000), 1000);
        cr_assert_eq(dq_backoff_ms(1, 1000, 300000, 1001), 0);
        cr_assert_eq(dq_backoff_ms(2, 1000, 300000, 2000), 2000);
        cr_assert_eq(dq_backoff_ms(3, 1000, 300000, 4000), 4000);
        cr_assert_eq(dq_backoff_ms(3, 1000, 300000, 4001), 0);
        cr_assert_eq(dq_backoff_ms(30, 1000, 300000, 300000), 300000);
        cr_assert_eq(dq_backoff_ms(1000, 1000, 300000, 300001), 0);
        for (uint64_t r = 0; r < 100000; r += 7)
                cr_assert_leq(dq_backoff_ms(4, 1000, 300000, r * 2654435761u),
                              8000);
}

Test(retry, a_wait_goes_to_the_largest_tier_that_fits)
{
        const int64_t tiers[] = {5000, 30000, 300000, 3600000};

        cr_assert_eq(dq_tier_pick(tiers, 4, 100), 0, "shorter: smallest");
        cr_assert_eq(dq_tier_pick(tiers, 4, 5000), 0);
        cr_assert_eq(dq_tier_pick(tiers, 4, 29999), 0);
        cr_assert_eq(dq_tier_pick(tiers, 4, 30000), 1);
        cr_assert_eq(dq_tier_pick(tiers, 4, 299999), 1);
        cr_assert_eq(dq_tier_pick(tiers, 4, 86400000), 3);
}
