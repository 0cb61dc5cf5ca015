/*
 * proto/utf8.h - the UTF-8 check every reader of funnel's strings uses.
 */
#ifndef FUNNEL_PROTO_UTF8_H
#define FUNNEL_PROTO_UTF8_H

#include <stddef.h>

/* Offset of the first byte that breaks UTF-8 (overlongs, surrogates and
 * code points past U+10FFFF included), or -1 when all len bytes are valid. */
long mp_utf8_invalid_at(const char *s, size_t len);

#endif /* FUNNEL_PROTO_UTF8_H */
