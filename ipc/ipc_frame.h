/*
 * ipc_frame.h - the master<->worker channel: length-prefixed msgpack frames
 * over a SOCK_STREAM socketpair.  A frame is a 4-byte big-endian payload
 * length followed by a msgpack array [type, fields...].  Payloads over
 * IPC_FRAME_MAX, unknown types, malformed arrays and fields out of range
 * are errors: the peer is treated as broken, never trusted.
 *
 * Each message is defined once, below, as a list of fields in wire order
 * (IPC_<TYPE>_FIELDS).  That list makes the payload struct, drives the
 * encoder and the decoder's checks (ipc_frame.c) and prints the layout
 * (ipc_msg_layout), so no second description can drift from it.
 */
#ifndef MPFARM_IPC_FRAME_H
#define MPFARM_IPC_FRAME_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <sys/types.h>

#define IPC_FRAME_MAX  (64 * 1024)
#define IPC_TEXT_MAX   1024          /* longest text field carried, NUL included */
/* Jobs the master may send a busy worker ahead of the one it counts as
 * running; the worker's queue holds one more (worker.h).  One number for
 * both peers. */
#define IPC_AHEAD_MAX  16
/* Provider indexes on the wire are below this (the provider table,
 * common_provider.h, is checked against it at compile time). */
#define IPC_PROVIDER_MAX 32

/* DONE's outcome when the worker did not run the job: it was not
 * claimable (taken, finished, not due), or the worker could not record
 * what happened; the master gives back whatever that worker still holds. */
#define IPC_OUT_SKIPPED (-1)

/* Provider event kinds (PROVIDER_EVENT kind). */
enum ipc_prov_event {
	IPC_PROV_OK = 0,        /* a request succeeded (AIMD increase)      */
	IPC_PROV_RATE_LIMITED,  /* 429: pause the provider for every worker */
	IPC_PROV_CONCURRENCY,   /* too many concurrent requests: decrease   */
	IPC_PROV_QUOTA,         /* quota gone / key rejected: pause long    */
	IPC_PROV_KIND_MAX
};

/* ---- the messages ------------------------------------------------------
 * I(m, name, lo, hi): an integer, refused outside [lo, hi].
 * S(m, name): a text, at most IPC_TEXT_MAX - 1 bytes, no NUL inside.
 * (m is the payload's member in struct ipc_msg, passed through.)
 * w->m: worker to master; m->w: master to worker. */

/* 1 READY, w->m: the worker is up and its store is open. */
#define IPC_READY_FIELDS(I, S, m) \
	I(m, pid, 1, INT32_MAX)
/* 2 JOB, m->w: run this job with this provider (an index into the
 * provider table), under config generation gen.  The master decides the
 * provider; the worker never works it out again.  lease: the lease of
 * the master's own claim, which the worker adopts (PostgreSQL), or 0:
 * the worker claims the job itself (SQLite). */
#define IPC_JOB_FIELDS(I, S, m) \
	I(m, job_id, 1, INT64_MAX) \
	I(m, provider, 0, IPC_PROVIDER_MAX - 1) \
	I(m, gen, 0, INT64_MAX) \
	I(m, lease, 0, INT64_MAX)
/* 3 DONE, w->m: the job ended.  outcome: enum job_outcome or
 * IPC_OUT_SKIPPED; status: enum job_status it ended in; http: the
 * provider's HTTP status (0 none); retry_after_ms: what the provider asked
 * to wait (0 none); text: the error, "" on success. */
#define IPC_DONE_FIELDS(I, S, m) \
	I(m, job_id, 1, INT64_MAX) \
	I(m, provider, 0, IPC_PROVIDER_MAX - 1) \
	I(m, outcome, IPC_OUT_SKIPPED, 255) \
	I(m, status, 0, 255) \
	I(m, http, 0, 999) \
	I(m, retry_after_ms, 0, INT64_MAX) \
	S(m, text)
/* 4 HEARTBEAT, w->m: still working on job_id. */
#define IPC_HEARTBEAT_FIELDS(I, S, m) \
	I(m, job_id, 1, INT64_MAX)
/* 5 SHUTDOWN, m->w: finish the current job, skip the rest, exit 0. */
#define IPC_SHUTDOWN_FIELDS(I, S, m)
/* 6 TOKEN_REQ, w->m: may I send a request to provider now?  (Blocks the
 * worker until the grant.) */
#define IPC_TOKEN_REQ_FIELDS(I, S, m) \
	I(m, provider, 0, IPC_PROVIDER_MAX - 1)
/* 7 TOKEN_GRANT, m->w: yes. */
#define IPC_TOKEN_GRANT_FIELDS(I, S, m) \
	I(m, provider, 0, IPC_PROVIDER_MAX - 1)
/* 8 PROVIDER_EVENT, w->m: a provider-wide condition.  kind: enum
 * ipc_prov_event; pause_ms: how long the provider asked every worker to
 * wait (0 = the master's backoff); http: the status that said so. */
#define IPC_PROVIDER_EVENT_FIELDS(I, S, m) \
	I(m, provider, 0, IPC_PROVIDER_MAX - 1) \
	I(m, kind, 0, IPC_PROV_KIND_MAX - 1) \
	I(m, pause_ms, 0, INT64_MAX) \
	I(m, http, 0, 999) \
	S(m, text)

