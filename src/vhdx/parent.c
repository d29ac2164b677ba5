/*
 * parent.c - differencing images (fmt §9, §11): the parent locator, finding
 * and checking the parent, and reads that fall through to it.
 *
 * Parents are opened read-only through struct vhdx_file_ops and are never
 * written.  A candidate is accepted only if its current DataWriteGuid is the
 * child's parent_linkage (or parent_linkage2) and its logical sector size
 * matches; every candidate tried is reported when none fits.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/stat.h>

#include "internal.h"
#include "vhdx_inspect.h"

/* ---- the locator (fmt §6.3) ---- */

#define PL_MAX_PATH 4096

struct locator {
	char *linkage, *linkage2, *relative, *volume, *absolute;
};

static void locator_free(struct locator *l)
{
	free(l->linkage);
	free(l->linkage2);
	free(l->relative);
	free(l->volume);
	free(l->absolute);
}

static char **locator_slot(struct locator *l, const char *key)
{
	if (!strcmp(key, "parent_linkage"))
		return &l->linkage;
	if (!strcmp(key, "parent_linkage2"))
		return &l->linkage2;
	if (!strcmp(key, "relative_path"))
		return &l->relative;
	if (!strcmp(key, "volume_path"))
		return &l->volume;
	if (!strcmp(key, "absolute_win32_path"))
		return &l->absolute;
	return NULL;
}

/* File a decoded pair under its key; unknown keys are allowed. */
static int locator_keep(struct vhdx_image *img, struct vhdx_kv *kv,
			struct locator *l)
{
	char **slot = locator_slot(l, kv->key);

	if (!slot)
		return 0;
	if (*slot) {
		vhdx_err(img, "parent locator: key '%s' appears twice",
			 kv->key);
		return -EUCLEAN;
	}
	*slot = kv->value;
	kv->value = NULL;
	return 0;
}

static int parse_locator(struct vhdx_image *img, struct locator *l)
{
	static const uint8_t type[16] = VHDX_GUID_PARENT_LOCATOR_TYPE;
	const uint8_t *pl = img->parent_locator;
	uint32_t len = img->parent_locator_len;
	struct vhdx_kv *kv;
	size_t n;
	int ret;

	if (memcmp(pl + VHDX_PL_TYPE, type, 16) != 0) {
		char gs[VHDX_GUID_STR_LEN];

		vhdx_guid_to_str(pl + VHDX_PL_TYPE, gs);
		vhdx_err(img, "parent locator: unknown locator type {%s}", gs);
		return -EOPNOTSUPP;
	}
	ret = vhdx_locator_decode(img, pl, len, &kv, &n);
	for (size_t i = 0; ret == 0 && i < n; i++)
		ret = locator_keep(img, &kv[i], l);
	vhdx_locator_free(kv, n);
	if (ret < 0)
		return ret;
	if (!l->linkage) {
		vhdx_err(img, "parent locator: no parent_linkage key");
		return -EUCLEAN;
	}
	if (!l->relative && !l->volume && !l->absolute) {
		vhdx_err(img, "parent locator: no path to the parent");
		return -EUCLEAN;
	}
	return 0;
}

/* ---- candidate paths (fmt §11) ---- */

struct candidates {
	char *path[8];
	int n;
};

static void cand_add(struct candidates *c, char *path)
{
	if (!path)
		return;
	for (int i = 0; i < c->n; i++) {
		if (!strcmp(c->path[i], path)) {
			free(path);
			return;
		}
	}
	if (c->n < 8)
		c->path[c->n++] = path;
	else
		free(path);
}

static char *dir_of(const char *path)
{
	const char *slash = path ? strrchr(path, '/') : NULL;

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

static char *join(const char *dir, const char *rel)
{
	size_t a = strlen(dir), b = strlen(rel);
	char *p = a + b + 2 <= PL_MAX_PATH ? malloc(a + b + 2) : NULL;

	if (p) {
		memcpy(p, dir, a);
		p[a] = '/';
		memcpy(p + a + 1, rel, b + 1);
	}
	return p;
}

/* Find name in dir ignoring case (Windows paths are case-insensitive). */
static char *match_case(const char *dir, const char *name)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char *found = NULL;

	if (!d)
		return NULL;
	while ((e = readdir(d))) {
		if (!strcasecmp(e->d_name, name)) {
			found = join(dir, e->d_name);
			break;
		}
	}
	closedir(d);
	return found;
}

/* dir + a relative path with '/' separators, each component matched. */
static char *resolve_relative(const char *dir, const char *rel)
{
	char *copy = strdup(rel), *save = NULL, *cur = strdup(dir);
	struct stat st;

	if (!copy || !cur)
		goto fail;
	for (char *tok = strtok_r(copy, "/", &save); tok;
	     tok = strtok_r(NULL, "/", &save)) {
		char *next;

		if (!strcmp(tok, "."))
			continue;
		next = join(cur, tok);
		if (next && stat(next, &st) != 0 && strcmp(tok, "..")) {
			char *other = match_case(cur, tok);

			/* no match: keep the literal path, to report it */
			if (other) {
				free(next);
				next = other;
			}
		}
		free(cur);
		cur = next;
		if (!cur)
			goto fail;
	}
	free(copy);
	return cur;
fail:
	free(copy);
	free(cur);
	return NULL;
}

