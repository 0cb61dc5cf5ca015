/*
 * funnel/log.h - leveled log lines on stderr, shared by funneld and the
 * services:
 *
 *   2026-11-22T13:10:02.123Z funnel-scoring[4242] info message
 *
 * One fprintf per line, so lines from several threads do not interleave.
 * The level and program name are process-wide settings; set them once at
 * start, before threads exist.
 */
#ifndef FUNNEL_LOG_H
#define FUNNEL_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

enum funnel_log_level {
	FUNNEL_LOG_DEBUG = 0,
	FUNNEL_LOG_INFO,
	FUNNEL_LOG_WARN,
	FUNNEL_LOG_ERROR
};

/* Name printed before the pid (default "funnel"); the string must outlive
 * every later log call (a literal or argv[0]). */
void funnel_log_program(const char *name);

/* Set the minimum level by name: debug, info, warn, error.  Returns 0, or
 * -1 for an unknown name (the level is then unchanged). */
int funnel_log_level(const char *name);

void funnel_log(enum funnel_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif /* FUNNEL_LOG_H */
