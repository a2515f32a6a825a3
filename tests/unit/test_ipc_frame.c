/*
 * test_ipc_frame.c - the channel's framing under the conditions a real
 * socket produces: frames split at every byte, several frames in one read,
 * an oversized length, garbage payloads, unknown types and wrong field
 * lists.  Every broken case must be reported as broken, never decoded.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <msgpack.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ipc_frame.h"

static int
feed(struct ipc_reader *r, const char *p, size_t n)
{
	if (r->len + n > sizeof(r->buf))
		return -1;
	memcpy(r->buf + r->len, p, n);
	r->len += n;
	return 0;
}

/* Every type, every field set to something other than 0, through encode
 * and decode: the payload comes back whole. */
static void
test_roundtrip_all_types(void **state)
{
	struct ipc_msg in, out;
	char buf[IPC_FRAME_MAX + 4];
	(void)state;

	for (int t = IPC_MSG_READY; t < IPC_MSG_MAX; t++) {
		memset(&in, 0, sizeof(in));
		in.type = t;
		switch (t) {
		case IPC_MSG_READY:
			in.u.ready.pid = 4242;
			break;
		case IPC_MSG_JOB:
			in.u.job = (struct ipc_job){ 1234567890123LL, 3, 7 };
			break;
		case IPC_MSG_DONE:
			in.u.done = (struct ipc_done){ 1234567890123LL, 2, 3, 2,
			    429, 1500, "" };
			strcpy(in.u.done.text, "rate limited: \xff bytes ok");
			break;
		case IPC_MSG_HEARTBEAT:
			in.u.heartbeat.job_id = 99;
			break;
		case IPC_MSG_TOKEN_REQ:
			in.u.token_req.provider = 1;
			break;
		case IPC_MSG_TOKEN_GRANT:
			in.u.token_grant.provider = 4;
			break;
		case IPC_MSG_PROVIDER_EVENT:
			in.u.event = (struct ipc_event){ 2, IPC_PROV_RATE_LIMITED,
			    2000, 429, "pause" };
			break;
		}
		int n = ipc_frame_encode(&in, buf, sizeof(buf));
		assert_true(n > 4);
		assert_int_equal(ipc_frame_decode(buf + 4, (size_t)n - 4, &out), 0);
		assert_memory_equal(&in, &out, sizeof(in));
	}
	/* DONE's retry-after and PROVIDER_EVENT's pause are two fields */
	assert_int_equal(out.type, IPC_MSG_PROVIDER_EVENT);
	assert_int_equal(out.u.event.pause_ms, 2000);
}

/* The layouts the table prints are the documented ones (ipc_frame.h). */
static void
test_layouts(void **state)
{
	char lay[200];
	(void)state;

	ipc_msg_layout(IPC_MSG_DONE, lay, sizeof(lay));
	assert_string_equal(lay, "[3, job_id, provider, outcome, status, http, "
	    "retry_after_ms, text]");
	ipc_msg_layout(IPC_MSG_JOB, lay, sizeof(lay));
	assert_string_equal(lay, "[2, job_id, provider, gen, lease]");
	ipc_msg_layout(IPC_MSG_PROVIDER_EVENT, lay, sizeof(lay));
	assert_string_equal(lay, "[8, provider, kind, pause_ms, http, text]");
	ipc_msg_layout(IPC_MSG_SHUTDOWN, lay, sizeof(lay));
	assert_string_equal(lay, "[5]");
	ipc_msg_layout(99, lay, sizeof(lay));
	assert_string_equal(lay, "");
	assert_string_equal(ipc_msg_name(IPC_MSG_TOKEN_REQ), "TOKEN_REQ");
	assert_string_equal(ipc_msg_name(0), "?");
}

/* Fields outside their range: the encoder refuses to send them and the
 * decoder refuses to take them. */
