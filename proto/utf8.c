/*
 * proto/utf8.c - the UTF-8 check (utf8.h).
 */
#include <stdint.h>
#include <string.h>

#include "utf8.h"

long
mp_utf8_invalid_at(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;
	/* all ASCII, the common case: one pass that only ORs the bytes */
	uint64_t any = 0, w;
	for (; i + 8 <= len; i += 8) {
		memcpy(&w, s + i, 8);
		any |= w;
	}
	for (size_t k = i; k < len; k++)
		any |= s[k];
	if ((any & 0x8080808080808080ull) == 0)
		return -1;
	i = 0;
	while (i < len) {
		unsigned char c = s[i];
		size_t n;
		uint32_t cp;
		/* ASCII, most of any record: eight bytes at a time */
		if (i + 8 <= len && (memcpy(&w, s + i, 8), (w & 0x8080808080808080ull) == 0)) {
			i += 8;
			continue;
		}
		if (c < 0x80) {
			i++;
			continue;
		} else if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			cp = c & 0x07;
		} else {
			return (long)i;
		}
		for (size_t k = 1; k <= n; k++) {
			if (i + k >= len || (s[i + k] & 0xc0) != 0x80)
				return (long)i;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* overlong, surrogate, or past U+10FFFF */
		if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return (long)i;
		i += n + 1;
	}
	return -1;
}
