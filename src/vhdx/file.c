/*
 * file.c - opening an image file and taking its lock, the same way for the
 * daemon, the tool and the parents of a differencing image; finding out
 * who holds a lock we cannot take; the small runtime record a vhdxfuse
 * daemon keeps, so that others can name its mount point and wait for it.
 *
 * The lock is an OFD lock (fcntl F_OFD_SETLK) on the whole file: shared to
 * read, exclusive to write.  It is advisory, as QEMU's is.  F_OFD_GETLK
 * reports pid -1 for OFD locks, so the holder is found through the daemons'
 * records, else through /proc/PID/fdinfo, which lists each open file's locks.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define VHDX_RECORD_ROOT_DIR "/run/vhdxfuse"
#define VHDX_LOCK_POLL_MS    50

/* Refuse paths into kernel pseudo file systems and device trees. */
static bool path_forbidden(const char *path)
{
	static const char *const roots[] = {"/proc/", "/sys/", "/dev/"};
	char *real = realpath(path, NULL);
	bool bad = false;

	if (!real)
		return false; /* open() reports the real error */
	for (size_t i = 0; i < sizeof(roots) / sizeof(roots[0]); i++)
		if (!strncmp(real, roots[i], strlen(roots[i])))
			bad = true;
	free(real);
	return bad;
}

static void sleep_ms(unsigned int ms)
{
	struct timespec ts = {.tv_sec = ms / 1000,
			      .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- runtime records of vhdxfuse daemons ---- */

/* The directory this process writes its record into (NULL: none). */
static char *record_dir(void)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	char *dir;

	if (geteuid() == 0)
		return strdup(VHDX_RECORD_ROOT_DIR);
	if (!xdg || xdg[0] != '/')
		return NULL;
	if (asprintf(&dir, "%s/vhdxfuse", xdg) < 0)
		return NULL;
	return dir;
}

static char *record_path(pid_t pid)
{
	char *dir = record_dir(), *path = NULL;

	if (dir && asprintf(&path, "%s/%ld", dir, (long)pid) < 0)
		path = NULL;
	free(dir);
	return path;
}

struct record {
	long pid;
	unsigned long long dev, ino, start; /* start 0: not recorded */
	bool closing;
	char mountpoint[PATH_MAX];
};

/*
 * From /proc/PID/stat: the state letter (R, S, Z ...) and when the process
 * started, in clock ticks after boot (field 22; with the PID it names one
 * process, even after the PID is reused).  0, or -1 if it cannot be read.
 */
static int pid_stat(long pid, char *state, unsigned long long *start)
{
	char path[64], buf[1024], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* the name may hold spaces and parentheses: skip to the last ')' */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 1,
			 " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u "
			 "%*d %*d %*d %*d %*d %*d %llu",
			 state, start) != 2)
		return -1;
	return 0;
}

/* When pid started (see pid_stat); 0 if it cannot be read. */
static unsigned long long pid_start_time(long pid)
{
	unsigned long long start;
	char state;

	return pid_stat(pid, &state, &start) ? 0 : start;
}

bool vhdx_pid_exited(long pid)
{
	unsigned long long start;
	char state;

	return pid_stat(pid, &state, &start) || state == 'Z' || state == 'X';
}

/* pid's command name (/proc/PID/comm) into buf; "" if it cannot be read. */
static void pid_comm(long pid, char *buf, size_t len)
{
	char path[64];
	FILE *f;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%ld/comm", pid);
	f = fopen(path, "re");
	if (!f)
		return;
	if (!fgets(buf, (int)len, f))
		buf[0] = '\0';
	fclose(f);
	buf[strcspn(buf, "\n")] = '\0';
}

static int record_read(const char *path, struct record *r)
{
	char buf[PATH_MAX + 256], state[16] = "";
	FILE *f = fopen(path, "re");
	size_t n;
	char *mp, *st;

	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	mp = strstr(buf, "\nmountpoint=");
	if (!mp || sscanf(buf, "pid=%ld\ndev=%llu\nino=%llu\nstate=%15s",
			  &r->pid, &r->dev, &r->ino, state) != 4)
		return -1;
	/* records of earlier versions have no start time */
	st = strstr(buf, "\nstart=");
	if (!st || st > mp || sscanf(st, "\nstart=%llu", &r->start) != 1)
		r->start = 0;
	snprintf(r->mountpoint, sizeof(r->mountpoint), "%s",
		 mp + strlen("\nmountpoint="));
	r->closing = !strcmp(state, "closing");
	return r->pid > 0 ? 0 : -1;
}

