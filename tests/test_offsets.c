/* A partition's settled prefix (dq_offsets): messages settle in any order,
 * and the stored offset moves only past the oldest pending one (G3). */
#include <criterion/criterion.h>

#include "dq_offsets.h"
#include "banned.h"

Test(offsets, settled_prefix_waits_for_the_oldest)
{
        dq_offsets_t t;
        int64_t next = -1;

        dq_offsets_init(&t);
        for (int64_t o = 10; o < 15; o++)
                cr_assert_eq(dq_offsets_add(&t, o), 0);
        cr_assert_eq(dq_offsets_add(&t, 12), -1, "offsets must ascend");
        cr_assert_not(dq_offsets_settle(&t, 12, &next));
        cr_assert_not(dq_offsets_settle(&t, 11, &next));
        cr_assert(dq_offsets_settle(&t, 10, &next));
        cr_assert_eq(next, 13, "10..12 settled: store 13");
        cr_assert_not(dq_offsets_settle(&t, 99, &next), "untracked");
        cr_assert(dq_offsets_settle(&t, 13, &next));
        cr_assert_eq(next, 14);
        cr_assert_eq(dq_offsets_pending(&t), 1);
        /* Wrap the ring a few times. */
        for (int64_t o = 15; o < 1000; o++) {
                cr_assert_eq(dq_offsets_add(&t, o), 0);
                if (o % 7 == 0)
                        dq_offsets_settle(&t, o - 3, &next);
        }
        for (int64_t o = 14; o < 1000; o++)
                dq_offsets_settle(&t, o, &next);
        cr_assert_eq(next, 1000);
        cr_assert_eq(dq_offsets_pending(&t), 0);
        dq_offsets_release(&t);
}
