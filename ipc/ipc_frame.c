/*
 * ipc_frame.c - encoding, decoding and transport of master<->worker frames.
 * A frame is a 4-byte big-endian length and a msgpack array whose first
 * element is the message type; each type's field list (ipc_frame.h) is
 * turned here into one descriptor table that both directions walk, so a
 * peer that sends anything else (a field missing, of the wrong type or
 * out of range) is detected as broken rather than half-understood.
 * msgpack-c does the (un)packing.
 */
#include "ipc_frame.h"

#include <arpa/inet.h>
#include <errno.h>
#include <msgpack.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A full socket buffer: how long a send waits for room before it looks
 * again (the peer reads its frames at once; this only bounds a stall). */
#define IPC_SEND_WAIT_MS 1000

/* The descriptor of each message type, made from its field list in
 * ipc_frame.h: name, where the value lives in struct ipc_msg, and the
 * range the decoder holds a peer to (and the encoder holds us to). */
struct ipc_field {
	const char *name;       /* NULL ends a list */
	bool    text;
	size_t  off;            /* in struct ipc_msg */
	size_t  cap;            /* text: bytes, NUL included */
	int64_t lo, hi;         /* integer: the range allowed */
};

#define IPC_FI_(m, n, lo, hi) \
	{ #n, false, offsetof(struct ipc_msg, u.m.n), 0, lo, hi },
#define IPC_FS_(m, n) \
	{ #n, true, offsetof(struct ipc_msg, u.m.n), \
	  sizeof(((struct ipc_msg *)0)->u.m.n), 0, 0 },
#define IPC_FIELDS_(T, num, m) static const struct ipc_field ipc_f_##m[] = { \
	IPC_##T##_FIELDS(IPC_FI_, IPC_FS_, m) { NULL } };
IPC_MESSAGES(IPC_FIELDS_)
#undef IPC_FIELDS_
#undef IPC_FI_
#undef IPC_FS_

static const struct ipc_type {
	const char *name;
	const struct ipc_field *fields;
} ipc_types[IPC_MSG_MAX] = {
#define IPC_TYPE_(T, num, m) [IPC_MSG_##T] = { #T, ipc_f_##m },
	IPC_MESSAGES(IPC_TYPE_)
#undef IPC_TYPE_
};

static const struct ipc_type *
ipc_type_get(int64_t type)
{
	if (type <= 0 || type >= IPC_MSG_MAX || ipc_types[type].name == NULL)
		return NULL;
	return &ipc_types[type];
}

static size_t
ipc_type_nfields(const struct ipc_type *t)
{
	size_t n = 0;

	while (t->fields[n].name != NULL)
		n++;
	return n;
}

const char *
ipc_msg_name(int type)
{
	const struct ipc_type *t = ipc_type_get(type);

	return t != NULL ? t->name : "?";
}

void
ipc_msg_layout(int type, char *buf, size_t cap)
{
	const struct ipc_type *t = ipc_type_get(type);
	size_t len;

	if (cap == 0)
		return;
	buf[0] = '\0';
	if (t == NULL)
		return;
	snprintf(buf, cap, "[%d", type);
	for (const struct ipc_field *f = t->fields; f->name != NULL; f++) {
		len = strlen(buf);
		snprintf(buf + len, cap - len, ", %s", f->name);
	}
	len = strlen(buf);
	snprintf(buf + len, cap - len, "]");
}

struct ipc_wbuf {
	char  *p;
	size_t len;
	size_t cap;
	bool   overflow;
};

static int
ipc_wbuf_write(void *data, const char *buf, size_t len)
{
	struct ipc_wbuf *w = data;

	if (w->len + len > w->cap) {
		w->overflow = true;
		return -1;
	}
	memcpy(w->p + w->len, buf, len);
	w->len += len;
	return 0;
}

static void
ipc_pack_str(msgpack_packer *pk, const char *s, size_t max)
{
	size_t n = strnlen(s, max - 1);
	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

int
ipc_frame_encode(const struct ipc_msg *m, char *buf, size_t cap)
{
	const struct ipc_type *t = ipc_type_get(m->type);
	struct ipc_wbuf w = { buf + 4, 0, cap > 4 ? cap - 4 : 0, false };
	msgpack_packer pk;
	uint32_t be;

	if (t == NULL || cap < 4)
		return -1;
	msgpack_packer_init(&pk, &w, ipc_wbuf_write);
	msgpack_pack_array(&pk, 1 + ipc_type_nfields(t));
	msgpack_pack_int(&pk, m->type);
	for (const struct ipc_field *f = t->fields; f->name != NULL; f++) {
		const char *p = (const char *)m + f->off;
		int64_t v;

		if (f->text) {
			ipc_pack_str(&pk, p, f->cap);
			continue;
		}
		memcpy(&v, p, sizeof(v));
		if (v < f->lo || v > f->hi)
			return -1;      /* the peer would call it broken */
		msgpack_pack_int64(&pk, v);
	}
	if (w.overflow || w.len > IPC_FRAME_MAX)
		return -1;
	be = htonl((uint32_t)w.len);
	memcpy(buf, &be, 4);
	return (int)(w.len + 4);
}

static int
ipc_get_int(const msgpack_object *o, int64_t *out)
{
	if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
		if (o->via.u64 > INT64_MAX)
			return -1;
		*out = (int64_t)o->via.u64;
	} else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*out = o->via.i64;
	} else {
		return -1;
	}
	return 0;
}