/*
 * Is the daemon that wrote r still running?  Its PID alone does not say:
 * a daemon that was killed leaves its record behind, and the PID may now
 * be another process's.  The start time says; without one, the name.
 */
static bool record_live(const struct record *r)
{
	char comm[32];

	if (kill((pid_t)r->pid, 0) && errno != EPERM)
		return false;
	if (r->start) {
		unsigned long long now = pid_start_time(r->pid);

		/* 0: /proc hides it (hidepid); trust the PID then */
		return !now || now == r->start;
	}
	pid_comm(r->pid, comm, sizeof(comm));
	return !strcmp(comm, "vhdxfuse");
}

/* Is name a record's file name (a PID), not a temporary one? */
static bool record_name(const char *name)
{
	return isdigit((unsigned char)name[0]) && !strchr(name, '.');
}

/*
 * Remove the records in dir of daemons that are gone (killed, so they could
 * not remove their own).  Best effort: a record that cannot be read or
 * removed stays, and is ignored by its readers.
 */
static void records_sweep(const char *dir)
{
	DIR *d = opendir(dir);

	for (struct dirent *e; d && (e = readdir(d));) {
		struct record r;
		char *p;

		if (!record_name(e->d_name) ||
		    asprintf(&p, "%s/%s", dir, e->d_name) < 0)
			continue;
		if (!record_read(p, &r) && !record_live(&r))
			unlink(p);
		free(p);
	}
	if (d)
		closedir(d);
}

int vhdx_record_write(int fd, const char *mountpoint, bool closing)
{
	char *dir = record_dir(), *path = NULL, *tmp = NULL;
	struct stat st;
	FILE *f = NULL;
	int ret = -ENOMEM;

	if (!dir)
		return -ENOENT;
	if (fstat(fd, &st)) {
		ret = -errno;
		goto out;
	}
	if (mkdir(dir, 0755) && errno != EEXIST) {
		ret = -errno;
		goto out;
	}
	records_sweep(dir);
	if (asprintf(&path, "%s/%ld", dir, (long)getpid()) < 0 ||
	    asprintf(&tmp, "%s.tmp", path) < 0) {
		path = tmp = NULL;
		goto out;
	}
	f = fopen(tmp, "we");
	if (!f) {
		ret = -errno;
		goto out;
	}
	/* the mount point last: it runs to the end of the file */
	fprintf(f,
		"pid=%ld\ndev=%llu\nino=%llu\nstate=%s\nstart=%llu\n"
		"mountpoint=%s",
		(long)getpid(), (unsigned long long)st.st_dev,
		(unsigned long long)st.st_ino, closing ? "closing" : "mounted",
		pid_start_time(getpid()), mountpoint);
	ret = fclose(f) ? -errno : 0;
	if (!ret && rename(tmp, path))
		ret = -errno;
	if (ret)
		unlink(tmp);
out:
	free(dir);
	free(path);
	free(tmp);
	return ret;
}

void vhdx_record_remove(void)
{
	char *path = record_path(getpid());

	if (path)
		unlink(path);
	free(path);
}

/* Undo the octal escapes (\040 for a space ...) of /proc/self/mountinfo. */
static void unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

int vhdx_mountinfo_find(const char *path, char *fstype, size_t fstype_len,
			char *source, size_t source_len)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int found = 0;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char mp[PATH_MAX + 1], *sep, type[256], src[PATH_MAX + 1];

		/* id parent major:minor root MOUNTPOINT ... - TYPE SOURCE */
		if (sscanf(line, "%*s %*s %*s %*s %4096s", mp) != 1)
			continue;
		unescape(mp);
		if (strcmp(mp, path))
			continue;
		sep = strstr(line, " - ");
		if (!sep || sscanf(sep, " - %255s %4096s", type, src) != 2)
			continue;
		unescape(src);
		/* the last match is the mount on top */
		found = 1;
		if (fstype)
			snprintf(fstype, fstype_len, "%s", type);
		if (source)
			snprintf(source, source_len, "%s", src);
	}
	free(line);
	fclose(f);
	return found;
}

