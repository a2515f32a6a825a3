/*
 * worker_exec.c - the `exec` provider: a local engine (whisper.cpp,
 * pocketsphinx, apertium, a script) run as a child process.  The command is
 * split into words like a shell would (quotes and backslashes), without a
 * shell; {input} and {lang} are substituted inside words, so each stays one
 * word whatever bytes the path holds.  {input} is the transcriber's media
 * descriptor; a translator reads stdin and may not use it.  The engine
 * runs in its own process group with an environment stripped of the
 * provider keys.  The job ends when the engine exits (its pipes drained
 * for a moment more); then its whole group is killed, and whatever it
 * started elsewhere - adopted by the worker, a child subreaper - too.  A
 * worker killed as hung does the same before it dies, and the engine dies
 * with its worker (PR_SET_PDEATHSIG) even on SIGKILL.
 * Exit 0 = success, 75 (EX_TEMPFAIL) = retry, anything else = permanent.
 */
#include "worker_provider.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define EXEC_OUT_MAX   (256L * 1024 * 1024)
/* How long one poll for the engine's pipes waits: the pidfd wakes it when
 * the engine ends; without one (old kernels) it looks again sooner. */
#define EXEC_POLL_MS         MS_PER_S
#define EXEC_POLL_NOPIDFD_MS 100
#define EXEC_ERR_TAIL  400
#define EXEC_TEMPFAIL  75
#define EXEC_DRAIN_MS  200      /* reading the pipes after the engine exited */
#define EXEC_REAP_MS   5000     /* killing and reaping what it left behind */

/* Split `cmd` into words; NULL on unbalanced quotes.  Substitutes {input}
 * and {lang}. */
char **
worker_exec_split(const char *cmd, const char *input, const char *lang)
{
	char **argv = NULL;
	int argc = 0;
	const char *p = cmd;

	for (;;) {
		struct buf word;
		bool have = false;

		while (*p == ' ' || *p == '\t' || *p == '\n')
			p++;
		if (*p == '\0')
			break;
		buf_init(&word);
		while (*p && *p != ' ' && *p != '\t' && *p != '\n') {
			char q = *p;
			have = true;
			if (q == '\'' || q == '"') {
				const char *end = p + 1;
				while (*end && *end != q) {
					if (q == '"' && *end == '\\' && end[1])
						end++;
					end++;
				}
				if (*end != q) {
					buf_free(&word);
					goto fail;
				}
				for (const char *s = p + 1; s < end; s++) {
					if (q == '"' && *s == '\\' && (s[1] == '"' || s[1] == '\\'))
						s++;
					else if (strncmp(s, "{input}", 7) == 0 && s + 7 <= end) {
						buf_append(&word, input, strlen(input));
						s += 6;
						continue;
					} else if (strncmp(s, "{lang}", 6) == 0 && s + 6 <= end) {
						buf_append(&word, lang, strlen(lang));
						s += 5;
						continue;
					}
					buf_append(&word, s, 1);
				}
				p = end + 1;
			} else if (q == '\\' && p[1]) {
				buf_append(&word, p + 1, 1);
				p += 2;
			} else if (strncmp(p, "{input}", 7) == 0) {
				buf_append(&word, input, strlen(input));
				p += 7;
			} else if (strncmp(p, "{lang}", 6) == 0) {
				buf_append(&word, lang, strlen(lang));
				p += 6;
			} else {
				buf_append(&word, p++, 1);
			}
		}
		if (have) {
			buf_terminate(&word);
			argv = xrealloc(argv, sizeof(char *) * (size_t)(argc + 2));
			argv[argc++] = word.data;
			argv[argc] = NULL;
		}
	}
	return argv;
fail:
	for (int i = 0; i < argc; i++)
		free(argv[i]);
	free(argv);
	return NULL;
}

void
worker_exec_free(char **argv)
{
	if (argv == NULL)
		return;
	for (int i = 0; argv[i]; i++)
		free(argv[i]);
	free(argv);
}