static void
test_ranges(void **state)
{
	struct ipc_msg in = { .type = IPC_MSG_JOB }, out;
	char buf[128];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	(void)state;

	in.u.job = (struct ipc_job){ 5, IPC_PROVIDER_MAX, 0 };
	assert_int_equal(ipc_frame_encode(&in, buf, sizeof(buf)), -1);
	in.u.job = (struct ipc_job){ 0, 1, 0 };     /* job ids start at 1 */
	assert_int_equal(ipc_frame_encode(&in, buf, sizeof(buf)), -1);
	in.type = IPC_MSG_PROVIDER_EVENT;
	in.u.event = (struct ipc_event){ 1, IPC_PROV_KIND_MAX, 0, 0, "" };
	assert_int_equal(ipc_frame_encode(&in, buf, sizeof(buf)), -1);

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	/* JOB [2, 7, -1, 0]: a provider index below 0 */
	msgpack_pack_array(&pk, 4);
	msgpack_pack_int(&pk, IPC_MSG_JOB);
	msgpack_pack_int(&pk, 7);
	msgpack_pack_int(&pk, -1);
	msgpack_pack_int(&pk, 0);
	assert_int_equal(ipc_frame_decode(sb.data, sb.size, &out), -1);
	msgpack_sbuffer_clear(&sb);
	/* DONE with http 1000 */
	msgpack_pack_array(&pk, 8);
	msgpack_pack_int(&pk, IPC_MSG_DONE);
	msgpack_pack_int(&pk, 7);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 2);
	msgpack_pack_int(&pk, 1000);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_str(&pk, 0);
	assert_int_equal(ipc_frame_decode(sb.data, sb.size, &out), -1);
	msgpack_sbuffer_clear(&sb);
	/* the same DONE with http 999 is fine */
	msgpack_pack_array(&pk, 8);
	msgpack_pack_int(&pk, IPC_MSG_DONE);
	msgpack_pack_int(&pk, 7);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 2);
	msgpack_pack_int(&pk, 999);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_str(&pk, 0);
	assert_int_equal(ipc_frame_decode(sb.data, sb.size, &out), 0);
	assert_int_equal(out.u.done.http, 999);
	assert_int_equal(out.u.done.outcome, 1);
	msgpack_sbuffer_clear(&sb);
	/* the old DONE, with a provider name where the index goes */
	msgpack_pack_array(&pk, 8);
	msgpack_pack_int(&pk, IPC_MSG_DONE);
	msgpack_pack_int(&pk, 7);
	msgpack_pack_str(&pk, 4);
	msgpack_pack_str_body(&pk, "noop", 4);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 2);
	msgpack_pack_int(&pk, 200);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_str(&pk, 0);
	assert_int_equal(ipc_frame_decode(sb.data, sb.size, &out), -1);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_empty_strings(void **state)
{
	struct ipc_msg in = { .type = IPC_MSG_DONE }, out;
	char buf[128];
	(void)state;

	in.u.done.job_id = 5;
	int n = ipc_frame_encode(&in, buf, sizeof(buf));
	assert_true(n > 4);
	assert_int_equal(ipc_frame_decode(buf + 4, (size_t)n - 4, &out), 0);
	assert_string_equal(out.u.done.text, "");
	assert_int_equal(out.u.done.job_id, 5);
}

static void
test_split_at_every_byte(void **state)
{
	struct ipc_msg in = { .type = IPC_MSG_DONE }, out;
	char buf[256];
	(void)state;

	in.u.done.job_id = 77;
	in.u.done.provider = 3;
	strcpy(in.u.done.text, "exit 3: boom");
	int n = ipc_frame_encode(&in, buf, sizeof(buf));
	assert_true(n > 0);
	for (int cut = 0; cut <= n; cut++) {
		struct ipc_reader r;
		ipc_reader_init(&r);
		feed(&r, buf, (size_t)cut);
		int rc = ipc_reader_next(&r, &out);
		if (cut < n) {
			assert_int_equal(rc, 0);
			feed(&r, buf + cut, (size_t)(n - cut));
		}
		if (cut < n)
			rc = ipc_reader_next(&r, &out);
		assert_int_equal(rc, 1);
		assert_int_equal(out.u.done.job_id, 77);
		assert_int_equal(out.u.done.provider, 3);
		assert_int_equal(r.len, 0);
	}
}

static void
test_many_frames_one_read(void **state)
{
	struct ipc_reader r;
	struct ipc_msg in = { .type = IPC_MSG_HEARTBEAT }, out;
	char buf[64];
	(void)state;

	ipc_reader_init(&r);
	for (int i = 1; i <= 50; i++) {
		in.u.heartbeat.job_id = i;
		int n = ipc_frame_encode(&in, buf, sizeof(buf));
		assert_int_equal(feed(&r, buf, (size_t)n), 0);
	}
	for (int i = 1; i <= 50; i++) {
		assert_int_equal(ipc_reader_next(&r, &out), 1);
		assert_int_equal(out.u.heartbeat.job_id, i);
	}
	assert_int_equal(ipc_reader_next(&r, &out), 0);
}

static void
test_oversize_length_is_broken(void **state)
{
	struct ipc_reader r;
	struct ipc_msg out;
	uint32_t be = htonl(IPC_FRAME_MAX + 1);
	(void)state;

	ipc_reader_init(&r);
	feed(&r, (char *)&be, 4);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	be = htonl(0);
	ipc_reader_init(&r);
	feed(&r, (char *)&be, 4);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
}

static void
frame_raw(struct ipc_reader *r, const char *payload, size_t n)
{
	uint32_t be = htonl((uint32_t)n);
	ipc_reader_init(r);
	feed(r, (char *)&be, 4);
	feed(r, payload, n);
}

