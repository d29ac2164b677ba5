/*
 * progress.c - a one-line progress indicator on stderr for long operations.
 * Shown only when stderr is a terminal and -q was not given, redrawn at
 * most ten times a second, and erased when the operation ends so that
 * messages and output are never mixed with it.
 */
#include "config.h"

#include <time.h>
#include <unistd.h>

#include "vhdxtool.h"

#define VT_PROGRESS_INTERVAL_MS 100

static uint64_t vt_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void vt_progress_begin(struct vt_progress *p, const char *label, uint64_t total)
{
	p->label = label;
	p->total = total;
	p->on = !vt_quiet && isatty(STDERR_FILENO);
	p->shown = false;
	p->last_ms = 0;
}

void vt_progress_update(struct vt_progress *p, uint64_t done)
{
	uint64_t now;
	double pct;

	if (!p->on)
		return;
	now = vt_now_ms();
	if (p->shown && now - p->last_ms < VT_PROGRESS_INTERVAL_MS)
		return;
	p->last_ms = now;
	p->shown = true;
	pct = p->total ? 100.0 * (double)done / (double)p->total : 100.0;
	fprintf(stderr, "\r%s: %5.1f%%", p->label, pct > 100 ? 100.0 : pct);
	fflush(stderr);
}

void vt_progress_end(struct vt_progress *p)
{
	if (p->on && p->shown) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
	p->shown = false;
}

void vt_progress_cb(void *opaque, uint64_t done, uint64_t total)
{
	struct vt_progress *p = opaque;

	p->total = total;
	vt_progress_update(p, done);
}
