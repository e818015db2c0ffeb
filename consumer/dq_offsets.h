/* The settled-prefix tracker of one partition: offsets are added in the
 * order they are consumed, settled in any order, and the offset to store is
 * the one after the longest settled prefix. */
#ifndef DQ_OFFSETS_H
#define DQ_OFFSETS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dq_offsets_s {
        int64_t *offsets; /* ring of tracked offsets, ascending */
        bool *settled;
        size_t cap, head, cnt;
        int64_t next; /* offset to store; -1 before anything settled */
} dq_offsets_t;

void dq_offsets_init(dq_offsets_t *t);
void dq_offsets_release(dq_offsets_t *t);

/* Tracks offset, which must be above every tracked offset. -1 on out of
 * memory or when offset does not ascend. */
int dq_offsets_add(dq_offsets_t *t, int64_t offset);

/* Marks offset settled. Returns true when the offset to store moved; then
 * *nextp is the new offset to store (last settled prefix offset + 1). An
 * offset that is not tracked is ignored. */
bool dq_offsets_settle(dq_offsets_t *t, int64_t offset, int64_t *nextp);

/* Tracked offsets not settled yet, or settled behind an unsettled one. */
size_t dq_offsets_pending(const dq_offsets_t *t);

#endif
