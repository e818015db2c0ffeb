/* Signed operator attestations (DESIGN.md G12, "Operator attestation"):
 * the signed byte layout, Ed25519 signing and verification (libsodium),
 * key files, and the consumer's allowed-signers list.
 *
 * What is signed is never re-serialised JSON. It is the namespace, then
 * each field as its decimal byte length, a space, its bytes and a space
 * (DSSE's pre-authentication encoding):
 *
 *   "decayq-attest-v1 " + for each field: LEN " " BYTES " "
 *
 * over, in this order: job id, scope, kind, the source ids sorted (bytes)
 * and joined by "\n", model, max_tokens (decimal), not_before, expires_at
 * (both as sent), nonce, key_id, operator. */
#ifndef DQ_ATTEST_H
#define DQ_ATTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dq_job.h"

#define DQ_ATTEST_NAMESPACE "decayq-attest-v1"
#define DQ_ATTEST_PK_LEN    32
#define DQ_ATTEST_SK_LEN    64 /* libsodium's: seed, then public key */
#define DQ_ATTEST_SIG_LEN   64
#define DQ_ATTEST_KEY_ID    16 /* hex digits: SHA-256 of the public key */

typedef struct dq_signers_s dq_signers_t;

/* A private key, as decayctl attest keygen writes it. */
typedef struct dq_attest_key_s {
        char key_id[65];
        char operator_name[256];
        unsigned char sk[DQ_ATTEST_SK_LEN];
} dq_attest_key_t;

/* Initialises libsodium; false when it cannot start (no entropy). Safe to
 * call more than once. @locality any thread */
bool dq_attest_init(void);

/* The signed bytes of job's attestation (DESIGN.md layout), malloc'ed, with
 * their length in *lenp; NULL when out of memory or job carries no v1
 * attestation. */
unsigned char *dq_attest_message(const dq_job_t *job, size_t *lenp);

/* The key id of a public key: the first 8 bytes of its SHA-256, in hex. */
void dq_attest_key_id(const unsigned char pk[DQ_ATTEST_PK_LEN],
                      char out[DQ_ATTEST_KEY_ID + 1]);

/* A new key pair for operator (no white space). */
bool dq_attest_keygen(const char *operator_name, dq_attest_key_t *key,
                      unsigned char pk[DQ_ATTEST_PK_LEN]);

/* The key of a 32-byte seed (test vectors). */
bool dq_attest_key_from_seed(const char *operator_name,
                             const unsigned char seed[32], dq_attest_key_t *key,
                             unsigned char pk[DQ_ATTEST_PK_LEN]);

/* Writes key to path, mode 0600, refusing to replace a file; loads it back.
 * false with errstr set on failure (never the key). */
bool dq_attest_key_save(const dq_attest_key_t *key, const char *path,
                        char *errstr, size_t errstr_size);
bool dq_attest_key_load(dq_attest_key_t *key, const char *path, char *errstr,
                        size_t errstr_size);

/* The allowed-signers line of key's public half:
 *   <key_id> <operator> <base64 public key> */
bool dq_attest_signers_line(const dq_attest_key_t *key, char *buf, size_t size);

/* Fills job's attestation from key and the arguments (a fresh random nonce)
 * and signs it. job must be an llm_summary job; any attestation it had is
 * replaced. false with errstr set on failure. */
bool dq_attest_sign(dq_job_t *job, const dq_attest_key_t *key,
                    const char *model, int64_t max_tokens,
                    int64_t not_before_ms, int64_t expires_at_ms, char *errstr,
                    size_t errstr_size);

/* dq_attest_sign() with a given nonce (32 lower-case hex digits), for test
 * vectors and drills; NULL draws a random one. */
bool dq_attest_sign_nonce(dq_job_t *job, const dq_attest_key_t *key,
                          const char *model, int64_t max_tokens,
                          int64_t not_before_ms, int64_t expires_at_ms,
                          const char *nonce, char *errstr, size_t errstr_size);

/* Signs job's attestation as its fields stand (sig replaced); false when
 * out of memory. */
bool dq_attest_seal(dq_job_t *job, const dq_attest_key_t *key);

/* Parses an allowed-signers file: one key per line,
 *   <key_id> <operator> <base64 public key> [scopes=p1,p2]
 *   [valid_after=RFC3339] [valid_before=RFC3339]
 * with '#' comments and blank lines. scopes= are fnmatch(3) patterns over
 * the job's scope (default: every scope). The key id must be the one of
 * the public key. NULL with errstr naming the line on failure. */
dq_signers_t *dq_signers_parse(const char *text, char *errstr,
                               size_t errstr_size);
dq_signers_t *dq_signers_load(const char *path, char *errstr,
                              size_t errstr_size);
size_t dq_signers_count(const dq_signers_t *s);
void dq_signers_destroy(dq_signers_t *s);

/* Verifies job's attestation for a backend serving model, at now_ms (wall).
 * Returns NULL when it is valid, else its reason code (static storage),
 * with a message in msg naming the key id and operator, never the
 * signature:
 *   decay.llm_summary.requires_operator_attestation   none at all
 *   decay.attest.unsigned             wave-1 form, or no sig
 *   decay.attest.unsupported_version  v is not 1
 *   decay.attest.unknown_key          key id not in the allowed signers
 *   decay.attest.operator_mismatch    the key belongs to another operator
 *   decay.attest.bad_signature        signature does not verify
 *   decay.attest.key_not_yet_valid / decay.attest.key_expired
 *                                     the key's valid_after/valid_before
 *   decay.attest.scope_not_allowed    no scopes= pattern of the key matches
 *   decay.attest.not_yet_valid / decay.attest.expired
 *                                     the attestation's own window
 *   decay.attest.model_mismatch       signed for another model
 * The nonce is checked in Redis, inside the claim (decay.attest.replayed).
 * @locality any thread: signers is read only. */
const char *dq_attest_verify(const dq_signers_t *signers, const dq_job_t *job,
                             const char *model, int64_t now_ms, char *msg,
                             size_t msg_size);

#endif
