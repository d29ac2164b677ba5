/*
 * logging.c - the one message sink of the daemon.
 *
 * Until the daemon detaches, messages go to stderr as "vhdxfuse: ..." so
 * that a bad image or option reaches the terminal.  After fuse_daemonize()
 * they go to syslog, and so do libfuse's own messages.  Debug messages are
 * kept only with -d.
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>

#include "vhdxfuse.h"

static int vf_log_syslog;
static int vf_log_debug;
static int vf_log_vhdx_nerr; /* library errors seen, see vf_log_vhdx_errors */

void vf_log_set_debug(int debug)
{
	vf_log_debug = debug;
}

static void __attribute__((format(printf, 2, 0)))
vf_vlog(int level, const char *fmt, va_list ap)
{
	char msg[1024];

	if (level == LOG_DEBUG && !vf_log_debug)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (vf_log_syslog)
		syslog(level, "%s", msg);
	else
		fprintf(stderr, "vhdxfuse: %s\n", msg);
}

void vf_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vf_vlog(level, fmt, ap);
	va_end(ap);
}

void vf_log_vhdx(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	if (level <= VHDX_MSG_ERR)
		__atomic_add_fetch(&vf_log_vhdx_nerr, 1, __ATOMIC_RELAXED);
	vf_log((int)level, "%s: %s", (const char *)opaque, msg);
}

int vf_log_vhdx_errors(void)
{
	return __atomic_load_n(&vf_log_vhdx_nerr, __ATOMIC_RELAXED);
}

/* libfuse's messages carry their own "fuse: " prefix and newline. */
static void vf_log_fuse(enum fuse_log_level level, const char *fmt, va_list ap)
{
	if (level == FUSE_LOG_DEBUG && !vf_log_debug)
		return;
	vsyslog((int)level, fmt, ap);
}

void vf_log_to_syslog(void)
{
	openlog("vhdxfuse", LOG_PID, LOG_DAEMON);
	vf_log_syslog = 1;
	fuse_set_log_func(vf_log_fuse);
}
