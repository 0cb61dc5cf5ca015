/*
 * proto/error.h - the one error struct (funnel_error_info of
 * funnel/error.h, called fp_error inside proto/) and its one setter.
 * libfunnel's fl_set_error and the daemon's replies fill it through
 * fp_error_setv, so a message is always bounded, valid UTF-8 and free of
 * control bytes (it may quote what a producer sent).
 */
#ifndef FUNNEL_PROTO_ERROR_H
#define FUNNEL_PROTO_ERROR_H

#include <stdarg.h>

#include "funnel/error.h"

typedef funnel_error_info fp_error;

/* Fill *err (which may be NULL: nothing is written) with code, index,
 * field ("" for NULL) and the formatted message; seq becomes 0.  Returns
 * code. */
int fp_error_setv(fp_error *err, int code, int index, const char *field, const char *fmt,
                  va_list ap) __attribute__((format(printf, 5, 0)));

/* The same for a whole request (index -1). */
funnel_err fp_error_set(fp_error *err, funnel_err code, const char *field,
                        const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif /* FUNNEL_PROTO_ERROR_H */
