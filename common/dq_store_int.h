/* The store's private parts, shared by its files (dq_store.c: jobs;
 * dq_memory.c: the memory store and the planner's calls). Not for programs:
 * they use dq_store.h. */
#ifndef DQ_STORE_INT_H
#define DQ_STORE_INT_H

#include <hiredis/hiredis.h>

#include "dq_store.h"

/* A growable argv for one command. Strings that dq_args_addf() formats
 * are owned (owned[i] != 0) and freed by dq_args_release(). */
typedef struct dq_args_s {
        int argc;
        int cap;
        const char **argv;
        size_t *lens;
        char *owned;
} dq_args_t;

/* Appends s, which must outlive the command. */
void dq_args_add(dq_args_t *a, const char *s);
/* Appends s of len bytes, which dq_args_release() will free. */
void dq_args_take(dq_args_t *a, char *s, size_t len);
void dq_args_addf(dq_args_t *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Appends the key "<ns>:<type>:{<scope>}[:<id>]" (see dq_store_key()). */
void dq_args_key(const dq_store_t *st, dq_args_t *a, const char *type,
                 const char *scope, const char *id);
void dq_args_release(dq_args_t *a);

/* Sends every command, then reads every reply. replies[i] is NULL where
 * the outcome is unknown; the caller frees each with freeReplyObject().
 * Returns DQ_ERR_UNAVAILABLE when the connection failed. */
dq_err_t dq_store_pipeline(dq_store_t *st, dq_args_t *cmds, size_t n,
                           redisReply **replies);

/* The class of a command error's message: DQ_ERR_UNAVAILABLE for an
 * outage (try again), DQ_ERR_REJECTED for the command's own error. */
dq_err_t dq_store_command_error(dq_store_t *st, const char *msg);

/* Runs the HGETALL of a (one command; its strings are released by the
 * caller) into rec. DQ_ERR_NOT_FOUND when the hash is empty or absent. */
dq_err_t dq_store_hgetall(dq_store_t *st, dq_args_t *a, dq_record_t *rec);

/* The namespace and idempotency retention the store was opened with. */
const char *dq_store_ns(const dq_store_t *st);
int64_t dq_store_retention_ms(const dq_store_t *st);

#endif
