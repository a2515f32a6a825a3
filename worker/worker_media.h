/*
 * worker_media.h - the media file of a transcription job, opened once by
 * the worker beneath its scan root without following a symbolic link, and
 * checked against what the scan recorded, so that what is uploaded (or
 * handed to an exec engine as /dev/fd/N) is exactly the file the operator
 * registered and never something a link or a swapped folder points at.
 */
#ifndef MPFARM_WORKER_MEDIA_H
#define MPFARM_WORKER_MEDIA_H

#include "common.h"
#include "common_store.h"

#define WORKER_MEDIA_WALK  0x01 /* skip openat2: the O_NOFOLLOW walk only */

/* Open `rel` (a relative path, no "." or ".." component) beneath the
 * folder rootfd for reading, following no symbolic link on the way or at
 * the end: openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) where the kernel
 * has it, else (ENOSYS or EPERM from it, or WORKER_MEDIA_WALK) one
 * openat(O_NOFOLLOW) per component.  Returns a CLOEXEC descriptor
 * numbered 3 or more, or -1 with errno (ELOOP for a link in the way, EXDEV
 * for a path leaving the root). */
int worker_media_open_at(int rootfd, const char *rel, int flags);

/* This host's names for the shared roots ([roots], common_roots.h), read
 * once after the worker opens its store: job paths are stored in their
 * canonical spelling and opened under this host's mount.  0, or -1 with a
 * message in err. */
int worker_media_roots_load(const struct config *cfg, store_t *st, char *err,
			    size_t errlen);

/* The job's media file opened and checked: beneath j->open_root (in this
 * host's spelling), a regular
 * file whose device, inode (when the scan recorded them), size and mtime
 * are the scan's.  Returns the descriptor; else -1 with a message naming
 * the file in err and *permanent set when no retry can help (a link, a
 * missing or replaced file) rather than a passing shortage (EMFILE...). */
int worker_media_open(const struct job *j, char *err, size_t errlen,
		      bool *permanent);

#endif