/* Variables an engine never sees: every provider's key (each names its
 * own in the provider table: an engine that prints its environment would
 * put them into a transcript) and the service manager's socket, which is
 * the master's to talk to. */
static const char *const exec_env_drop[] = {
	"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", NULL,
};

static bool
exec_env_named(const char *entry, const char *name)
{
	size_t len = strlen(name);

	return strncmp(entry, name, len) == 0 && entry[len] == '=';
}

/* The engine's environment: pointers into environ, without the above. */
static char **
exec_env_build(void)
{
	size_t n = 0, k = 0;
	char **env;

	while (environ[n] != NULL)
		n++;
	env = xcalloc(n + 1, sizeof(*env));
	for (size_t i = 0; i < n; i++) {
		bool drop = false;
		for (int d = 0; exec_env_drop[d] != NULL && !drop; d++)
			drop = exec_env_named(environ[i], exec_env_drop[d]);
		for (int d = 0; provider_at(d) != NULL && !drop; d++)
			drop = provider_at(d)->key_env != NULL &&
			    exec_env_named(environ[i], provider_at(d)->key_env);
		if (!drop)
			env[k++] = environ[i];
	}
	return env;
}

/* The engine being run, for the SIGTERM handler: a worker the master
 * kills as hung takes the engine's process group with it and reaps what
 * is left before it dies, so nothing of the job outlives the worker. */
static volatile pid_t exec_pgid;
static volatile sig_atomic_t exec_term;

