/*
 * test_file.c - vhdx_file_open (file.c): which files it opens, the locks it
 * takes, how it names the holder of a lock it cannot take, and the bounded
 * wait for a holder whose mount is gone (a daemon still closing), and
 * whether a process has exited.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "unit.h"

static char dir[] = "/tmp/vhdx-test-file.XXXXXX";
static char img[64];

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

TEST(kinds_of_files)
{
	char path[96];
	int fd;

	CHECK_EQ_INT(vhdx_file_open(img, VHDX_FILE_WRITE, 0, &fd, NULL), 0);
	CHECK(fd >= 0);
	close(fd);
	CHECK_EQ_INT(vhdx_file_open(dir, 0, 0, &fd, NULL), -EISDIR);
	CHECK_EQ_INT(fd, -1);
	snprintf(path, sizeof(path), "%s/fifo", dir);
	CHECK_EQ_INT(mkfifo(path, 0600), 0);
	/* must not block waiting for a writer */
	CHECK_EQ_INT(vhdx_file_open(path, 0, 0, &fd, NULL), -EINVAL);
	CHECK_EQ_INT(vhdx_file_open("/dev/null", 0, 0, &fd, NULL), -EINVAL);
	snprintf(path, sizeof(path), "%s/missing", dir);
	CHECK_EQ_INT(vhdx_file_open(path, 0, 0, &fd, NULL), -ENOENT);
	/* a path read from an image may not lead into /proc */
	CHECK_EQ_INT(vhdx_file_open("/proc/self/status",
				    VHDX_FILE_UNTRUSTED_PATH, 0, &fd, NULL),
		     -EPERM);
	CHECK_EQ_INT(vhdx_file_open("/proc/self/status", 0, 0, &fd, NULL), 0);
	close(fd);
}

TEST(shared_and_exclusive)
{
	struct vhdx_file_status st;
	int w, r1, r2, fd;
	char buf[256];

	CHECK_EQ_INT(vhdx_file_open(img, 0, 0, &r1, &st), 0);
	CHECK(st.locked);
	CHECK_EQ_INT(vhdx_file_open(img, 0, 0, &r2, NULL), 0);
	/* OFD locks conflict between open files, even in one process */
	CHECK_EQ_INT(vhdx_file_open(img, VHDX_FILE_WRITE, 0, &w, &st), -EBUSY);
	/* ourselves: not reported as the holder */
	CHECK_EQ_INT(st.holder.pid, 0);
	vhdx_lock_holder_describe(&st.holder, buf, sizeof(buf));
	CHECK_EQ_STR(buf, "locked by another process");
	close(r1);
	close(r2);
	CHECK_EQ_INT(vhdx_file_open(img, VHDX_FILE_WRITE, 0, &w, &st), 0);
	CHECK_EQ_INT(vhdx_file_open(img, 0, 0, &r1, NULL), -EBUSY);
	/* force share: no lock, so no conflict */
	CHECK_EQ_INT(vhdx_file_open(img, VHDX_FILE_NOLOCK, 0, &fd, &st), 0);
	CHECK(!st.locked);
	close(fd);
	close(w);
}

/*
 * A child that takes the write lock, optionally leaves a daemon record
 * whose mount point is not mounted (a daemon that is closing), holds the
 * lock for hold_ms and exits.  Returns its PID once the lock is taken.
 */
static pid_t spawn_holder(int hold_ms, const char *record_mnt)
{
	int p[2];
	char c;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid == 0) {
		int fd;

		close(p[0]);
		if (vhdx_file_open(img, VHDX_FILE_WRITE, 0, &fd, NULL))
			_exit(1);
		if (record_mnt && vhdx_record_write(fd, record_mnt, false))
			_exit(2);
		c = 1;
		if (write(p[1], &c, 1) != 1)
			_exit(3);
		usleep((useconds_t)hold_ms * 1000);
		/* as the daemon does: the lock goes first, then the record */
		close(fd);
		if (record_mnt)
			vhdx_record_remove();
		_exit(0);
	}
	close(p[1]);
	if (pid < 0 || read(p[0], &c, 1) != 1) {
		close(p[0]);
		return -1;
	}
	close(p[0]);
	return pid;
}

