/*
 * ipc_frame.h - the master<->worker channel: length-prefixed msgpack frames
 * over a SOCK_STREAM socketpair.  A frame is a 4-byte big-endian payload
 * length followed by a msgpack array [type, fields...].  Payloads over
 * IPC_FRAME_MAX, unknown types and malformed arrays are errors: the peer is
 * treated as broken, never trusted.
 */
#ifndef MPFARM_IPC_FRAME_H
#define MPFARM_IPC_FRAME_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <sys/types.h>

#define IPC_FRAME_MAX  (64 * 1024)
#define IPC_TEXT_MAX   1024          /* longest text field carried */
/* Jobs the master may send a busy worker ahead of the one it counts as
 * running; the worker's queue holds one more (worker.h).  One number for
 * both peers. */
#define IPC_AHEAD_MAX  16

enum ipc_msg_type {
	IPC_MSG_READY = 1,      /* w->m: [1, pid]  worker is up, store open   */
	IPC_MSG_JOB,            /* m->w: [2, job_id]                          */
	IPC_MSG_DONE,           /* w->m: [3, job_id, outcome, status, http,
				 *        retry_after_ms, provider, text]     */
	IPC_MSG_HEARTBEAT,      /* w->m: [4, job_id]                          */
	IPC_MSG_SHUTDOWN,       /* m->w: [5]  finish nothing new, exit 0      */
	IPC_MSG_TOKEN_REQ,      /* w->m: [6, provider]  may I send a request? */
	IPC_MSG_TOKEN_GRANT,    /* m->w: [7, provider]                        */
	IPC_MSG_PROVIDER_EVENT, /* w->m: [8, provider, kind, ms, http, text]  */
	IPC_MSG_MAX
};

/* Provider event kinds (IPC_MSG_PROVIDER_EVENT). */
enum ipc_prov_event {
	IPC_PROV_OK = 0,        /* a request succeeded (AIMD increase)      */
	IPC_PROV_RATE_LIMITED,  /* 429: pause the provider `ms` for all    */
	IPC_PROV_CONCURRENCY,   /* too many concurrent requests: decrease  */
	IPC_PROV_QUOTA,         /* quota gone / key rejected: pause long   */
};

/* One decoded message; text points into msg-owned storage. */
struct ipc_msg {
	int      type;
	int64_t  job_id;
	int64_t  pid;
	int      outcome;       /* enum job_outcome */
	int      status;        /* enum job_status the job ended in */
	int      http;
	int64_t  ms;            /* retry_after / pause */
	int      kind;          /* enum ipc_prov_event */
	char     provider[32];
	char     text[IPC_TEXT_MAX];
};

/* Encode msg into a frame (length prefix included) in buf[cap]; returns
 * the frame length or -1 if it would not fit. */
int  ipc_frame_encode(const struct ipc_msg *msg, char *buf, size_t cap);
/* Decode one payload (without the prefix). Returns 0 or -1 (malformed,
 * unknown type, wrong field count or types). */
int  ipc_frame_decode(const char *payload, size_t len, struct ipc_msg *msg);

/* Incremental reader for a non-blocking fd (master side). */
struct ipc_reader {
	char   buf[IPC_FRAME_MAX + 4];
	size_t len;
};
void ipc_reader_init(struct ipc_reader *r);
/* Read what is available from fd into r.  Returns bytes read (>0), 0 on
 * EOF, -1 on error (EAGAIN gives -1 with errno EAGAIN). */
ssize_t ipc_reader_fill(struct ipc_reader *r, int fd);
/* Take the next whole message out of r: 1 = *msg filled, 0 = need more
 * bytes, -1 = broken peer (oversize length, malformed payload). */
int  ipc_reader_next(struct ipc_reader *r, struct ipc_msg *msg);

/* Blocking helpers (worker side, and master writes which are tiny and to
 * a socket with buffer space): send a whole frame, handling partial writes
 * and EINTR.  0 / -1. */
int  ipc_frame_send(int fd, const struct ipc_msg *msg);
/* Blocking receive of one message: 1 = got one, 0 = EOF, -1 = error or
 * broken frame.  timeout_ms < 0 waits for ever. */
int  ipc_frame_recv(int fd, struct ipc_reader *r, struct ipc_msg *msg,
		    int timeout_ms);

#endif
