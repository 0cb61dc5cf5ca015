/*
 * daemon/log.h - the daemon's short names for funnel/log.h.
 */
#ifndef FUNNEL_DAEMON_LOG_H
#define FUNNEL_DAEMON_LOG_H

#include "funnel/log.h"

#define log_set_level(name) funnel_log_level(name)
#define log_debug(...) funnel_log(FUNNEL_LOG_DEBUG, __VA_ARGS__)
#define log_info(...) funnel_log(FUNNEL_LOG_INFO, __VA_ARGS__)
#define log_warn(...) funnel_log(FUNNEL_LOG_WARN, __VA_ARGS__)
#define log_error(...) funnel_log(FUNNEL_LOG_ERROR, __VA_ARGS__)

#endif
