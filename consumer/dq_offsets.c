/* Settled-prefix tracking; see dq_offsets.h. */
#include "dq_offsets.h"

#include <stdlib.h>

#include "banned.h"

void dq_offsets_init(dq_offsets_t *t)
{
        t->offsets = NULL;
        t->settled = NULL;
        t->cap = t->head = t->cnt = 0;
        t->next = -1;
}

void dq_offsets_release(dq_offsets_t *t)
{
        free(t->offsets);
        free(t->settled);
        dq_offsets_init(t);
}

#define AT(t, i) (((t)->head + (i)) % (t)->cap)

static int grow(dq_offsets_t *t)
{
        size_t cap = t->cap ? t->cap * 2 : 64;
        int64_t *o = malloc(cap * sizeof(*o));
        bool *s = malloc(cap * sizeof(*s));

        if (!o || !s) {
                free(o);
                free(s);
                return -1;
        }
        for (size_t i = 0; i < t->cnt; i++) {
                o[i] = t->offsets[AT(t, i)];
                s[i] = t->settled[AT(t, i)];
        }
        free(t->offsets);
        free(t->settled);
        t->offsets = o;
        t->settled = s;
        t->cap = cap;
        t->head = 0;
        return 0;
}

int dq_offsets_add(dq_offsets_t *t, int64_t offset)
{
        if (t->cnt > 0 && offset <= t->offsets[AT(t, t->cnt - 1)])
                return -1;
        if (t->cnt == t->cap && grow(t) == -1)
                return -1;
        t->offsets[AT(t, t->cnt)] = offset;
        t->settled[AT(t, t->cnt)] = false;
        t->cnt++;
        return 0;
}

bool dq_offsets_settle(dq_offsets_t *t, int64_t offset, int64_t *nextp)
{
        size_t lo = 0, hi = t->cnt;
        bool moved = false;

        /* Binary search: the ring holds ascending offsets. */
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                if (t->offsets[AT(t, mid)] < offset)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        if (lo == t->cnt || t->offsets[AT(t, lo)] != offset)
                return false;
        t->settled[AT(t, lo)] = true;

        while (t->cnt > 0 && t->settled[t->head]) {
                t->next = t->offsets[t->head] + 1;
                t->head = (t->head + 1) % t->cap;
                t->cnt--;
                moved = true;
        }
        if (moved)
                *nextp = t->next;
        return moved;
}

size_t dq_offsets_pending(const dq_offsets_t *t)
{
        return t->cnt;
}