/* Windows path text to '/' separators, without "\\?\" and "X:". */
static char *win_to_unix(const char *w, bool *absolute)
{
	char *s, *p;

	*absolute = false;
	if (!strncmp(w, "\\\\?\\UNC\\", 8)) {
		w += 8;
		*absolute = true;
	} else if (!strncmp(w, "\\\\?\\", 4)) {
		w += 4;
		*absolute = true;
	} else if (!strncmp(w, "\\\\", 2)) {
		w += 2;
		*absolute = true;
	}
	if (((w[0] | 0x20) >= 'a' && (w[0] | 0x20) <= 'z') && w[1] == ':') {
		w += 2;
		*absolute = true;
	}
	if (w[0] == '\\')
		*absolute = true;
	s = strdup(w);
	for (p = s; p && *p; p++)
		if (*p == '\\')
			*p = '/';
	return s;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

/* Paths to try, in the order of fmt §11. */
static void make_candidates(const struct locator *l, const char *child,
			    struct candidates *c)
{
	char *dir = dir_of(child);
	const char *keys[3] = {l->relative, l->volume, l->absolute};

	if (!dir)
		return;
	for (int k = 0; k < 3; k++) {
		bool abs;
		char *u;

		if (!keys[k])
			continue;
		u = win_to_unix(keys[k], &abs);
		if (!u)
			continue;
		if (!abs && k == 0)
			cand_add(c, resolve_relative(dir, u));
		/* an absolute path without a drive may be a real path here */
		if (abs && u[0] == '/' && k == 2 && keys[k][1] != '\\')
			cand_add(c, strdup(u));
		/* last resort: the parent's file name next to the child */
		if (*base_name(u))
			cand_add(c, resolve_relative(dir, base_name(u)));
		free(u);
	}
	free(dir);
}

/* ---- opening and checking a candidate ---- */

/* Messages of a candidate's open: kept, not shown as errors. */
struct capture {
	char last[1024];
};

static void capture_msg(void *opaque, enum vhdx_msg_level level,
			const char *msg)
{
	struct capture *c = opaque;

	if (level <= VHDX_MSG_ERR)
		snprintf(c->last, sizeof(c->last), "%s", msg);
}

/*
 * Messages of an open parent (e.g. a corrupt segment of a BAT read on
 * demand): to the child's sink, naming the parent.
 */
static void parent_msg(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	const struct vhdx_image *child = opaque;

	vhdx_msgf(child, level, "parent %s: %s",
		  child->parent_path ? child->parent_path : "", msg);
}

static bool linkage_ok(const struct locator *l, const uint8_t dwg[16])
{
	uint8_t g[16];

	if (vhdx_guid_is_zero(dwg))
		return false; /* Windows writes parent_linkage2 = {0...} */
	if (vhdx_guid_from_str(l->linkage, g) == 0 && !memcmp(g, dwg, 16))
		return true;
	return l->linkage2 && vhdx_guid_from_str(l->linkage2, g) == 0 &&
	       !memcmp(g, dwg, 16);
}

/* dwg is what a merge of img into the parent would have set (rerun). */
static bool merge_guid_ok(const struct vhdx_image *img, const struct locator *l,
			  const uint8_t dwg[16])
{
	uint8_t g[16], want[16];

	if (vhdx_guid_from_str(l->linkage, g) < 0)
		return false;
	vhdx_merge_guid(g, img->data_write_guid, want);
	return !memcmp(want, dwg, 16);
}

/* Try one path; 0 and img->parent set on success, else why in reason. */
static int try_candidate(struct vhdx_image *img, const struct locator *l,
			 const char *path, char *reason, size_t rlen)
{
	struct vhdx_open_opts po = {
	    .flags = VHDX_OPEN_RDONLY | (img->flags & VHDX_OPEN_FULL_BAT),
	    .path = path,
	    .bat_eager_max = img->bat_eager_max,
	};
	struct capture cap = {""};
	struct vhdx_image *p = NULL;
	struct vhdx_io io;
	uint64_t id[2];
	char gs[VHDX_GUID_STR_LEN];
	int ret;

	ret = img->files.open(img->files.opaque, path, &io, id);
	if (ret < 0) {
		snprintf(reason, rlen, "%s", strerror(-ret));
		return ret;
	}
	for (int i = 0; i < img->n_chain_ids; i++) {
		if (img->chain_ids[i][0] == id[0] &&
		    img->chain_ids[i][1] == id[1]) {
			snprintf(reason, rlen,
				 "it is already in the chain "
				 "(a cycle)");
			ret = -ELOOP;
			goto fail;
		}
	}
	img->chain_ids[img->n_chain_ids][0] = id[0];
	img->chain_ids[img->n_chain_ids][1] = id[1];
	po.msg = capture_msg;
	po.msg_opaque = &cap;
	po.files = &img->files;
	ret = vhdx_open_chain(&p, &io, &po, img->depth + 1,
			      (const uint64_t(*)[2])img->chain_ids,
			      img->n_chain_ids + 1);
	if (ret < 0) {
		snprintf(reason, rlen, "not a usable VHDX image: %s",
			 cap.last[0] ? cap.last : strerror(-ret));
		goto fail;
	}
	img->parent_match = VHDX_PARENT_LINKED;
	if (!linkage_ok(l, p->data_write_guid)) {
		bool merging = merge_guid_ok(img, l, p->data_write_guid);

		bool other = !merging && vhdx_is_merge_guid(p->data_write_guid);

		if (merging && (img->flags & VHDX_OPEN_MERGE_RESUME)) {
			img->parent_match = VHDX_PARENT_MERGING;
		} else if ((img->flags & VHDX_OPEN_ANY_LINKAGE) && !other) {
			img->parent_match = VHDX_PARENT_FORCED;
		} else if (other) {
			snprintf(reason, rlen,
				 "linkage mismatch: it is being merged, or "
				 "was merged, with another differencing image "
				 "('vhdxtool merge'); this one is stale");
			ret = -ESTALE;
			goto fail;
		} else {
			vhdx_guid_to_str(p->data_write_guid, gs);
			if (merging)
				snprintf(reason, rlen,
					 "linkage mismatch: a 'vhdxtool merge' "
					 "of this image into it was "
					 "interrupted or has finished; run it "
					 "again to finish it (then the parent "
					 "alone shows this image's disk)");
			else
				snprintf(reason, rlen,
					 "linkage mismatch: its DataWriteGuid "
					 "is {%s}, the child expects %s (the "
					 "parent was changed after the child "
					 "was made, or it is another image)",
					 gs, l->linkage);
			ret = -ESTALE;
			goto fail;
		}
	}
	if (p->g.logical_sector != img->g.logical_sector) {
		snprintf(reason, rlen,
			 "logical sector size %u differs from the child's %u",
			 p->g.logical_sector, img->g.logical_sector);
		ret = -EUCLEAN;
		goto fail;
	}
	p->msg = parent_msg; /* cap is gone when this returns */
	p->msg_opaque = img;
	img->parent = p;
	img->parent_io = io;
	return 0;
fail:
	if (p)
		vhdx_close(p);
	img->files.close(img->files.opaque, &io);
	return ret;
}

int vhdx_open_parent(struct vhdx_image *img, const struct vhdx_open_opts *opts)
{
	struct locator l = {0};
	struct candidates c = {.n = 0};
	char reasons[3000] = "", reason[1200];
	bool stale = false;
	int ret;

	if (img->depth >= VHDX_MAX_CHAIN) {
		vhdx_err(img, "parent: the chain is deeper than %d images",
			 VHDX_MAX_CHAIN);
		return -ELOOP;
	}
	ret = parse_locator(img, &l);
	if (ret < 0)
		goto out;
	if (vhdx_guid_from_str(l.linkage, img->linkage) < 0)
		memset(img->linkage, 0, 16);
	if (opts && opts->parent_path)
		cand_add(&c, strdup(opts->parent_path));
	else if (opts && opts->path)
		make_candidates(&l, opts->path, &c);
	ret = -ENOENT;
	for (int i = 0; i < c.n && ret < 0; i++) {
		size_t n = strlen(reasons);

		ret = try_candidate(img, &l, c.path[i], reason, sizeof(reason));
		if (ret == -ESTALE)
			stale = true;
		if (ret == 0) {
			img->parent_path = strdup(c.path[i]);
			vhdx_info(img, "parent: %s", c.path[i]);
		} else {
			snprintf(reasons + n, sizeof(reasons) - n,
				 "\n  tried %s: %s", c.path[i], reason);
		}
	}
	/* a parent that changed says more than a path that does not exist */
	if (ret == -ENOENT && stale)
		ret = -ESTALE;
	if (ret < 0)
		vhdx_err(img,
			 "parent: no usable parent found (relative_path '%s', "
			 "absolute_win32_path '%s', parent_linkage %s)%s%s",
			 l.relative ? l.relative : "",
			 l.absolute ? l.absolute : "", l.linkage,
			 c.n ? ""
			     : "\n  no candidate path (the image's own "
			       "path is unknown; give the parent explicitly)",
			 reasons);
out:
	for (int i = 0; i < c.n; i++)
		free(c.path[i]);
	locator_free(&l);
	return ret;
}

void vhdx_parent_free(struct vhdx_image *img)
{
	if (img->parent) {
		vhdx_close(img->parent);
		img->files.close(img->files.opaque, &img->parent_io);
		img->parent = NULL;
	}
	vhdx_bitmaps_free(img);
	free(img->parent_path);
	img->parent_path = NULL;
}
