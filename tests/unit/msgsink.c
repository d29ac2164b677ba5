/*
 * msgsink.c - the unit tests' message sink (see msgsink.h).
 */
#include <stdio.h>
#include <string.h>

#include "msgsink.h"

static char level_tag(enum vhdx_msg_level level)
{
	return level <= VHDX_MSG_ERR	   ? 'E'
	       : level == VHDX_MSG_WARNING ? 'W'
	       : level == VHDX_MSG_DEBUG   ? 'D'
					   : 'I';
}

void msgsink_cb(void *opaque, enum vhdx_msg_level level, const char *msg)
{
	struct msgsink *s = opaque;
	size_t n = strlen(msg);

	pthread_mutex_lock(&s->lock);
	if (level <= VHDX_MSG_ERR)
		s->n_err++;
	else if (level == VHDX_MSG_WARNING)
		s->n_warn++;
	if (level <= s->keep && s->len + n + 4 < sizeof(s->text)) {
		s->text[s->len++] = level_tag(level);
		s->text[s->len++] = ':';
		s->text[s->len++] = ' ';
		memcpy(s->text + s->len, msg, n);
		s->len += n;
		s->text[s->len++] = '\n';
		s->text[s->len] = '\0';
	}
	pthread_mutex_unlock(&s->lock);
}

void msgsink_reset(struct msgsink *s)
{
	pthread_mutex_lock(&s->lock);
	s->len = 0;
	s->text[0] = '\0';
	s->n_err = s->n_warn = 0;
	pthread_mutex_unlock(&s->lock);
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

/* Case-insensitive: is needle in [p, p + len)? */
static bool contains(const char *p, size_t len, const char *needle)
{
	size_t n = strlen(needle), i, k;

	for (i = 0; i + n <= len; i++) {
		for (k = 0; k < n; k++) {
			if (lower(p[i + k]) != lower(needle[k]))
				break;
		}
		if (k == n)
			return true;
	}
	return false;
}

bool msgsink_has(struct msgsink *s, char tag, const char *needle)
{
	const char *p, *end;
	bool found = false;

	pthread_mutex_lock(&s->lock);
	p = s->text;
	end = s->text + s->len;
	while (p < end && !found) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

		found = (!tag || p[0] == tag) && contains(p, len, needle);
		p += len + 1;
	}
	pthread_mutex_unlock(&s->lock);
	return found;
}

void msgsink_dump(struct msgsink *s)
{
	const char *p, *end;

	pthread_mutex_lock(&s->lock);
	p = s->text;
	end = s->text + s->len;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);

		printf("#   msg %.*s\n", (int)len, p);
		p += len + 1;
	}
	fflush(stdout);
	pthread_mutex_unlock(&s->lock);
}
