/*
 * cmd_merge.c - `vhdxtool merge CHILD`: fold a differencing image into its
 * parent, offline, so that the parent shows what the child showed.
 *
 * The parent is opened read-write first: its exclusive lock keeps every
 * mount of it, and of any child of it, away while it changes (a mounted
 * child holds a shared lock on its parent).  Nothing is written before the
 * child has been opened against it, so the child's linkage check sees the
 * parent's DataWriteGuid unchanged.  The child is opened read-only with the
 * parent named explicitly, through a file opener that takes no lock (our
 * own exclusive lock would refuse the usual shared one).
 *
 * Then every payload block the child does not leave to its parent is read
 * as the child shows it and compared with the parent in 4 KiB pieces; only
 * pieces that differ are written.  Afterwards the parent is opened again
 * with its own chain and checked.  The child itself is never written.
 *
 * Interruptions (merge_support.c has the details): before its first write
 * the merge gives the parent the DataWriteGuid derived from the child
 * (vhdx_merge_parent_guid), in one header update.  From then on every other
 * child of the parent is stale, and a rerun of the same command recognises
 * the partly merged parent (VHDX_OPEN_MERGE_RESUME) and continues: the
 * child's view is the same over it, as a merge writes only where the child
 * has data, and the comparison skips what is already there.  The parent is
 * flushed every VT_MERGE_FLUSH bytes written, so a rerun does not start
 * over.  --resume also accepts a parent with any DataWriteGuid, for a merge
 * an older vhdxtool left behind (it renewed the GUID at random).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vhdx_inspect.h"
#include "vhdxtool.h"

#define VT_MERGE_CHUNK (1024 * 1024)  /* bytes read at a time */
#define VT_MERGE_GRAIN 4096	      /* compare and write granularity */
#define VT_MERGE_FLUSH (256ull << 20) /* bytes written between flushes */

struct vt_merge_cmd {
	const char *child;
	const char *parent_opt; /* --parent */
	bool resume;		/* --resume */
};

struct vt_merge {
	const struct vt_merge_cmd *c;
	char *parent;		  /* the parent's path, as resolved */
	struct vt_image pv;	  /* the parent, read-write */
	int child_fd;		  /* the child, read-only */
	struct vhdx_io child_io;  /* on child_fd */
	struct vhdx_image *child; /* opened against pv's file */
	uint8_t *cbuf, *pbuf;
	uint64_t blocks;    /* child blocks that hold their own content */
	uint64_t merged;    /* of those, done */
	uint64_t written;   /* bytes written into the parent */
	uint64_t unflushed; /* of those, since the last flush */
	uint8_t dwg_before[16];
	uint8_t dwg_merge[16]; /* what the parent gets before the first write */
	bool guid_set;	   /* the parent has it (maybe from an earlier run) */
	bool session_guid; /* this run's session uses it */
	int match;	   /* enum vhdx_parent_match */
};

static void vt_merge_help(void)
{
	printf("usage: " VT_PROG " merge [options] CHILD\n"
	       "\n"
	       "Fold the differencing image CHILD into its parent, so that "
	       "the parent\n"
	       "shows what CHILD showed.  Only what differs is written.  "
	       "Nothing may use\n"
	       "the parent meanwhile (it is locked; a mounted child or "
	       "parent is\n"
	       "refused).  CHILD itself is not changed, but it is stale "
	       "afterwards (its\n"
	       "parent changed), as is every other child of that parent "
	       "from the first\n"
	       "write on.  The parent is opened and checked again when "
	       "done.\n"
	       "\n"
	       "An interrupted merge (a signal, a crash, a full disk) is "
	       "finished by\n"
	       "running the same command again; until then the parent is "
	       "partly merged\n"
	       "and CHILD can be opened by this command only.\n"
	       "\n"
	       "Options:\n"
	       "      --parent PARENT  CHILD's parent, instead of the file "
	       "its parent\n"
	       "                       locator names (it must still match "
	       "the linkage)\n"
	       "      --resume         finish a merge interrupted by an "
	       "older vhdxtool:\n"
	       "                       accept the parent whatever its "
	       "DataWriteGuid.\n"
	       "                       Only if nothing but that merge "
	       "changed it!\n"
	       "  -q, --quiet          no progress indicator, no report\n"
	       "  -v, --verbose        also print informational messages\n"
	       "  -h, --help           print this help and exit\n"
	       "\n" VT_EXIT_CODES_HELP);
}