static int reap(pid_t pid)
{
	int st;

	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

TEST(holder_in_another_process)
{
	struct vhdx_file_status st;
	long t0;
	int fd;
	pid_t pid = spawn_holder(3000, NULL);

	CHECK(pid > 0);
	t0 = now_ms();
	/* not a closing daemon: refused at once, whatever the wait */
	CHECK_EQ_INT(vhdx_file_open(img, 0, 5000, &fd, &st), -EBUSY);
	CHECK(now_ms() - t0 < 1500);
	CHECK_EQ_INT(st.holder.pid, pid);
	CHECK_EQ_STR(st.holder.prog, "test_file");
	CHECK(!st.holder.closing);
	kill(pid, SIGKILL);
	reap(pid);
	CHECK_EQ_INT(vhdx_file_open(img, 0, 0, &fd, NULL), 0);
	close(fd);
}

TEST(waits_for_a_closing_daemon)
{
	struct vhdx_file_status st;
	char mnt[96], buf[256], want[256];
	long t0, t;
	int fd;
	pid_t pid;

	if (geteuid() != 0 && !getenv("XDG_RUNTIME_DIR")) {
		unit_skip("no place for a runtime record");
		return;
	}
	snprintf(mnt, sizeof(mnt), "%s/not-mounted", dir);
	/* holds it 400 ms: the open waits for it, not for the 5 s */
	pid = spawn_holder(400, mnt);
	CHECK(pid > 0);
	t0 = now_ms();
	CHECK_EQ_INT(vhdx_file_open(img, 0, 5000, &fd, &st), 0);
	t = now_ms() - t0;
	CHECK(t >= 250 && t < 3000);
	close(fd);
	CHECK_EQ_INT(reap(pid), 0);

	/* held longer than the wait: -EBUSY after the wait, holder named */
	pid = spawn_holder(1500, mnt);
	CHECK(pid > 0);
	t0 = now_ms();
	CHECK_EQ_INT(vhdx_file_open(img, 0, 300, &fd, &st), -EBUSY);
	t = now_ms() - t0;
	CHECK(t >= 300 && t < 1500);
	CHECK_EQ_INT(st.holder.pid, pid);
	CHECK(st.holder.closing);
	CHECK_EQ_STR(st.holder.mountpoint, mnt);
	vhdx_lock_holder_describe(&st.holder, buf, sizeof(buf));
	snprintf(want, sizeof(want),
		 "locked by PID %ld (vhdxfuse), unmounted from %s but still "
		 "closing it",
		 (long)pid, mnt);
	CHECK_EQ_STR(buf, want);
	CHECK_EQ_INT(reap(pid), 0);
}

TEST(pid_exited)
{
	pid_t pid;
	long t0;

	CHECK(!vhdx_pid_exited((long)getpid()));
	pid = fork();
	if (pid == 0)
		_exit(0);
	CHECK(pid > 0);
	CHECK(!vhdx_pid_exited(1) || getpid() == 1);
	/* a zombie (exited, not yet reaped) counts as exited */
	t0 = now_ms();
	while (!vhdx_pid_exited((long)pid) && now_ms() - t0 < 5000)
		usleep(10000);
	CHECK(vhdx_pid_exited((long)pid));
	CHECK(kill(pid, 0) == 0); /* still there: a zombie */
	CHECK_EQ_INT(reap(pid), 0);
	CHECK(vhdx_pid_exited((long)pid));
}

int main(void)
{
	int fd;

	if (!mkdtemp(dir))
		return 99;
	snprintf(img, sizeof(img), "%s/img", dir);
	fd = open(img, O_CREAT | O_WRONLY, 0600);
	if (fd < 0)
		return 99;
	close(fd);
	RUN_TEST(kinds_of_files);
	RUN_TEST(shared_and_exclusive);
	RUN_TEST(holder_in_another_process);
	RUN_TEST(waits_for_a_closing_daemon);
	RUN_TEST(pid_exited);
	unlink(img);
	snprintf(img, sizeof(img), "%s/fifo", dir);
	unlink(img);
	rmdir(dir);
	return unit_done();
}
