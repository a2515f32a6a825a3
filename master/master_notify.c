/*
 * master_notify.c - the systemd notify datagram protocol without
 * libsystemd, so that `Type=notify` units know when the farm is really up
 * (READY=1 once workers run), what it is doing (STATUS=...) and that a
 * graceful stop is under way (STOPPING=1).  The protocol is one AF_UNIX
 * SOCK_DGRAM message to $NOTIFY_SOCKET; a leading '@' names a socket in the
 * abstract namespace.  A fresh socket per message keeps this stateless and
 * fork-safe: nothing here survives into a worker.
 */
#include "master_notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Fill *sa from NOTIFY_SOCKET's value; returns the address length, or -1
 * with errno set. */
static int
notify_addr_parse(const char *name, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n = strlen(name);

	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (name[0] != '/' && name[0] != '@') {
		/* "vsock:..." and anything else this build cannot speak */
		errno = EAFNOSUPPORT;
		return -1;
	}
	if (n < 2 || n > sizeof(sa->sun_path) ||
	    (name[0] == '/' && n == sizeof(sa->sun_path))) {
		/* a path needs its NUL inside sun_path; an abstract name not */
		errno = n < 2 ? EINVAL : ENAMETOOLONG;
		return -1;
	}
	memcpy(sa->sun_path, name, n);
	if (name[0] == '@')
		sa->sun_path[0] = '\0';
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n +
	    (name[0] == '/' ? 1 : 0));
	return 0;
}

int
master_notify_send(const char *state)
{
	const char *name = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa;
	socklen_t salen = 0;
	size_t len;
	ssize_t sent;
	int fd = -1, saved;

	if (name == NULL || name[0] == '\0')
		return 0;
	if (state == NULL || state[0] == '\0') {
		errno = EINVAL;
		goto fail;
	}
	if (notify_addr_parse(name, &sa, &salen) < 0)
		goto fail;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	len = strlen(state);
	do {
		sent = sendto(fd, state, len, MSG_NOSIGNAL | MSG_DONTWAIT,
		    (const struct sockaddr *)&sa, salen);
	} while (sent < 0 && errno == EINTR);
	if (sent < 0)
		goto fail;
	if ((size_t)sent != len) {
		errno = EMSGSIZE;
		goto fail;
	}
	close(fd);
	return 0;
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	errno = saved;
	return -1;
}