static void
exec_term_handler(int sig)
{
	if (exec_pgid > 0) {
		(void)kill(-exec_pgid, SIGKILL);
		exec_term = 1;          /* exec_run cleans up, then dies */
		return;
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* keep_fd (>= FD_AFTER_STDIO, or -1): the media descriptor, left open
 * across exec in the engine only when {input} names it as /dev/fd/N. */
static pid_t
exec_spawn(char **argv, int keep_fd, int *in_fd, int *out_fd, int *err_fd)
{
	int pin[2] = { -1, -1 }, pout[2] = { -1, -1 }, perr[2] = { -1, -1 };
	pid_t pid, parent = getpid();
	char **env = exec_env_build();

	if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0 ||
	    pipe2(perr, O_CLOEXEC) < 0)
		goto fail;
	pid = fork();
	if (pid < 0)
		goto fail;
	if (pid == 0) {
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);     /* the worker died before prctl */
		/* its own group: killed whole when it ends; and out of the
		 * terminal's, so a Ctrl-C is the master's graceful stop */
		(void)setpgid(0, 0);
		dup2(pin[0], 0);
		dup2(pout[1], 1);
		dup2(perr[1], 2);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGQUIT, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		/* an engine holds no key: exec makes it dumpable again, and it
		 * gets the operator's core limit back */
		proc_core_restore();
		/* stdio and the media: nothing the worker or a library
		 * holds, CLOEXEC or not */
		fd_close_from(FD_AFTER_STDIO, keep_fd);
		if (keep_fd >= FD_AFTER_STDIO)
			(void)fcntl(keep_fd, F_SETFD, 0);
		execvpe(argv[0], argv, env);
		dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	/* the group exists before anyone signals it (the child may not
	 * have run yet) */
	(void)setpgid(pid, pid);
	exec_pgid = pid;
	free(env);
	close(pin[0]);
	close(pout[1]);
	close(perr[1]);
	*in_fd = pin[1];
	*out_fd = pout[0];
	*err_fd = perr[0];
	return pid;
fail:
	for (int i = 0; i < 2; i++) {
		if (pin[i] >= 0) close(pin[i]);
		if (pout[i] >= 0) close(pout[i]);
		if (perr[i] >= 0) close(perr[i]);
	}
	free(env);
	return -1;
}

/* True once the engine has exited (left a zombie: not reaped, so its pid
 * and group cannot be reused before exec_run kills the group). */
static bool
exec_exited(pid_t pid)
{
	siginfo_t si = { 0 };

	return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    si.si_pid == pid;
}

/* Feed stdin, collect stdout and the tail of stderr, heartbeat each
 * second, until the engine exits; then drain its pipes for at most
 * EXEC_DRAIN_MS (a process it left behind may hold them open).  Returns
 * 0, -1 when stdout grew past the cap, -2 on SIGTERM. */
static int
exec_pump(pid_t pid, int in_fd, int out_fd, int err_fd, const char *in,
	  size_t inlen, struct buf *out, struct buf *err)
{
	struct pollfd pfd[4];
	size_t off = 0;
	int64_t drain_until = 0;
	int rc = 0, pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

	fd_set_nonblock(in_fd, true);
	if (inlen == 0) {
		close(in_fd);
		in_fd = -1;
	}
	for (;;) {
		char chunk[65536];
		int timeout = pidfd >= 0 ? EXEC_POLL_MS : EXEC_POLL_NOPIDFD_MS;

		if (exec_term) {
			rc = -2;
			goto out;
		}
		if (drain_until == 0 && (pidfd < 0 || out_fd < 0) &&
		    exec_exited(pid))
			drain_until = time_mono_ms() + EXEC_DRAIN_MS;
		if (drain_until > 0) {
			int64_t left = drain_until - time_mono_ms();
			if (left <= 0 || (out_fd < 0 && err_fd < 0))
				break;
			timeout = left < timeout ? (int)left : timeout;
			if (in_fd >= 0) {
				close(in_fd);
				in_fd = -1;
			}
		}
		pfd[0] = (struct pollfd){ out_fd, POLLIN, 0 };
		pfd[1] = (struct pollfd){ err_fd, POLLIN, 0 };
		pfd[2] = (struct pollfd){ in_fd, POLLOUT, 0 };
		pfd[3] = (struct pollfd){ drain_until ? -1 : pidfd, POLLIN, 0 };
		if (poll(pfd, 4, timeout) < 0 && errno != EINTR)
			break;
		worker_heartbeat();
		if (pfd[3].revents & POLLIN)
			drain_until = time_mono_ms() + EXEC_DRAIN_MS;
		if (in_fd >= 0 && (pfd[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
			ssize_t w = write(in_fd, in + off, inlen - off);
			if (w > 0)
				off += (size_t)w;
			if ((w < 0 && errno != EAGAIN && errno != EINTR) || off == inlen) {
				close(in_fd);
				in_fd = -1;
			}
		}
		for (int i = 0; i < 2; i++) {
			int *fd = i == 0 ? &out_fd : &err_fd;
			if (*fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(*fd, chunk, sizeof(chunk));
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n <= 0) {
				close(*fd);
				*fd = -1;
				continue;
			}
			if (i == 0) {
				if (out->len + (size_t)n > (size_t)EXEC_OUT_MAX) {
					rc = -1;    /* the caller kills the engine */
					goto out;
				}
				buf_append(out, chunk, (size_t)n);
			} else {
				buf_append(err, chunk, (size_t)n);
				if (err->len > 4 * EXEC_ERR_TAIL) {
					memmove(err->data, err->data + err->len - EXEC_ERR_TAIL,
					    EXEC_ERR_TAIL);
					err->len = EXEC_ERR_TAIL;
				}
			}
		}
	}
out:
	if (pidfd >= 0)
		close(pidfd);
	if (in_fd >= 0)
		close(in_fd);
	if (out_fd >= 0)
		close(out_fd);
	if (err_fd >= 0)
		close(err_fd);
	return rc;
}

/* The engine has exited or must die: kill its whole group (its pid is
 * not reaped yet, so the group is still its own), reap it, then kill and
 * reap whatever else it started (adopted by this worker, a subreaper). */
static void
exec_end(pid_t pid, int *status)
{
	(void)kill(-pid, SIGKILL);
	(void)kill(pid, SIGKILL);
	while (waitpid(pid, status, 0) < 0 && errno == EINTR)
		;
	(void)proc_children_end(EXEC_REAP_MS, worker_heartbeat);
	exec_pgid = 0;
}

/* Last line(s) of stderr, printable, for last_error. */
static void
exec_err_tail(struct buf *err, char *dst, size_t cap)
{
	size_t start, n;

	while (err->len > 0 && (err->data[err->len - 1] == '\n' ||
	    err->data[err->len - 1] == ' '))
		err->len--;
	start = err->len > EXEC_ERR_TAIL ? err->len - EXEC_ERR_TAIL : 0;
	n = err->len - start;
	if (n >= cap)
		n = cap - 1;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)err->data[start + i];
		dst[i] = (c < ' ' || c == 0x7f) ? ' ' : (char)c;
	}
	dst[n] = '\0';
}

/* Does cmd use {input}?  Split with two different inputs: a word that
 * changes holds it (quotes and backslashes are read as the split reads
 * them, so \{input} is not one). */
static bool
exec_uses_input(const char *cmd)
{
	char **a = worker_exec_split(cmd, "", ""), **b = worker_exec_split(cmd,
	    "x", "");
	bool uses = false;

	for (int i = 0; a != NULL && b != NULL && !uses; i++) {
		if (a[i] == NULL || b[i] == NULL) {
			uses = a[i] != b[i];
			break;
		}
		uses = strcmp(a[i], b[i]) != 0;
	}
	worker_exec_free(a);
	worker_exec_free(b);
	return uses;
}

/* A translator gets the transcript on stdin and nothing by name: the
 * media's stored path is only text, which an engine could hand to a shell
 * or open through whatever link stands there by now. */
#define EXEC_NO_INPUT_MSG "{input} is not available to a translation " \
	"command: the transcript comes on standard input"

static int
exec_run(const struct provider_req *req, struct provider_result *res)
{
	const char *key = req->stage == STAGE_TRANSCRIBE ? "transcribe_command"
	    : "translate_command";
	const char *cmd = config_stage_get(req->cfg, req->stage, req->lang, "command");
	struct buf out, err;
	char **argv = NULL, tail[EXEC_ERR_TAIL + 1], input[PATH_MAX];
	int in_fd, out_fd, err_fd, status = 0, rc;
	struct sigaction sa, old_term;
	pid_t pid;

	if (cmd == NULL)
		cmd = config_get(req->cfg, "exec", key);
	if (cmd == NULL) {
		provider_result_error(res, OUT_PERMANENT, "no [exec] %s configured", key);
		return -1;
	}
	if (req->stage == STAGE_TRANSLATE && exec_uses_input(cmd)) {
		provider_result_error(res, OUT_PERMANENT, "%s", EXEC_NO_INPUT_MSG);
		return -1;
	}
	/* the media file as the worker opened and checked it: the engine
	 * reads that very file, not whatever the name points at by now */
	if (req->stage == STAGE_TRANSCRIBE && req->input_fd >= FD_AFTER_STDIO)
		snprintf(input, sizeof(input), "/dev/fd/%d", req->input_fd);
	else if (req->stage == STAGE_TRANSCRIBE)
		snprintf(input, sizeof(input), "%s",
		    req->input_path ? req->input_path : "");
	else
		input[0] = '\0';
	argv = worker_exec_split(cmd, input, req->lang ? req->lang : "");
	if (argv == NULL || argv[0] == NULL) {
		provider_result_error(res, OUT_PERMANENT, "cannot parse %s: %s", key, cmd);
		worker_exec_free(argv);
		return -1;
	}
	buf_init(&out);
	buf_init(&err);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = exec_term_handler;      /* no SA_RESTART: poll wakes */
	sigemptyset(&sa.sa_mask);
	exec_term = 0;
	(void)sigaction(SIGTERM, &sa, &old_term);
	pid = exec_spawn(argv, req->stage == STAGE_TRANSCRIBE &&
	    exec_uses_input(cmd) ? req->input_fd : -1, &in_fd, &out_fd, &err_fd);
	if (pid < 0) {
		provider_result_error(res, OUT_TRANSIENT, "cannot start %s: %s",
		    argv[0], strerror(errno));
		(void)sigaction(SIGTERM, &old_term, NULL);
		worker_exec_free(argv);
		return -1;
	}
	rc = exec_pump(pid, in_fd, out_fd, err_fd, req->text,
	    req->stage == STAGE_TRANSLATE ? req->text_len : 0, &out, &err);
	exec_end(pid, &status);
	if (rc == -2) {
		/* killed as hung: die of it, as the master expects, now that
		 * nothing of the engine is left */
		signal(SIGTERM, SIG_DFL);
		raise(SIGTERM);
	}
	(void)sigaction(SIGTERM, &old_term, NULL);
	exec_err_tail(&err, tail, sizeof(tail));
	if (rc < 0) {
		provider_result_error(res, OUT_PERMANENT, "%s printed more than %ld "
		    "bytes", argv[0], EXEC_OUT_MAX);
	} else if (WIFSIGNALED(status)) {
		res->signal = WTERMSIG(status);
		provider_result_error(res, OUT_TRANSIENT, "%s killed by signal %d%s%s",
		    argv[0], WTERMSIG(status), tail[0] ? ": " : "", tail);
	} else if (WEXITSTATUS(status) != 0) {
		int code = WEXITSTATUS(status);
		res->exit_code = code;
		provider_result_error(res, code == EXEC_TEMPFAIL ? OUT_TRANSIENT
		    : OUT_PERMANENT, "%s exit %d%s%s", argv[0], code,
		    tail[0] ? ": " : "", tail);
	} else {
		res->exit_code = 0;
		buf_terminate(&out);
		provider_result_add(res, ".txt", out.data, out.len);
		buf_init(&out);
		res->outcome = OUT_COMPLETED;
	}
	buf_free(&out);
	buf_free(&err);
	worker_exec_free(argv);
	return res->outcome == OUT_COMPLETED ? 0 : -1;
}

static int
exec_check(const struct config *cfg, int stage, const char *lang, char *err,
	   size_t errlen)
{
	const char *key = stage == STAGE_TRANSCRIBE ? "transcribe_command"
	    : "translate_command";
	const char *cmd = config_stage_get(cfg, stage, lang, "command");
	char **argv;

	if (cmd == NULL)
		cmd = config_get(cfg, "exec", key);
	if (cmd == NULL) {
		snprintf(err, errlen, "provider exec needs [exec] %s%s%s", key,
		    stage == STAGE_TRANSLATE ? " or [translate." : "",
		    stage == STAGE_TRANSLATE ? lang : "");
		if (stage == STAGE_TRANSLATE)
			snprintf(err + strlen(err), errlen - strlen(err), "] command");
		return -1;
	}
	argv = worker_exec_split(cmd, "", "");
	if (argv == NULL || argv[0] == NULL) {
		snprintf(err, errlen, "cannot parse exec command: %s", cmd);
		worker_exec_free(argv);
		return -1;
	}
	worker_exec_free(argv);
	if (stage == STAGE_TRANSLATE && exec_uses_input(cmd)) {
		snprintf(err, errlen, "%s", EXEC_NO_INPUT_MSG);
		return -1;
	}
	return 0;
}

const struct provider_desc provider_exec = {
	.name = "exec",
	.stages = STAGE_MASK_TRANSCRIBE | STAGE_MASK_TRANSLATE,
	.limited = false,
	.keys = (const char *const[]){ "transcribe_command",
		"translate_command", NULL },
	.check = exec_check,
	.run = exec_run,
};
