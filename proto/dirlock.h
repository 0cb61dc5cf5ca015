/*
 * proto/dirlock.h - one writer per directory: funneld on its data
 * directory, a service on its view.  The lock is flock(2) on the file
 * DIRLOCK_FILE inside the directory, held by an open descriptor for the
 * life of the process (the kernel drops it when the process ends, kill -9
 * included, so a stale lock never outlives its holder).  The file holds
 * "PID PROGRAM\n" of the holder, for the message a second one gets.
 *
 * flock locks belong to the open file description, so a second lock of
 * the same directory in the same process is refused too.
 */
#ifndef FUNNEL_PROTO_DIRLOCK_H
#define FUNNEL_PROTO_DIRLOCK_H

#include <stddef.h>

#define DIRLOCK_FILE "funnel.lock"

/* Create path and its missing parents (mode 0755), as mkdir -p.
 * Returns 0, or -1 with errno set (ENAMETOOLONG past 4095 bytes,
 * ENOTDIR when path or a parent exists and is not a directory, ENOENT
 * for an empty path). */
int dirlock_mkdir_p(const char *path);

/*
 * Create dir (and its parents) if missing, then take its lock for
 * `program` (written into the lock file with the pid).  Returns the
 * descriptor that holds the lock (close it to release; it is O_CLOEXEC),
 * or -1 with a message in why: "in use by PROGRAM (pid N)" when another
 * process holds it (errno is EWOULDBLOCK then, and only then), else the
 * system error.  A refused lock changes nothing in the directory.
 */
int dirlock_take(const char *dir, const char *program, char *why, size_t whylen);

#endif