#define VT_OPT_RESUME 0x200

static const struct option vt_merge_longopts[] = {
    {"parent", required_argument, NULL, VT_OPT_PARENT},
    {"resume", no_argument, NULL, VT_OPT_RESUME},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

static int vt_merge_parse(int argc, char **argv, struct vt_merge_cmd *c)
{
	int ch;

	optind = 1;
	opterr = 0;
	while ((ch = getopt_long(argc, argv, "qvh", vt_merge_longopts, NULL)) !=
	       -1) {
		switch (ch) {
		case VT_OPT_PARENT:
			c->parent_opt = optarg;
			break;
		case VT_OPT_RESUME:
			c->resume = true;
			break;
		case 'q':
			vt_quiet = 1;
			break;
		case 'v':
			vt_verbose = 1;
			break;
		case 'h':
			vt_merge_help();
			return -1;
		default:
			return vt_bad_option("merge", argv);
		}
	}
	if (vt_one_operand("merge", "CHILD", argc, argv, &c->child))
		return VT_EXIT_USAGE;
	return 0;
}

/* ---- steps ---- */

/* Flags of the child's opens: read-only, and a partly merged parent. */
static unsigned int vt_merge_child_flags(const struct vt_merge_cmd *c)
{
	return VT_OPEN_FLAGS | VHDX_OPEN_RDONLY | VHDX_OPEN_MERGE_RESUME |
	       (c->resume ? VHDX_OPEN_ANY_LINKAGE : 0);
}

/* What to do when CHILD does not find its parent. */
static void vt_merge_hint(const struct vt_merge_cmd *c, int err)
{
	if (err != -ESTALE || c->resume)
		return;
	fprintf(stderr,
		VT_PROG ": if a merge of %s into that parent was interrupted "
			"by an older vhdxtool\n"
			"  (which gave the parent a random DataWriteGuid), "
			"--resume finishes it; use it\n"
			"  only if nothing else has written to the parent "
			"since\n",
		c->child);
}

/* Open CHILD once, with its chain, to learn which file its parent is. */
static int vt_merge_resolve(struct vt_merge *m)
{
	struct vhdx_open_opts opts = {
	    .flags = vt_merge_child_flags(m->c),
	    .msg = vt_vhdx_msg,
	    .msg_opaque = (void *)m->c->child,
	    .path = m->c->child,
	    .parent_path = m->c->parent_opt,
	};
	struct vhdx_image *img;
	struct vhdx_info ci, pi;
	struct vhdx_io io;
	int fd, ret;

	ret = vt_open_input(m->c->child, &fd);
	if (ret)
		return ret;
	vhdx_io_fd_init(&io, &fd);
	ret = vhdx_open(&img, &io, &opts);
	if (ret < 0) {
		vt_merge_hint(m->c, ret);
		close(fd);
		return vt_exit_for_open_error(ret);
	}
	vhdx_get_info(img, &ci);
	if (!ci.has_parent) {
		vt_err("%s is not a differencing image; there is nothing to "
		       "merge it into",
		       m->c->child);
		vhdx_close(img);
		close(fd);
		return VT_EXIT_USAGE;
	}
	vhdx_get_info(vhdx_parent(img), &pi);
	m->parent = strdup(vhdx_parent_path(img));
	vhdx_close(img);
	close(fd);
	if (!m->parent) {
		vt_err("out of memory");
		return VT_EXIT_FAILURE;
	}
	if (ci.virtual_size > pi.virtual_size) {
		vt_err("%s (%llu bytes) is larger than its parent %s (%llu "
		       "bytes); merge cannot grow the parent",
		       m->c->child, (unsigned long long)ci.virtual_size,
		       m->parent, (unsigned long long)pi.virtual_size);
		return VT_EXIT_PROBLEMS;
	}
	return 0;
}

/* The parent read-write (no write yet), then the child against it. */
static int vt_merge_open(struct vt_merge *m)
{
	struct vhdx_open_opts opts = {
	    .flags = vt_merge_child_flags(m->c),
	    .msg = vt_vhdx_msg,
	    .msg_opaque = (void *)m->c->child,
	    .path = m->c->child,
	    .files = vhdx_fd_file_ops_unlocked(),
	};
	struct vhdx_info info;
	int ret;

	ret = vt_image_open(&m->pv, m->parent, true, NULL, NULL);
	if (ret)
		return ret;
	vhdx_get_info(m->pv.img, &info);
	memcpy(m->dwg_before, info.data_write_guid, 16);
	ret = vt_open_input(m->c->child, &m->child_fd);
	if (ret)
		return ret;
	opts.parent_path = m->parent;
	vhdx_io_fd_init(&m->child_io, &m->child_fd);
	ret = vhdx_open(&m->child, &m->child_io, &opts);
	if (ret < 0) {
		m->child = NULL;
		vt_merge_hint(m->c, ret);
		return vt_exit_for_open_error(ret);
	}
	m->match = vhdx_parent_match(m->child);
	if (vhdx_merge_parent_guid(m->child, m->dwg_merge) < 0) {
		vt_err("%s: no parent linkage", m->c->child);
		return VT_EXIT_PROBLEMS;
	}
	/* a rerun: the parent already has it */
	m->guid_set = !memcmp(m->dwg_merge, m->dwg_before, 16);
	if (m->match == VHDX_PARENT_MERGING)
		vt_note("%s: resuming the merge of %s that was interrupted (or "
			"has finished)",
			m->parent, m->c->child);
	else if (m->match == VHDX_PARENT_FORCED)
		vt_note("%s: its DataWriteGuid does not match %s; merging "
			"anyway (--resume)",
			m->parent, m->c->child);
	return 0;
}

/*
 * Before the first write: the parent's new DataWriteGuid, the one a rerun
 * recognises.  From now on the parent's other children are stale.
 */
static int vt_merge_set_guid(struct vt_merge *m)
{
	int ret;

	/*
	 * Also when the parent already has it (a rerun): otherwise the first
	 * write would renew it at random.
	 */
	if (m->session_guid)
		return 0;
	ret = vhdx_set_data_write_guid(m->pv.img, m->dwg_merge);
	if (ret < 0) {
		vt_err("%s: cannot update the headers: %s", m->parent,
		       strerror(-ret));
		return VT_EXIT_FAILURE;
	}
	m->guid_set = m->session_guid = true;
	return 0;
}

static bool vt_same(const uint8_t *a, const uint8_t *b, size_t n)
{
	return !memcmp(a, b, n);
}

/* Write the grains of cbuf that differ from pbuf, as runs. */
static int vt_merge_piece(struct vt_merge *m, size_t n, uint64_t off)
{
	size_t i = 0, start, g;

	while (i < n) {
		while (i < n &&
		       vt_same(m->cbuf + i, m->pbuf + i,
			       g = n - i < VT_MERGE_GRAIN ? n - i
							  : VT_MERGE_GRAIN))
			i += g;
		start = i;
		while (i < n &&
		       !vt_same(m->cbuf + i, m->pbuf + i,
				g = n - i < VT_MERGE_GRAIN ? n - i
							   : VT_MERGE_GRAIN))
			i += g;
		if (i > start) {
			long w;

			if (vt_merge_set_guid(m))
				return VT_EXIT_FAILURE;
			w = vhdx_write(m->pv.img, m->cbuf + start, i - start,
				       off + start);

			if (w != (long)(i - start)) {
				vt_err("%s: write failed at offset %llu: %s",
				       m->parent,
				       (unsigned long long)(off + start),
				       strerror(w < 0 ? (int)-w : EIO));
				return VT_EXIT_FAILURE;
			}
			m->written += i - start;
			m->unflushed += i - start;
		}
	}
	return 0;
}

/* Keep what is merged so far, so that a rerun goes on from there. */
static int vt_merge_checkpoint(struct vt_merge *m)
{
	int ret;

	if (m->unflushed < VT_MERGE_FLUSH)
		return 0;
	ret = vhdx_flush(m->pv.img);
	if (ret < 0) {
		vt_err("%s: flush failed: %s", m->parent, strerror(-ret));
		return VT_EXIT_FAILURE;
	}
	m->unflushed = 0;
	return 0;
}

static int vt_merge_read(struct vhdx_image *img, const char *path, void *buf,
			 size_t n, uint64_t off)
{
	long r = vhdx_read(img, buf, n, off);

	if (r == (long)n)
		return 0;
	vt_err("%s: read failed at offset %llu: %s", path,
	       (unsigned long long)off,
	       r < 0 ? strerror((int)-r) : "unexpected end of the disk");
	return VT_EXIT_FAILURE;
}

/* One payload block of the child: [off, end). */
static int vt_merge_block(struct vt_merge *m, uint64_t off, uint64_t end)
{
	int ret;

	while (off < end) {
		size_t n = end - off < VT_MERGE_CHUNK ? (size_t)(end - off)
						      : VT_MERGE_CHUNK;

		if (vt_interrupted)
			return VT_EXIT_FAILURE;
		ret = vt_merge_read(m->child, m->c->child, m->cbuf, n, off);
		if (!ret)
			ret = vt_merge_read(m->pv.img, m->parent, m->pbuf, n,
					    off);
		if (!ret)
			ret = vt_merge_piece(m, n, off);
		if (ret)
			return ret;
		off += n;
	}
	return 0;
}

static int vt_merge_copy(struct vt_merge *m)
{
	struct vhdx_info info;
	struct vt_progress p;
	int ret = 0, st;

	vhdx_get_info(m->child, &info);
	m->cbuf = malloc(VT_MERGE_CHUNK);
	m->pbuf = malloc(VT_MERGE_CHUNK);
	if (!m->cbuf || !m->pbuf) {
		vt_err("out of memory");
		return VT_EXIT_FAILURE;
	}
	for (uint64_t pb = 0; pb < info.payload_blocks; pb++)
		if (vhdx_block_state(m->child, pb) != VHDX_BLOCK_NOT_PRESENT)
			m->blocks++;
	vt_progress_begin(&p, "merging", m->blocks);
	for (uint64_t pb = 0; pb < info.payload_blocks && !ret; pb++) {
		uint64_t off = pb * info.block_size;
		uint64_t end = off + info.block_size;

		st = vhdx_block_state(m->child, pb);
		if (st == VHDX_BLOCK_NOT_PRESENT)
			continue;
		if (st < 0) {
			vt_err("%s: %s", m->c->child, strerror(-st));
			ret = VT_EXIT_FAILURE;
			break;
		}
		if (end > info.virtual_size)
			end = info.virtual_size;
		ret = vt_merge_block(m, off, end);
		if (!ret)
			ret = vt_merge_checkpoint(m);
		if (!ret)
			vt_progress_update(&p, ++m->merged);
	}
	vt_progress_end(&p);
	if (vt_interrupted) {
		vt_err("interrupted");
		ret = VT_EXIT_FAILURE;
	}
	/*
	 * --resume over a parent the interrupted merge had already finished
	 * writing: nothing differs, but the parent must still get the merge's
	 * DataWriteGuid, or a later plain rerun would not recognise it.
	 */
	if (!ret && m->match == VHDX_PARENT_FORCED)
		ret = vt_merge_set_guid(m);
	return ret;
}

static void vt_merge_close(struct vt_merge *m, int *status)
{
	int ret;

	if (m->child) {
		vhdx_close(m->child);
		m->child = NULL;
	}
	if (m->child_fd >= 0)
		close(m->child_fd);
	m->child_fd = -1;
	if (m->pv.img) {
		ret = vt_image_close(&m->pv);
		if (ret && !*status)
			*status = ret;
	}
	free(m->cbuf);
	free(m->pbuf);
	m->cbuf = m->pbuf = NULL;
}

/* The sink of the check after the merge: problems only, counted. */
struct vt_merge_count {
	const char *path;
	unsigned int errors;
};

static void vt_merge_check_msg(void *opaque, enum vhdx_msg_level level,
			       const char *msg)
{
	struct vt_merge_count *c = opaque;

	if (level > VHDX_MSG_ERR)
		return;
	c->errors++;
	fprintf(stderr, VT_PROG ": %s: %s\n", c->path, msg);
}

/* Open the parent again with its own chain and check it. */
static int vt_merge_validate(struct vt_merge *m, uint8_t dwg[16])
{
	struct vt_merge_count count = {m->parent, 0};
	struct vhdx_check_report r;
	struct vhdx_info info;
	struct vt_image vi;
	int ret;

	ret = vt_image_open_chain(&vi, m->parent, NULL, false,
				  vt_merge_check_msg, &count);
	if (ret) {
		vt_err("%s: cannot be opened after the merge", m->parent);
		return ret;
	}
	vhdx_get_info(vi.img, &info);
	memcpy(dwg, info.data_write_guid, 16);
	ret = vhdx_check(vi.img, &r, NULL, NULL);
	vt_image_close(&vi);
	if (ret < 0) {
		vt_err("%s: checking after the merge failed: %s", m->parent,
		       strerror(-ret));
		return VT_EXIT_FAILURE;
	}
	if (r.problems) {
		vt_err("%s: %u problem%s after the merge (see vhdxtool check)",
		       m->parent, r.problems, r.problems == 1 ? "" : "s");
		return VT_EXIT_PROBLEMS;
	}
	return 0;
}

static void vt_merge_report(const struct vt_merge *m, const uint8_t dwg[16])
{
	char h[32];

	if (vt_quiet)
		return;
	vt_human_size(m->written, h, sizeof(h));
	printf("%s: merged into %s: %llu block%s of the child, %s written\n",
	       m->c->child, m->parent, (unsigned long long)m->blocks,
	       m->blocks == 1 ? "" : "s", h);
	if (!memcmp(dwg, m->dwg_before, 16) && m->match == VHDX_PARENT_LINKED)
		printf("%s: the parent did not change; %s is still its "
		       "valid child\n",
		       m->parent, m->c->child);
	else
		printf("%s: not changed, but now stale: its parent has "
		       "changed, so it can no longer be opened (nor can any "
		       "other child of %s); delete it\n",
		       m->c->child, m->parent);
}

int vt_cmd_merge(int argc, char **argv)
{
	struct vt_merge_cmd c = {0};
	struct vt_merge m = {0};
	uint8_t dwg[16];
	int ret;

	ret = vt_merge_parse(argc, argv, &c);
	if (ret)
		return ret < 0 ? VT_EXIT_OK : ret;
	m.c = &c;
	m.child_fd = -1;
	m.pv.fd = -1;
	ret = vt_merge_resolve(&m);
	if (!ret)
		ret = vt_merge_open(&m);
	if (!ret)
		ret = vt_merge_copy(&m);
	vt_merge_close(&m, &ret);
	if (ret) {
		if (m.guid_set)
			vt_err("%s is partly merged; run '" VT_PROG
			       " merge %s' again to finish the merge (until "
			       "then only that command opens %s)",
			       m.parent, c.child, c.child);
		goto out;
	}
	ret = vt_merge_validate(&m, dwg);
	if (!ret)
		vt_merge_report(&m, dwg);
out:
	free(m.parent);
	if (fflush(stdout) != 0 || ferror(stdout))
		ret = ret ? ret : VT_EXIT_FAILURE;
	return ret;
}