static void
test_garbage_and_unknown(void **state)
{
	struct ipc_reader r;
	struct ipc_msg out;
	msgpack_sbuffer sb;
	msgpack_packer pk;
	(void)state;

	/* random bytes */
	frame_raw(&r, "\xc1\xc1\xc1\xc1", 4);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	/* a valid msgpack value that is not an array */
	frame_raw(&r, "\x2a", 1);
	assert_int_equal(ipc_reader_next(&r, &out), -1);

	/* unknown type 99 */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, 99);
	msgpack_pack_int(&pk, 1);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_clear(&sb);

	/* HEARTBEAT with a string where the id should be */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, IPC_MSG_HEARTBEAT);
	msgpack_pack_str(&pk, 3);
	msgpack_pack_str_body(&pk, "abc", 3);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_clear(&sb);

	/* HEARTBEAT with an extra field */
	msgpack_pack_array(&pk, 3);
	msgpack_pack_int(&pk, IPC_MSG_HEARTBEAT);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 2);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_clear(&sb);

	/* trailing bytes after the array */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, IPC_MSG_HEARTBEAT);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 5);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_clear(&sb);

	/* a string with an embedded NUL */
	msgpack_pack_array(&pk, 6);
	msgpack_pack_int(&pk, IPC_MSG_PROVIDER_EVENT);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_int(&pk, 0);
	msgpack_pack_str(&pk, 3);
	msgpack_pack_str_body(&pk, "a\0b", 3);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_destroy(&sb);
}

static void
test_socket_send_recv(void **state)
{
	int sv[2];
	struct ipc_reader r;
	struct ipc_msg in = { .type = IPC_MSG_JOB }, out;
	(void)state;

	in.u.job.job_id = 9;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ipc_reader_init(&r);
	assert_int_equal(ipc_frame_send(sv[0], &in), 0);
	assert_int_equal(ipc_frame_recv(sv[1], &r, &out, 1000), 1);
	assert_int_equal(out.u.job.job_id, 9);
	/* nothing more: times out */
	assert_int_equal(ipc_frame_recv(sv[1], &r, &out, 50), -1);
	close(sv[0]);
	assert_int_equal(ipc_frame_recv(sv[1], &r, &out, 1000), 0);
	close(sv[1]);
}

/* Counts claimed by a frame never drive allocation: a nested array or map
 * header claiming 2^32 elements in an 11-byte payload is refused at once
 * (msgpack-c would have sized it by the count), as is an outer array16 or
 * array32 header and a count larger than the bytes that follow. */
static void
test_claimed_counts_rejected(void **state)
{
	static const struct { const char *p; size_t n; } bad[] = {
		/* [4, array32(0xffffffff)] : the 16 GiB finding */
		{ "\x92\x04\xdd\xff\xff\xff\xff\x00\x00\x00\x00", 11 },
		/* [4, map32(0xffffffff)] */
		{ "\x92\x04\xdf\xff\xff\xff\xff\x00\x00\x00\x00", 11 },
		/* [4, array16(0xffff)] and [4, map16] */
		{ "\x92\x04\xdc\xff\xff", 5 },
		{ "\x92\x04\xde\xff\xff", 5 },
		/* [4, fixarray(15)] and [4, fixmap(15)] */
		{ "\x92\x04\x9f", 3 },
		{ "\x92\x04\x8f", 3 },
		/* outer array32 / array16 claiming many elements */
		{ "\xdd\xff\xff\xff\xff\x04\x01", 7 },
		{ "\xdc\x00\x02\x04\x01", 5 },
		/* outer fixarray(2) with one element present */
		{ "\x92\x04", 2 },
		/* a str32 claiming 4 GiB in a short payload */
		{ "\x93\x06\xdb\xff\xff\xff\xff\x41", 8 },
		/* trailing bytes after a whole frame */
		{ "\x92\x04\x01\x01", 4 },
		{ "", 0 },
	};
	struct ipc_msg out;
	(void)state;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(ipc_frame_decode(bad[i].p, bad[i].n, &out), -1);
	/* the well-formed heartbeat still decodes */
	assert_int_equal(ipc_frame_decode("\x92\x04\x07", 3, &out), 0);
	assert_int_equal(out.type, IPC_MSG_HEARTBEAT);
	assert_int_equal(out.u.heartbeat.job_id, 7);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_all_types),
		cmocka_unit_test(test_layouts),
		cmocka_unit_test(test_ranges),
		cmocka_unit_test(test_empty_strings),
		cmocka_unit_test(test_split_at_every_byte),
		cmocka_unit_test(test_many_frames_one_read),
		cmocka_unit_test(test_oversize_length_is_broken),
		cmocka_unit_test(test_garbage_and_unknown),
		cmocka_unit_test(test_socket_send_recv),
		cmocka_unit_test(test_claimed_counts_rejected),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
