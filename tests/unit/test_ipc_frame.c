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

static void
test_roundtrip_all_types(void **state)
{
	struct ipc_msg in = { 0 }, out;
	char buf[IPC_FRAME_MAX + 4];
	(void)state;

	for (int t = IPC_MSG_READY; t < IPC_MSG_MAX; t++) {
		memset(&in, 0, sizeof(in));
		in.type = t;
		in.job_id = 1234567890123LL;
		in.pid = 4242;
		in.outcome = 3;
		in.status = 2;
		in.http = 429;
		in.ms = 1500;
		in.kind = 1;
		strcpy(in.provider, "openai");
		strcpy(in.text, "rate limited: \xff bytes ok");
		int n = ipc_frame_encode(&in, buf, sizeof(buf));
		assert_true(n > 4);
		assert_int_equal(ipc_frame_decode(buf + 4, (size_t)n - 4, &out), 0);
		assert_int_equal(out.type, t);
		if (t == IPC_MSG_JOB || t == IPC_MSG_HEARTBEAT || t == IPC_MSG_DONE)
			assert_int_equal(out.job_id, in.job_id);
		if (t == IPC_MSG_READY)
			assert_int_equal(out.pid, 4242);
		if (t == IPC_MSG_DONE) {
			assert_int_equal(out.outcome, 3);
			assert_int_equal(out.status, 2);
			assert_int_equal(out.http, 429);
			assert_int_equal(out.ms, 1500);
			assert_string_equal(out.text, in.text);
		}
		if (t == IPC_MSG_TOKEN_REQ || t == IPC_MSG_PROVIDER_EVENT)
			assert_string_equal(out.provider, "openai");
	}
}

static void
test_empty_strings(void **state)
{
	struct ipc_msg in = { .type = IPC_MSG_DONE, .job_id = 5 }, out;
	char buf[128];
	(void)state;

	int n = ipc_frame_encode(&in, buf, sizeof(buf));
	assert_true(n > 4);
	assert_int_equal(ipc_frame_decode(buf + 4, (size_t)n - 4, &out), 0);
	assert_string_equal(out.provider, "");
	assert_string_equal(out.text, "");
	assert_int_equal(out.job_id, 5);
}

static void
test_split_at_every_byte(void **state)
{
	struct ipc_msg in = { .type = IPC_MSG_DONE, .job_id = 77 }, out;
	char buf[256];
	(void)state;

	strcpy(in.provider, "exec");
	strcpy(in.text, "exit 3: boom");
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
		assert_int_equal(out.job_id, 77);
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
		in.job_id = i;
		int n = ipc_frame_encode(&in, buf, sizeof(buf));
		assert_int_equal(feed(&r, buf, (size_t)n), 0);
	}
	for (int i = 1; i <= 50; i++) {
		assert_int_equal(ipc_reader_next(&r, &out), 1);
		assert_int_equal(out.job_id, i);
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

	/* JOB with a string where the id should be */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, IPC_MSG_JOB);
	msgpack_pack_str(&pk, 3);
	msgpack_pack_str_body(&pk, "abc", 3);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_clear(&sb);

	/* JOB with an extra field */
	msgpack_pack_array(&pk, 3);
	msgpack_pack_int(&pk, IPC_MSG_JOB);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 2);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_clear(&sb);

	/* trailing bytes after the array */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, IPC_MSG_JOB);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_int(&pk, 5);
	frame_raw(&r, sb.data, sb.size);
	assert_int_equal(ipc_reader_next(&r, &out), -1);
	msgpack_sbuffer_clear(&sb);

	/* a string with an embedded NUL */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_int(&pk, IPC_MSG_TOKEN_REQ);
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
	struct ipc_msg in = { .type = IPC_MSG_JOB, .job_id = 9 }, out;
	(void)state;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	ipc_reader_init(&r);
	assert_int_equal(ipc_frame_send(sv[0], &in), 0);
	assert_int_equal(ipc_frame_recv(sv[1], &r, &out, 1000), 1);
	assert_int_equal(out.job_id, 9);
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
	assert_int_equal(out.job_id, 7);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip_all_types),
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
