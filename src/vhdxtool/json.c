/*
 * json.c - a small streaming JSON writer for `info --json`: objects,
 * arrays, strings (escaped; the library hands us UTF-8), unsigned integers,
 * booleans and null, indented two spaces per level.
 */
#include "config.h"

#include "vhdxtool.h"

void vt_json_begin(struct vt_json *j, FILE *f)
{
	j->f = f;
	j->depth = 0;
	j->need_comma = false;
}

void vt_json_end(struct vt_json *j)
{
	fputc('\n', j->f);
}

/* Comma, newline and indentation before a value, then "key": */
static void vt_json_key(struct vt_json *j, const char *key)
{
	if (j->need_comma)
		fputc(',', j->f);
	if (j->depth)
		fputc('\n', j->f);
	for (int i = 0; i < j->depth; i++)
		fputs("  ", j->f);
	if (key)
		fprintf(j->f, "\"%s\": ", key);
	j->need_comma = true;
}

static void vt_json_open(struct vt_json *j, const char *key, char c)
{
	vt_json_key(j, key);
	fputc(c, j->f);
	j->depth++;
	j->need_comma = false;
}

static void vt_json_close(struct vt_json *j, char c)
{
	bool empty = !j->need_comma;

	j->depth--;
	if (!empty) {
		fputc('\n', j->f);
		for (int i = 0; i < j->depth; i++)
			fputs("  ", j->f);
	}
	fputc(c, j->f);
	j->need_comma = true;
}

void vt_json_object(struct vt_json *j, const char *key)
{
	vt_json_open(j, key, '{');
}

void vt_json_array(struct vt_json *j, const char *key)
{
	vt_json_open(j, key, '[');
}

void vt_json_close_object(struct vt_json *j)
{
	vt_json_close(j, '}');
}

void vt_json_close_array(struct vt_json *j)
{
	vt_json_close(j, ']');
}

void vt_json_str(struct vt_json *j, const char *key, const char *v)
{
	if (!v) {
		vt_json_null(j, key);
		return;
	}
	vt_json_key(j, key);
	fputc('"', j->f);
	for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(j->f, "\\%c", *p);
		else if (*p < 0x20 || *p == 0x7F)
			fprintf(j->f, "\\u%04x", *p);
		else
			fputc(*p, j->f);
	}
	fputc('"', j->f);
}

void vt_json_u64(struct vt_json *j, const char *key, uint64_t v)
{
	vt_json_key(j, key);
	fprintf(j->f, "%llu", (unsigned long long)v);
}

void vt_json_bool(struct vt_json *j, const char *key, bool v)
{
	vt_json_key(j, key);
	fputs(v ? "true" : "false", j->f);
}

void vt_json_null(struct vt_json *j, const char *key)
{
	vt_json_key(j, key);
	fputs("null", j->f);
}
