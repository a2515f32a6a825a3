/*
 * fuzz_ipc_frame.c - the master<->worker frame decoder and the incremental
 * reader, on bytes a broken or hostile peer could send.  The input is read
 * as a stream (cut into uneven pieces) and as one payload; whatever
 * decodes must encode again to a frame that decodes to the same message.
 * Allocation must follow the bytes given, never the counts claimed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ipc_frame.h"

static void
check_roundtrip(const struct ipc_msg *m)
{
	char buf[IPC_FRAME_MAX + 4];
	struct ipc_msg again;
	int n = ipc_frame_encode(m, buf, sizeof(buf));

	if (n < 4 || ipc_frame_decode(buf + 4, (size_t)n - 4, &again) < 0 ||
	    memcmp(m, &again, sizeof(again)) != 0)
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct ipc_reader r;
	struct ipc_msg m;
	size_t off = 0, step = 1;

	if (ipc_frame_decode((const char *)data, size, &m) == 0)
		check_roundtrip(&m);
	ipc_reader_init(&r);
	while (off < size) {
		size_t n = size - off < step ? size - off : step;
		if (n > sizeof(r.buf) - r.len)
			break;
		memcpy(r.buf + r.len, data + off, n);
		r.len += n;
		off += n;
		step = step * 3 + 1;
		int rc;
		while ((rc = ipc_reader_next(&r, &m)) == 1)
			check_roundtrip(&m);
		if (rc < 0)
			break;
	}
	return 0;
}
