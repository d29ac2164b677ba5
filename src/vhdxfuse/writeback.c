/*
 * writeback.c - the write-behind thread.
 *
 * Written data sits in the host's page cache until the next fsync, which
 * then waits for all of it.  During streaming writes this thread starts the
 * writeback of the image file early (sync_file_range with
 * SYNC_FILE_RANGE_WRITE: start, do not wait), so the disk writes while more
 * data arrives.  It changes only when data reaches the disk, never what is
 * durable when: vhdx_flush() still makes data and metadata durable.  It
 * runs in its own thread because starting writeback can block on a full
 * device queue, and a FUSE worker must not.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "vhdxfuse.h"

struct vf_wb {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	int kicked;
	int stop;
	int fd;
};

static void *vf_wb_main(void *arg)
{
	struct vf_wb *wb = arg;

	pthread_mutex_lock(&wb->lock);
	for (;;) {
		while (!wb->kicked && !wb->stop)
			pthread_cond_wait(&wb->cond, &wb->lock);
		if (wb->stop)
			break;
		wb->kicked = 0;
		pthread_mutex_unlock(&wb->lock);
		/* errors surface at the next fdatasync, where they count */
		(void)sync_file_range(wb->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
		pthread_mutex_lock(&wb->lock);
	}
	pthread_mutex_unlock(&wb->lock);
	return NULL;
}

int vf_wb_start(struct vf_fs *fs)
{
	struct vf_wb *wb = calloc(1, sizeof(*wb));
	int ret;

	if (!wb)
		return -ENOMEM;
	pthread_mutex_init(&wb->lock, NULL);
	pthread_cond_init(&wb->cond, NULL);
	wb->fd = fs->fd;
	ret = pthread_create(&wb->thread, NULL, vf_wb_main, wb);
	if (ret) {
		pthread_cond_destroy(&wb->cond);
		pthread_mutex_destroy(&wb->lock);
		free(wb);
		return -ret;
	}
	fs->wb = wb;
	return 0;
}

void vf_wb_kick(struct vf_fs *fs)
{
	struct vf_wb *wb = fs->wb;

	if (!wb)
		return;
	pthread_mutex_lock(&wb->lock);
	wb->kicked = 1;
	pthread_cond_signal(&wb->cond);
	pthread_mutex_unlock(&wb->lock);
}

void vf_wb_stop(struct vf_fs *fs)
{
	struct vf_wb *wb = fs->wb;

	if (!wb)
		return;
	pthread_mutex_lock(&wb->lock);
	wb->stop = 1;
	pthread_cond_signal(&wb->cond);
	pthread_mutex_unlock(&wb->lock);
	pthread_join(wb->thread, NULL);
	pthread_cond_destroy(&wb->cond);
	pthread_mutex_destroy(&wb->lock);
	free(wb);
	fs->wb = NULL;
}
