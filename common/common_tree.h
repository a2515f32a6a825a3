/*
 * common_tree.h - the output tree mpfarm owns, walked without following
 * links.  The output root is opened once (it is the operator's choice, so
 * a link there is honoured); every folder beneath it is entered with
 * openat(O_NOFOLLOW|O_DIRECTORY) and made with mkdirat, and outputs are
 * created, renamed and removed relative to the descriptor of their verified
 * folder.  A link or a non-folder planted where a folder should be is an
 * error naming the path, never a detour outside the tree.
 */
#ifndef MPFARM_COMMON_TREE_H
#define MPFARM_COMMON_TREE_H

#include "common.h"

#include <sys/stat.h>

/* The longest suffix a provider adds to an output name (".json"): what
 * the check before paying reserves. */
#define TREE_SUFFIX_MAX 5

struct tree {
	int   rootfd;       /* the output root */
	char *root;         /* its path, for messages */
	char *cdir;         /* folder (relative) of the cached descriptor */
	int   cfd;          /* -1 when nothing is cached */
	int64_t cached_ms;  /* when cfd was walked to */
	long  name_max;     /* the longest name cfd's file system takes */
	bool  durable;      /* fsync the parent of every folder made */
};

/* An output written whole into its folder, waiting to be published. */
struct tree_temp {
	int   dirfd;        /* the verified folder holding both names */
	char *tmp;          /* temp name in it (".mpfarm-tmp.PID.XXXXXX") */
	char *name;         /* final name in it */
	char *path;         /* the final path, for messages */
};

/* Open the output root (creating it when `create`, like mkdir -p).  0, or
 * -1 with err naming the root and errno set; *t is then safe to close. */
int  tree_open(struct tree *t, const char *root, bool create, bool durable,
	       char *err, size_t errlen);
/* Close the root and the cached folder and free the names; *t can be
 * closed again or reopened.  Never fails. */
void tree_close(struct tree *t);

/* True when a failure with this errno will fail again however often the
 * job is retried (a link, a non-folder, no permission, read-only file
 * system, a name too long): the job fails permanently. */
bool tree_errno_permanent(int e);

/* The folder `reldir` ("" for the root, "transcripts/a/b") beneath the
 * root, each component opened without following links; missing folders
 * are made when `create`.  Returns a new descriptor (O_CLOEXEC, the caller
 * closes it) or -1 with errno set and err naming the offending path: a
 * link (ELOOP), a non-folder (ENOTDIR), "." or ".." (EINVAL), or what
 * openat/mkdirat said. */
int  tree_dir_open(struct tree *t, const char *reldir, bool create,
		   char *err, size_t errlen);

/* Check before paying: the folder of the output `relpath` (made when
 * missing) is a real folder mpfarm may write in, and the name with any
 * provider suffix fits it.  0, or -1 with err and errno (use
 * tree_errno_permanent to tell a lasting cause). */
int  tree_check_writable(struct tree *t, const char *relpath, char *err,
			 size_t errlen);

/* Write `len` bytes into a temp file in the verified folder of `relpath`
 * (optionally fsynced).  0 and *tt filled (tree_temp_publish or
 * tree_temp_discard it), or -1 with err, errno set and nothing left. */
int  tree_temp_write(struct tree *t, const char *relpath, const void *data,
		     size_t len, bool durable, struct tree_temp *tt,
		     char *err, size_t errlen);
/* renameat the temp onto the final name in the same folder: 0 or -1. */
int  tree_temp_publish(const struct tree_temp *tt);
/* Remove the published final name again (a publish rolled back); a name
 * already gone is not an error (nothing is reported). */
void tree_temp_unpublish(const struct tree_temp *tt);
/* Unlink the temp (when still there), close and free; *tt is zeroed. */
void tree_temp_discard(struct tree_temp *tt);
/* Close and free without unlinking (the temp was published or removed by
 * store_job_complete); *tt is zeroed. */
void tree_temp_free(struct tree_temp *tt);

/* Open the regular file `relpath` beneath the root for reading, no link
 * followed on the way or at the end.  A descriptor, or -1 with err and
 * errno (ELOOP for a link, EISDIR/EINVAL for something not a file). */
int  tree_file_open(struct tree *t, const char *relpath, char *err,
		    size_t errlen);
/* Fill *sb for `relpath` and return 0 when it is a regular file reached
 * without any link (on the way or at the end); -1 otherwise (missing, a
 * link, not a file, a folder on the way that is a link). */
int  tree_file_stat(struct tree *t, const char *relpath, struct stat *sb);
/* True when `relpath` is a regular file reached without any link. */
bool tree_file_is_regular(struct tree *t, const char *relpath);

/* One entry of a folder listing. */
struct tree_name {
	char         *name;
	unsigned char type;     /* d_type; DT_UNKNOWN when the file system
				 * does not say (fstatat then) */
};
/* The entries of the folder open at dfd, "." and ".." left out, sorted by
 * name byte by byte (strcmp): the one order scan, fix and check walk
 * folders in.  dfd stays the caller's (a duplicate is read, from its
 * start).  0, or -1 with errno set when the folder could not be read to
 * its end: *out and *n then hold what was read before (maybe nothing).
 * Free *out with tree_names_free in either case. */
int  tree_dir_list(int dfd, struct tree_name **out, size_t *n);
void tree_names_free(struct tree_name *v, size_t n);

/* Output names relative to the root: "transcripts/REL" + suffix or
 * "translations/LANG/REL" + suffix.  malloc'd. */
char *tree_output_rel(int stage, const char *lang, const char *rel,
		      const char *suffix);

#endif