/* Every message: M(TYPE, number, payload member). */
#define IPC_MESSAGES(M) \
	M(READY, 1, ready) \
	M(JOB, 2, job) \
	M(DONE, 3, done) \
	M(HEARTBEAT, 4, heartbeat) \
	M(SHUTDOWN, 5, shutdown) \
	M(TOKEN_REQ, 6, token_req) \
	M(TOKEN_GRANT, 7, token_grant) \
	M(PROVIDER_EVENT, 8, event)

#define IPC_ENUM_(T, n, m) IPC_MSG_##T = n,
enum ipc_msg_type {
	IPC_MESSAGES(IPC_ENUM_)
	IPC_MSG_MAX
};
#undef IPC_ENUM_

#define IPC_INT_MEMBER_(m, n, lo, hi) int64_t n;
#define IPC_TEXT_MEMBER_(m, n) char n[IPC_TEXT_MAX];
/* One payload struct per message type; SHUTDOWN has no fields (its
 * member is a placeholder never on the wire). */
struct ipc_ready          { IPC_READY_FIELDS(IPC_INT_MEMBER_, IPC_TEXT_MEMBER_, _) };
struct ipc_job            { IPC_JOB_FIELDS(IPC_INT_MEMBER_, IPC_TEXT_MEMBER_, _) };
struct ipc_done           { IPC_DONE_FIELDS(IPC_INT_MEMBER_, IPC_TEXT_MEMBER_, _) };
struct ipc_heartbeat      { IPC_HEARTBEAT_FIELDS(IPC_INT_MEMBER_, IPC_TEXT_MEMBER_, _) };
struct ipc_shutdown       { char none; };
struct ipc_token_req      { IPC_TOKEN_REQ_FIELDS(IPC_INT_MEMBER_, IPC_TEXT_MEMBER_, _) };
struct ipc_token_grant    { IPC_TOKEN_GRANT_FIELDS(IPC_INT_MEMBER_, IPC_TEXT_MEMBER_, _) };
struct ipc_event          { IPC_PROVIDER_EVENT_FIELDS(IPC_INT_MEMBER_, IPC_TEXT_MEMBER_, _) };
#undef IPC_INT_MEMBER_
#undef IPC_TEXT_MEMBER_

/* One message: its type and the payload of that type (u.<member> as
 * IPC_MESSAGES names it).  Texts are NUL-terminated inside the struct. */
struct ipc_msg {
	int type;               /* enum ipc_msg_type */
	union {
		struct ipc_ready ready;
		struct ipc_job job;
		struct ipc_done done;
		struct ipc_heartbeat heartbeat;
		struct ipc_shutdown shutdown;
		struct ipc_token_req token_req;
		struct ipc_token_grant token_grant;
		struct ipc_event event;
	} u;
};

/* The type's name ("DONE"), "?" for a number that is not a type. */
const char *ipc_msg_name(int type);
/* The type's wire layout as text, "[3, job_id, provider, ..., text]",
 * into buf[cap] (always NUL-terminated); "" for an unknown type. */
void ipc_msg_layout(int type, char *buf, size_t cap);

/* Encode msg into a frame (length prefix included) in buf[cap]; returns
 * the frame length, or -1 when the type is unknown, an integer field is
 * outside its range or the frame would not fit (nothing sent is then
 * half-valid: the peer would call it broken). */
int  ipc_frame_encode(const struct ipc_msg *msg, char *buf, size_t cap);
/* Decode one payload (without the prefix) into *msg (zeroed first).
 * Returns 0, or -1 for anything but exactly the type's layout: malformed
 * msgpack, a container, unknown type, wrong field count, a field of the
 * wrong type or out of its range, trailing bytes. */
int  ipc_frame_decode(const char *payload, size_t len, struct ipc_msg *msg);

/* Incremental reader for a non-blocking fd (master side). */
struct ipc_reader {
	char   buf[IPC_FRAME_MAX + 4];
	size_t len;
};
/* Empty the reader.  Never fails. */
void ipc_reader_init(struct ipc_reader *r);
/* Read what is available from fd into r.  Returns bytes read (>0), 0 on
 * EOF, -1 on error (EAGAIN gives -1 with errno EAGAIN; a full buffer
 * gives EMSGSIZE). */
ssize_t ipc_reader_fill(struct ipc_reader *r, int fd);
/* Take the next whole message out of r: 1 = *msg filled, 0 = need more
 * bytes, -1 = broken peer (oversize length, malformed payload; errno
 * EPROTO). */
int  ipc_reader_next(struct ipc_reader *r, struct ipc_msg *msg);

/* Blocking helpers (worker side, and master writes which are tiny and to
 * a socket with buffer space): send a whole frame, handling partial writes
 * and EINTR.  0, or -1 with errno (EMSGSIZE when it does not encode). */
int  ipc_frame_send(int fd, const struct ipc_msg *msg);
/* Blocking receive of one message: 1 = got one, 0 = EOF, -1 = error or
 * broken frame (errno ETIMEDOUT when timeout_ms passed without one).
 * timeout_ms < 0 waits for ever. */
int  ipc_frame_recv(int fd, struct ipc_reader *r, struct ipc_msg *msg,
		    int timeout_ms);

#endif
