/* Backoff and tier choice; see dq_retry.h. */
#include "dq_retry.h"

#include "banned.h"

int64_t dq_backoff_ms(int64_t attempt, int64_t base_ms, int64_t max_ms,
                      uint64_t rnd)
{
        int64_t cap = base_ms;

        for (int64_t i = 1; i < attempt && cap < max_ms; i++)
                cap = cap > max_ms / 2 ? max_ms : cap * 2;
        if (cap > max_ms)
                cap = max_ms;
        if (cap <= 0)
                return 0;
        return (int64_t)(rnd % ((uint64_t)cap + 1));
}

int dq_tier_pick(const int64_t *tiers_ms, int cnt, int64_t wait_ms)
{
        int pick = 0;

        for (int i = 0; i < cnt; i++)
                if (tiers_ms[i] <= wait_ms)
                        pick = i;
        return pick;
}
