/*
 * daemon/log.h - log lines on stderr: "2026-11-22T13:10:02.123Z funneld[pid] LEVEL message".
 * Thread-safe (one fprintf per line).  Messages below the level are dropped.
 */
#ifndef FUNNEL_DAEMON_LOG_H
#define FUNNEL_DAEMON_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set the minimum level; returns -1 for an unknown name. */
int log_set_level(const char *name);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