static int
ipc_get_str(const msgpack_object *o, char *dst, size_t cap)
{
	if (o->type != MSGPACK_OBJECT_STR || o->via.str.size >= cap)
		return -1;
	if (o->via.str.size == 0) {     /* msgpack-c gives no pointer then */
		dst[0] = '\0';
		return 0;
	}
	if (memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL)
		return -1;
	memcpy(dst, o->via.str.ptr, o->via.str.size);
	dst[o->via.str.size] = '\0';
	return 0;
}

/* msgpack-c sizes an array or map by the count its header claims, before
 * a single element has arrived (an 11-byte payload could make it map
 * 16 GiB).  The protocol only sends one flat fixarray of scalars, so the
 * decoder unpacks element by element and refuses any container header
 * (fixmap, fixarray, map16/32, array16/32) before msgpack-c sees it. */
static bool
ipc_byte_is_container(unsigned char b)
{
	return (b >= 0x80 && b <= 0x9f) || (b >= 0xdc && b <= 0xdf);
}

/* The next element of the outer array, a scalar, into up. */
static int
ipc_unpack_scalar(msgpack_unpacked *up, const char *payload, size_t len,
		  size_t *off)
{
	if (*off >= len ||
	    ipc_byte_is_container((unsigned char)payload[*off]))
		return -1;
	if (msgpack_unpack_next(up, payload, len, off) != MSGPACK_UNPACK_SUCCESS)
		return -1;
	return 0;
}

int
ipc_frame_decode(const char *payload, size_t len, struct ipc_msg *m)
{
	const struct ipc_type *t;
	msgpack_unpacked up;
	size_t off = 1, count;
	int rc = -1;
	int64_t type;

	memset(m, 0, sizeof(*m));
	msgpack_unpacked_init(&up);
	/* the outer header: a fixarray (0x90 | count), never array16/32 */
	if (len < 1 || ((unsigned char)payload[0] & 0xf0) != 0x90)
		goto fail;
	count = (unsigned char)payload[0] & 0x0f;
	if (count < 1 || ipc_unpack_scalar(&up, payload, len, &off) < 0 ||
	    ipc_get_int(&up.data, &type) < 0 || (t = ipc_type_get(type)) == NULL ||
	    count != 1 + ipc_type_nfields(t))
		goto fail;
	m->type = (int)type;    /* for the caller's log line, even if broken */
	for (const struct ipc_field *f = t->fields; f->name != NULL; f++) {
		char *p = (char *)m + f->off;
		int64_t v;

		if (ipc_unpack_scalar(&up, payload, len, &off) < 0)
			goto fail;
		if (f->text) {
			if (ipc_get_str(&up.data, p, f->cap) < 0)
				goto fail;
			continue;
		}
		if (ipc_get_int(&up.data, &v) < 0 || v < f->lo || v > f->hi)
			goto fail;
		memcpy(p, &v, sizeof(v));
	}
	if (off != len)
		goto fail;
	rc = 0;
fail:
	msgpack_unpacked_destroy(&up);
	return rc;
}

void
ipc_reader_init(struct ipc_reader *r)
{
	r->len = 0;
}

ssize_t
ipc_reader_fill(struct ipc_reader *r, int fd)
{
	ssize_t n;

	if (r->len >= sizeof(r->buf)) {
		errno = EMSGSIZE;
		return -1;
	}
	do
		n = read(fd, r->buf + r->len, sizeof(r->buf) - r->len);
	while (n < 0 && errno == EINTR);
	if (n > 0)
		r->len += (size_t)n;
	return n;
}

int
ipc_reader_next(struct ipc_reader *r, struct ipc_msg *m)
{
	uint32_t be;
	size_t plen;

	if (r->len < 4)
		return 0;
	memcpy(&be, r->buf, 4);
	plen = ntohl(be);
	if (plen == 0 || plen > IPC_FRAME_MAX) {
		errno = EPROTO;     /* callers tell this from a timeout */
		return -1;
	}
	if (r->len < 4 + plen)
		return 0;
	if (ipc_frame_decode(r->buf + 4, plen, m) < 0) {
		errno = EPROTO;
		return -1;
	}
	memmove(r->buf, r->buf + 4 + plen, r->len - 4 - plen);
	r->len -= 4 + plen;
	return 1;
}

int
ipc_frame_send(int fd, const struct ipc_msg *m)
{
	char buf[IPC_FRAME_MAX + 4];
	int n = ipc_frame_encode(m, buf, sizeof(buf));
	const char *p = buf;

	if (n < 0) {
		errno = EMSGSIZE;
		return -1;
	}
	while (n > 0) {
		ssize_t w = write(fd, p, (size_t)n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd pfd = { fd, POLLOUT, 0 };
				(void)poll(&pfd, 1, IPC_SEND_WAIT_MS);
				continue;
			}
			return -1;
		}
		p += w;
		n -= (int)w;
	}
	return 0;
}

int
ipc_frame_recv(int fd, struct ipc_reader *r, struct ipc_msg *m, int timeout_ms)
{
	for (;;) {
		int rc = ipc_reader_next(r, m);
		if (rc != 0)
			return rc;
		if (timeout_ms >= 0) {
			struct pollfd pfd = { fd, POLLIN, 0 };
			int p = poll(&pfd, 1, timeout_ms);
			if (p < 0 && errno == EINTR)
				continue;
			if (p <= 0) {
				errno = p == 0 ? ETIMEDOUT : errno;
				return -1;
			}
		}
		ssize_t n = ipc_reader_fill(r, fd);
		if (n == 0) {
			if (r->len == 0)
				return 0;
			errno = EPROTO;     /* EOF inside a frame */
			return -1;
		}
		if (n < 0)
			return -1;
	}
}
