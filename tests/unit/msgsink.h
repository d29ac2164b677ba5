/*
 * msgsink.h - a message sink for the unit tests.
 *
 * Pass msgsink_cb and a struct msgsink as vhdx_open_opts.msg/msg_opaque
 * (or vhdx_create_opts).  Every error and warning is counted; messages up
 * to the sink's level are kept, one a line, tagged E (error), W (warning),
 * I (notice, info) or D (debug), so a test can look for one and print them
 * all when it fails.  Safe to call from several threads at once.
 */
#ifndef MSGSINK_H
#define MSGSINK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "vhdx.h"

struct msgsink {
	pthread_mutex_t lock;
	enum vhdx_msg_level keep; /* keep the text of messages up to this */
	char text[65536];	  /* "E: message\n"..., NUL-terminated */
	size_t len;
	unsigned int n_err, n_warn; /* counted whatever keep says */
};

/* Static initialiser of a sink keeping messages up to level. */
#define MSGSINK_INIT(level)                                        \
	{                                                          \
		.lock = PTHREAD_MUTEX_INITIALIZER, .keep = (level) \
	}

/* The vhdx_msg_fn; opaque is the struct msgsink. */
void msgsink_cb(void *opaque, enum vhdx_msg_level level, const char *msg);

/* Forget every message and zero the counters. */
void msgsink_reset(struct msgsink *s);

/*
 * Does a kept message with that tag ('E', 'W', 'I', 'D'; 0: any) contain
 * needle?  Compared without regard to case.
 */
bool msgsink_has(struct msgsink *s, char tag, const char *needle);

/* Print the kept messages as TAP comments, one a line. */
void msgsink_dump(struct msgsink *s);

#endif /* MSGSINK_H */
