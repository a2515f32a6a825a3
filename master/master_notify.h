/*
 * master_notify.h - tell a service manager how the farm is doing, with the
 * systemd notify protocol (sd_notify(3)) spoken directly, without
 * libsystemd: one datagram of newline-separated VAR=value assignments sent
 * to the AF_UNIX socket named by $NOTIFY_SOCKET.  Under runit, supervisord
 * or a terminal the variable is unset and every call is a cheap no-op.
 */
#ifndef MPFARM_MASTER_NOTIFY_H
#define MPFARM_MASTER_NOTIFY_H

/* Send `state` (e.g. "READY=1", "STATUS=5 workers, 120 jobs done",
 * "STOPPING=1", or several joined by '\n') to $NOTIFY_SOCKET.  The socket
 * may be a filesystem path ("/run/systemd/notify") or an abstract name
 * ("@name").  Returns 0 when sent, or when NOTIFY_SOCKET is unset or empty
 * (nothing to do); -1 with errno set when it is malformed, too long, not
 * AF_UNIX, or the send fails.  Never blocks for long (MSG_DONTWAIT), never
 * raises SIGPIPE, leaves no descriptor open.  Only the master should call
 * it: systemd's default NotifyAccess=main ignores other processes. */
int master_notify_send(const char *state);

#endif
