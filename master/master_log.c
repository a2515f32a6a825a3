/*
 * master_log.c - the farm's log: the --log-file the master appends to
 * (opened again at HUP, so logrotate can move it), and the one pipe every
 * worker's stderr goes into.  The master forwards whole lines only, so a
 * worker's line is never split across a reopen nor interleaved with the
 * master's; the progress line on a terminal is cleared first.
 */
#include "master_farm.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* The --log-file, appended to; a link there is refused, its target left
 * alone (at start and at every HUP reopen alike). */
static int
farm_log_file_open(char *err, size_t errlen)
{
	return file_open_regular(farm.cfg->log_file, O_WRONLY | O_APPEND |
	    O_CREAT, 0644, err, errlen);
}

/* Worker log lines come through one pipe; forward whole lines only. */
static void
farm_log_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	char chunk[8192];
	ssize_t n;

	(void)loop;
	(void)revents;
	while ((n = read(w->fd, chunk, sizeof(chunk))) > 0) {
		buf_append(&farm.log_partial, chunk, (size_t)n);
		char *nl = memrchr(farm.log_partial.data, '\n', farm.log_partial.len);
		if (nl == NULL)
			continue;
		size_t whole = (size_t)(nl - farm.log_partial.data) + 1;
		if (log_get_fd() == 2)
			farm_progress_clear();
		for (size_t off = 0; off < whole; ) {
			ssize_t k = write(log_get_fd(), farm.log_partial.data + off,
			    whole - off);
			if (k <= 0 && errno != EINTR)
				break;
			if (k > 0)
				off += (size_t)k;
		}
		memmove(farm.log_partial.data, farm.log_partial.data + whole,
		    farm.log_partial.len - whole);
		farm.log_partial.len -= whole;
	}
}

int
farm_log_open(void)
{
	char err[600];

	if (farm.cfg->log_file != NULL) {
		int fd = farm_log_file_open(err, sizeof(err));
		if (fd < 0) {
			say_err("log file: %s", err);
			return -1;
		}
		log_set_fd(fd);
	}
	if (pipe2(farm.log_pipe, O_CLOEXEC) < 0) {
		say_err("pipe: %s", strerror(errno));
		return -1;
	}
	fd_set_nonblock(farm.log_pipe[0], true);
	ev_io_init(&farm.log_io, farm_log_cb, farm.log_pipe[0], EV_READ);
	ev_io_start(farm.loop, &farm.log_io);
	return 0;
}

void
farm_log_reopen(void)
{
	char err[600];
	int fd, old;

	if (farm.cfg->log_file == NULL)
		return;
	fd = farm_log_file_open(err, sizeof(err));
	if (fd < 0) {
		log_error("log_reopen_failed", "path=%s error=%s",
		    log_quote(farm.cfg->log_file), log_quote(err));
		return;
	}
	old = log_get_fd();
	log_set_fd(fd);
	if (old > 2)
		close(old);
	log_info("log_reopened", "path=%s", log_quote(farm.cfg->log_file));
}

void
farm_log_drain(void)
{
	if (farm.loop != NULL && farm.log_pipe[0] >= 0)
		farm_log_cb(farm.loop, &farm.log_io, 0);
}

void
farm_log_close(void)
{
	buf_free(&farm.log_partial);
	for (int i = 0; i < 2; i++)
		if (farm.log_pipe[i] >= 0)
			close(farm.log_pipe[i]);
	if (log_get_fd() > 2) {
		close(log_get_fd());
		log_set_fd(2);
	}
}
