/*
 * proto/readyfile.h - the ready file a funnel program writes once it
 * serves (--ready-file): "key=value" lines, written to PATH.tmp and renamed
 * over PATH, so a reader sees the whole file or none.  Tests and scripts
 * wait for it instead of for a port.
 */
#ifndef FUNNEL_PROTO_READYFILE_H
#define FUNNEL_PROTO_READYFILE_H

/* Write the formatted text as path, atomically.  Returns 0, or -1 with
 * errno set (the temp file may be left behind; path is untouched). */
int fp_ready_write(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif /* FUNNEL_PROTO_READYFILE_H */
