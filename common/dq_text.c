/* UTF-8 validation and terminal-safe escaping; see dq_text.h. */
#include "dq_text.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "banned.h"

/* Length of the well-formed UTF-8 sequence at s[0..len), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
        uint32_t cp;
        size_t n;

        if (s[0] < 0x80)
                return 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, cp = s[0] & 0x1f;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, cp = s[0] & 0x0f;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, cp = s[0] & 0x07;
        else
                return 0; /* a continuation byte, 0xc0, 0xc1 or >= 0xf5 */
        if (n > len)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = (cp << 6) | (s[i] & 0x3f);
        }
        if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        return n;
}

bool dq_utf8_valid(const char *s, size_t len)
{
        const unsigned char *p = (const unsigned char *)s;

        for (size_t i = 0; i < len;) {
                size_t n = utf8_seq(p + i, len - i);
                if (!n)
                        return false;
                i += n;
        }
        return true;
}

char *dq_escape(const char *s, size_t len, char *buf, size_t size)
{
        const unsigned char *p = (const unsigned char *)s;
        size_t o = 0, mark = 0;

        if (size == 0)
                return buf;
        for (size_t i = 0; i < len;) {
                char tmp[8];
                size_t n = utf8_seq(p + i, len - i), w;

                if (n == 1 && p[i] >= 0x20 && p[i] < 0x7f && p[i] != '\\') {
                        tmp[0] = (char)p[i];
                        w = 1;
                } else if (n == 1 &&
                           (p[i] == '\n' || p[i] == '\t' || p[i] == '\\')) {
                        tmp[0] = '\\';
                        tmp[1] = p[i] == '\n' ? 'n' : p[i] == '\t' ? 't' : '\\';
                        w = 2;
                } else if (n >= 2 &&
                           !(n == 2 && p[i] == 0xc2 && p[i + 1] < 0xa0)) {
                        /* Printable UTF-8; U+0080..U+009F are C1 controls
                         * that some terminals obey. */
                        memcpy(tmp, p + i, n);
                        w = n;
                } else {
                        n = 1;
                        snprintf(tmp, sizeof(tmp), "\\x%02x", p[i]);
                        w = 4;
                }
                if (o + w + 1 > size) {
                        /* Cut at the last character boundary that leaves
                         * room for "...". */
                        if (size >= 4) {
                                memcpy(buf + mark, "...", 3);
                                o = mark + 3;
                        }
                        break;
                }
                memcpy(buf + o, tmp, w);
                o += w;
                i += n;
                if (o + 4 <= size)
                        mark = o;
        }
        buf[o < size ? o : size - 1] = '\0';
        return buf;
}

char *dq_chomp(char *s)
{
        size_t n = strlen(s);

        while (n && (s[n - 1] == '\n' || s[n - 1] == '\r'))
                s[--n] = '\0';
        return s;
}

const char *dq_esc(const char *s)
{
        static _Thread_local char bufs[DQ_ESC_SLOTS][1024];
        static _Thread_local unsigned next;
        char *buf = bufs[next++ % DQ_ESC_SLOTS];

        if (!s)
                return "-";
        return dq_escape(s, strlen(s), buf, sizeof(bufs[0]));
}