typedef int (*record_fn)(const struct record *r, void *arg);

/* Call fn for each live daemon's record in dir; stop when it says so. */
static int records_in(const char *dir, record_fn fn, void *arg)
{
	DIR *d = dir ? opendir(dir) : NULL;
	int ret = 0;

	for (struct dirent *e; d && !ret && (e = readdir(d));) {
		struct record r;
		char *p;

		if (!record_name(e->d_name) ||
		    asprintf(&p, "%s/%s", dir, e->d_name) < 0)
			continue;
		if (!record_read(p, &r) && record_live(&r))
			ret = fn(&r, arg);
		free(p);
	}
	if (d)
		closedir(d);
	return ret;
}

/*
 * The records in /run/vhdxfuse (root's daemons), $XDG_RUNTIME_DIR/vhdxfuse
 * and each /run/user/UID/vhdxfuse (users' daemons, where readable).
 */
static int records_each(record_fn fn, void *arg)
{
	const char *xdg = getenv("XDG_RUNTIME_DIR");
	DIR *users;
	char *dir;
	int ret = records_in(VHDX_RECORD_ROOT_DIR, fn, arg);

	if (!ret && xdg && xdg[0] == '/' &&
	    asprintf(&dir, "%s/vhdxfuse", xdg) >= 0) {
		ret = records_in(dir, fn, arg);
		free(dir);
	}
	users = ret ? NULL : opendir("/run/user");
	for (struct dirent *u; users && !ret && (u = readdir(users));) {
		if (!isdigit((unsigned char)u->d_name[0]) ||
		    asprintf(&dir, "/run/user/%s/vhdxfuse", u->d_name) < 0)
			continue;
		ret = records_in(dir, fn, arg);
		free(dir);
	}
	if (users)
		closedir(users);
	return ret;
}

struct find_arg {
	unsigned long long dev, ino;
	const char *mountpoint;
	struct vhdx_lock_holder *h;
};

static int match_record(const struct record *r, void *arg)
{
	struct find_arg *a = arg;
	struct vhdx_lock_holder *h = a->h;

	if (a->mountpoint ? strcmp(a->mountpoint, r->mountpoint)
			  : (r->dev != a->dev || r->ino != a->ino))
		return 0;
	h->pid = r->pid;
	snprintf(h->prog, sizeof(h->prog), "vhdxfuse");
	snprintf(h->mountpoint, sizeof(h->mountpoint), "%s", r->mountpoint);
	/* shutting down: it says so, or its mount is gone already */
	h->closing = r->closing ||
		     vhdx_mountinfo_find(r->mountpoint, NULL, 0, NULL, 0) == 0;
	return 1;
}

int vhdx_daemon_find(const char *mountpoint, struct vhdx_lock_holder *h)
{
	struct find_arg a = {.mountpoint = mountpoint, .h = h};

	memset(h, 0, sizeof(*h));
	return records_each(match_record, &a);
}

/* Does /proc/PID/fdinfo/FD (text in buf) list a lock on dev:ino? */
static bool fdinfo_locks(const char *buf, unsigned long long dev,
			 unsigned long long ino)
{
	char want[64];

	/* "lock:\t1: OFDLCK ADVISORY WRITE -1 08:01:1234 0 EOF" */
	snprintf(want, sizeof(want), " %02x:%02x:%llu ", major((dev_t)dev),
		 minor((dev_t)dev), ino);
	for (const char *l = strstr(buf, "lock:"); l;
	     l = strstr(l + 1, "lock:")) {
		const char *end = strchr(l, '\n');
		const char *hit = strstr(l, want);

		if (hit && (!end || hit < end))
			return true;
	}
	return false;
}

