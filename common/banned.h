/* Functions decayq code must not call; include it last, after system headers.
 * Each has a bounded or clearer replacement (snprintf, memcpy with a length,
 * strtok_r). */
#ifndef DQ_BANNED_H
#define DQ_BANNED_H

#define DQ_BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) DQ_BANNED(strcpy)
#undef strcat
#define strcat(x, y) DQ_BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) DQ_BANNED(strncpy)
#undef strncat
#define strncat(x, y, n) DQ_BANNED(strncat)
#undef strtok
#define strtok(x, y) DQ_BANNED(strtok)
#undef sprintf
#define sprintf(...) DQ_BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) DQ_BANNED(vsprintf)
#undef gets
#define gets(x) DQ_BANNED(gets)

#endif
