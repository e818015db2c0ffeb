/* Text checks and escaping for bytes that come from whoever can write to a
 * topic: strict UTF-8 validation, and one escaping function for every field
 * a program shows to a person. Pure: no I/O, no global state. */
#ifndef DQ_TEXT_H
#define DQ_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is well-formed UTF-8 (RFC 3629): no overlong forms,
 * no surrogates, nothing above U+10FFFF. NUL bytes are valid here; callers
 * that forbid them check apart. @locality any thread. */
bool dq_utf8_valid(const char *s, size_t len);

/* Writes s[0..len) to buf (size bytes, always NUL-terminated when size > 0)
 * so that a terminal shows it as it is and acts on none of it: control
 * characters (C0, DEL, C1), backslashes and bytes that are not UTF-8 become
 * \n, \t, \\ or \xHH; well-formed UTF-8 above U+009F is kept. A result that
 * does not fit is cut at a character boundary and ends in "...". Returns
 * buf. @locality any thread. */
char *dq_escape(const char *s, size_t len, char *buf, size_t size);

/* Cuts the line ends ('\n', '\r') off the end of s, as librdkafka's
 * reasons carry one, and returns s. @locality any thread. */
char *dq_chomp(char *s);

#define DQ_ESC_SLOTS 8

/* dq_escape() of a NUL-terminated string into one of DQ_ESC_SLOTS
 * thread-local buffers of 1 KiB, used in turn: the results of the last
 * DQ_ESC_SLOTS calls of a thread stay valid, so one printf may take that
 * many. NULL gives "-". For log and table fields. @locality any thread. */
const char *dq_esc(const char *s);

#endif
