/* UTF-8 validation and terminal-safe escaping (dq_text). */
#include <criterion/criterion.h>
#include <string.h>

#include "dq_text.h"
#include "banned.h"

Test(text, utf8_validation_refuses_every_malformed_form)
{
        static const char *bad[] = {
            "\xff",             /* never valid */
            "\x80",             /* lone continuation */
            "\xc0\xaf",         /* overlong '/' */
            "\xe0\x80\xaf",     /* overlong, 3 bytes */
            "\xf0\x80\x80\xaf", /* overlong, 4 bytes */
            "\xed\xa0\x80",     /* surrogate U+D800 */
            "\xf4\x90\x80\x80", /* above U+10FFFF */
            "\xe2\x82",         /* cut short */
            "ok\xc3",           /* cut short at the end */
            "\xc3\x28",         /* bad continuation */
        };
        static const char *good[] = {
            "",
            "plain",
            "caf\xc3\xa9",
            "\xe2\x82\xac",
            "\xf0\x9f\x98\x80",
            "\xf4\x8f\xbf\xbf", /* U+10FFFF */
        };

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                cr_assert_not(dq_utf8_valid(bad[i], strlen(bad[i])),
                              "case %zu accepted", i);
        for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
                cr_assert(dq_utf8_valid(good[i], strlen(good[i])),
                          "case %zu refused", i);
}

Test(text, escape_leaves_no_byte_a_terminal_would_obey)
{
        char buf[64];

        /* Clear screen, a C1 CSI, a bell, a bad byte, a backslash. */
        dq_escape("\x1b[2J\xc2\x9b"
                  "1m\a\xff\\",
                  11, buf, sizeof(buf));
        cr_assert_str_eq(buf, "\\x1b[2J\\xc2\\x9b1m\\x07\\xff\\\\");
        dq_escape("a\nb\tc", 5, buf, sizeof(buf));
        cr_assert_str_eq(buf, "a\\nb\\tc");
        /* Printable UTF-8 is kept as it is. */
        dq_escape("caf\xc3\xa9 \xe2\x82\xac", 9, buf, sizeof(buf));
        cr_assert_str_eq(buf, "caf\xc3\xa9 \xe2\x82\xac");
        /* NUL inside the length is shown, not a terminator. */
        dq_escape("a\0b", 3, buf, sizeof(buf));
        cr_assert_str_eq(buf, "a\\x00b");
}

Test(text, escape_cuts_at_a_character_boundary_with_an_ellipsis)
{
        char buf[8];

        dq_escape("abcdefghij", 10, buf, sizeof(buf));
        cr_assert_str_eq(buf, "abcd...");
        dq_escape("abcdefg", 7, buf, sizeof(buf));
        cr_assert_str_eq(buf, "abcdefg");
        /* A 4-byte escape is never split. */
        dq_escape("ab\x01\x02\x03", 5, buf, sizeof(buf));
        cr_assert_str_eq(buf, "ab...");
        cr_assert_str_eq(dq_esc(NULL), "-");
}
