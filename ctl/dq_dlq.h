/* The dead-letter topic as decayctl reads it: a record decoded from its
 * headers and payload, the filters of `dlq list|stats|replay`, and a reader
 * that reads every partition up to the end offsets of a snapshot taken when
 * it starts, so that records added meanwhile are left for a later run. */
#ifndef DQ_DLQ_H
#define DQ_DLQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>

#include "dq_conf.h"
#include "dq_err.h"
#include "dq_job.h"

/* One DLQ record. Strings are "" when the header is absent. */
typedef struct dq_dlq_rec_s {
        const rd_kafka_message_t *msg;
        int32_t partition;
        int64_t offset;
        int64_t ts_ms; /* when it was dead-lettered (record timestamp) */
        char pos[300]; /* "<topic>/<partition>/<offset>" */
        char job_id[DQ_ULID_LEN + 1];
        char scope[DQ_JOB_MAX_SCOPE + 1]; /* the job's, else the key */
        char kind[40];
        char err_class[16];
        char err_code[128];
        char err_message[1025];
        char orig_topic[256];
        int32_t orig_partition;
        int64_t orig_offset;
        int64_t orig_ts_ms;
        /* The original message, "<topic>/<partition>/<offset>": every DLQ
         * copy of one message has the same (pos when the headers lack). */
        char origin[340];
        int64_t first_failed_ms;
        int64_t attempts;
        int64_t replay_count;
        char worker[256];
        char group[256];
        dq_job_t *job;   /* NULL when the payload is not a valid job */
        dq_reject_t rej; /* why it is not */
} dq_dlq_rec_t;

/* Decodes msg (which must outlive rec) into rec; payloads over max_bytes
 * are not parsed. Release with dq_dlq_rec_release(). */
void dq_dlq_rec_decode(dq_dlq_rec_t *rec, const rd_kafka_message_t *msg,
                       size_t max_bytes);

void dq_dlq_rec_release(dq_dlq_rec_t *rec);

/* What `dlq list|stats|replay` select. Unset fields select everything. */
typedef struct dq_dlq_filter_s {
        int64_t since_ms; /* records dead-lettered at or after; 0: any */
        int64_t until_ms; /* before; 0: any */
        const char *code;
        const char *err_class;
        const char *kind;
        const char *scope;
        const char *job;
} dq_dlq_filter_t;

bool dq_dlq_match(const dq_dlq_filter_t *f, const dq_dlq_rec_t *rec);

/* Sets one filter from a command-line option ("since", "until", "code",
 * "class", "kind", "scope", "job") and checks the value. false with a
 * message in errstr for a bad value. */
bool dq_dlq_filter_set(dq_dlq_filter_t *f, const char *name, const char *value,
                       int64_t now_ms, char *errstr, size_t errstr_size);

/* The filters as "code=X kind=Y", or "all" when none is set. */
void dq_dlq_filter_describe(const dq_dlq_filter_t *f, char *buf, size_t size);

typedef struct dq_dlq_reader_s dq_dlq_reader_t;

/* Called for each record read; returns 0 to go on, 1 to stop (the record
 * counts as read), or -1 to stop with an error (it does not). */
typedef int(dq_dlq_cb_t)(dq_dlq_rec_t *rec, void *opaque);

/* A reader of conf's DLQ topic. group names the consumer group whose
 * committed offsets a snapshot may start from (NULL: none; the reader never
 * joins it and never commits itself). */
dq_dlq_reader_t *dq_dlq_reader_new(const dq_conf_t *conf, const char *group,
                                   char *errstr, size_t errstr_size);

void dq_dlq_reader_destroy(dq_dlq_reader_t *r);

/* Takes the snapshot: each partition is read from its low watermark, or
 * from the group's committed offset when from_committed, up to its high
 * watermark now. only_partition >= 0 limits it to that partition, from
 * start_offset (which must lie inside it: else DQ_ERR_NOT_FOUND). */
dq_err_t dq_dlq_reader_snapshot(dq_dlq_reader_t *r, bool from_committed,
                                int32_t only_partition, int64_t start_offset,
                                char *errstr, size_t errstr_size);

/* Records the snapshot covers, and how many of those were read. */
int64_t dq_dlq_reader_total(const dq_dlq_reader_t *r);
int64_t dq_dlq_reader_done(const dq_dlq_reader_t *r);

/* Reads the snapshot, calling cb for each record in partition order of
 * arrival. Returns DQ_OK when done or stopped by cb; DQ_ERR_UNAVAILABLE when
 * the broker gave nothing for stall_ms; DQ_ERR_INTERNAL when cb failed. */
dq_err_t dq_dlq_reader_run(dq_dlq_reader_t *r, dq_dlq_cb_t *cb, void *opaque,
                           int64_t stall_ms, char *errstr, size_t errstr_size);

/* The position after the last record read (or passed) on each partition
 * read, for committing. The caller destroys the list. */
rd_kafka_topic_partition_list_t *
dq_dlq_reader_positions(const dq_dlq_reader_t *r);

/* The underlying consumer handle (for its group metadata). */
rd_kafka_t *dq_dlq_reader_handle(dq_dlq_reader_t *r);

/* Partitions of the DLQ topic. */
int dq_dlq_reader_partitions(const dq_dlq_reader_t *r);

#endif
