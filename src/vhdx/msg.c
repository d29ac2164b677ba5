/*
 * msg.c - the library's single message sink.  The library never prints; the
 * front end decides where messages go (stderr, syslog, a test buffer).
 */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

void vhdx_msgf(const struct vhdx_image *img, enum vhdx_msg_level level,
	       const char *fmt, ...)
{
	char buf[4096];
	va_list ap;

	if (!img || !img->msg)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	img->msg(img->msg_opaque, level, buf);
}