/* Which other process has a lock on dev:ino?  0 if none can be seen. */
static long fdinfo_find(unsigned long long dev, unsigned long long ino)
{
	DIR *proc = opendir("/proc");
	long found = 0;

	for (struct dirent *p; proc && !found && (p = readdir(proc));) {
		char path[300], buf[4096];
		long pid = strtol(p->d_name, NULL, 10);
		DIR *fds;

		if (pid <= 0 || pid == (long)getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/fdinfo", pid);
		fds = opendir(path);
		for (struct dirent *e; fds && !found && (e = readdir(fds));) {
			int fd;
			ssize_t n;

			if (!isdigit((unsigned char)e->d_name[0]))
				continue;
			snprintf(path, sizeof(path), "/proc/%ld/fdinfo/%s", pid,
				 e->d_name);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
			if (n > 0) {
				buf[n] = '\0';
				if (fdinfo_locks(buf, dev, ino))
					found = pid;
			}
		}
		if (fds)
			closedir(fds);
	}
	if (proc)
		closedir(proc);
	return found;
}

int vhdx_lock_holder_find(int fd, struct vhdx_lock_holder *h)
{
	struct find_arg a = {.h = h};
	struct stat st;

	memset(h, 0, sizeof(*h));
	if (fstat(fd, &st))
		return 0;
	a.dev = st.st_dev;
	a.ino = st.st_ino;
	if (records_each(match_record, &a))
		return 1;
	h->pid = fdinfo_find(a.dev, a.ino);
	if (!h->pid)
		return 0;
	pid_comm(h->pid, h->prog, sizeof(h->prog));
	return 1;
}

void vhdx_lock_holder_describe(const struct vhdx_lock_holder *h, char *buf,
			       size_t len)
{
	if (!h->pid)
		snprintf(buf, len, "locked by another process");
	else if (h->mountpoint[0] && h->closing)
		snprintf(buf, len,
			 "locked by PID %ld (%s), unmounted from %s but still "
			 "closing it",
			 h->pid, h->prog[0] ? h->prog : "?", h->mountpoint);
	else if (h->mountpoint[0])
		snprintf(buf, len, "locked by PID %ld (%s), mounted at %s",
			 h->pid, h->prog[0] ? h->prog : "?", h->mountpoint);
	else
		snprintf(buf, len, "locked by PID %ld (%s)", h->pid,
			 h->prog[0] ? h->prog : "?");
}

/* ---- opening and locking ---- */

static int take_lock(int fd, unsigned int flags, unsigned int wait_ms,
		     struct vhdx_file_status *fs)
{
	struct flock fl;
	uint64_t deadline = now_ms() + wait_ms;
	struct vhdx_lock_holder h;

	for (;;) {
		memset(&fl, 0, sizeof(fl));
		fl.l_type = flags & VHDX_FILE_WRITE ? F_WRLCK : F_RDLCK;
		fl.l_whence = SEEK_SET;
		if (!fcntl(fd, F_OFD_SETLK, &fl)) {
			fs->locked = true;
			return 0;
		}
		if (errno != EAGAIN && errno != EACCES) {
			/* a file system without locks: go on without */
			fs->lock_errno = errno;
			return 0;
		}
		vhdx_lock_holder_find(fd, &h);
		/* wait only for a holder that is shutting down */
		if (!h.closing || now_ms() >= deadline) {
			/* it may have let go while we looked for it */
			if (!fcntl(fd, F_OFD_SETLK, &fl)) {
				fs->locked = true;
				return 0;
			}
			fs->holder = h;
			return -EBUSY;
		}
		sleep_ms(VHDX_LOCK_POLL_MS);
	}
}

int vhdx_file_open(const char *path, unsigned int flags, unsigned int wait_ms,
		   int *fdp, struct vhdx_file_status *status)
{
	struct vhdx_file_status dummy;
	struct vhdx_file_status *fs = status ? status : &dummy;
	int oflags = flags & VHDX_FILE_WRITE ? O_RDWR : O_RDONLY;
	struct stat st;
	int fd, ret;

	memset(fs, 0, sizeof(*fs));
	*fdp = -1;
	if ((flags & VHDX_FILE_UNTRUSTED_PATH) && path_forbidden(path))
		return -EPERM;
	/* O_NONBLOCK: a FIFO or device must not hang the open */
	fd = open(path, oflags | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || fcntl(fd, F_SETFL, oflags) < 0) {
		ret = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto fail;
	}
	fs->dev = st.st_dev;
	fs->ino = st.st_ino;
	if (!(flags & VHDX_FILE_NOLOCK)) {
		ret = take_lock(fd, flags, wait_ms, fs);
		if (ret)
			goto fail;
	}
	*fdp = fd;
	return 0;
fail:
	close(fd);
	return ret;
}
