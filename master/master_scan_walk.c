/*
 * master_scan_walk.c - the first phase of `mpfarm scan`: walking each scan
 * root into memory, without touching the database.  Which names are media
 * (by extension), which are temporary droppings, and what is done with
 * symbolic links (see master_scan.c) are decided here.  A folder is read
 * through a descriptor opened with O_NOFOLLOW, so a folder swapped for a
 * link during the walk is not entered.
 */
#include "master_scan.h"
#include "common_tree.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const scan_media_exts[] = {
	"wav", "mp3", "m4a", "flac", "ogg", "oga", "opus", "aac", "wma",
	"aiff", "aif", "aifc", "mp4", "mov", "mkv", "webm", "avi", "m4v",
	"mpg", "mpeg", "3gp", "3g2", "amr", "wv", "ape", "mka", "m4b", "ts",
	"mts", "m2ts", "wmv", "flv", "ogv", "caf", "au", "spx", NULL
};

/* Partial downloads and copies, editor droppings and our own temp files:
 * never media, whatever their extension says. */
static const char *const scan_temp_exts[] = {
	"part", "partial", "crdownload", "download", "tmp", "temp", NULL
};

const char *
master_scan_rel(const struct scan *sc, const struct scan_entry *e)
{
	return sc->names.data + e->rel_off;
}

char *
master_scan_abs(const struct scan *sc, const struct scan_entry *e)
{
	const char *root = sc->roots[e->root].abs;
	return xasprintf("%s%s%s", root, strcmp(root, "/") == 0 ? "" : "/",
	    master_scan_rel(sc, e));
}

/* Extension after the last dot of the base name, or "" (".mp3" alone is a
 * hidden file with no extension). */
static const char *
scan_ext(const char *name)
{
	const char *dot = strrchr(name, '.');
	return (dot == NULL || dot == name) ? "" : dot + 1;
}

static bool
scan_ext_in(const char *ext, const char *const *list)
{
	for (; *list; list++)
		if (strcasecmp(ext, *list) == 0)
			return true;
	return false;
}

static bool
scan_is_temp(const char *name)
{
	size_t n = strlen(name);

	return file_is_temp(name) || strncmp(name, "._", 2) == 0 ||
	    strncmp(name, ".~lock.", 7) == 0 || (n > 0 && name[n - 1] == '~') ||
	    scan_ext_in(scan_ext(name), scan_temp_exts);
}

static struct scan_entry *
scan_add(struct scan *sc, int ri, const char *relpfx, const char *name,
	 const struct stat *sb)
{
	struct scan_entry *e;

	if (sc->nents == sc->cap) {
		sc->cap = sc->cap ? sc->cap * 2 : 1024;
		sc->ents = xrealloc(sc->ents, sc->cap * sizeof(*sc->ents));
	}
	e = &sc->ents[sc->nents++];
	e->root = ri;
	e->rel_off = sc->names.len;
	e->size = (int64_t)sb->st_size;
	e->mtime_ns = (int64_t)sb->st_mtim.tv_sec * 1000000000 + sb->st_mtim.tv_nsec;
	e->dev = (int64_t)sb->st_dev;
	e->ino = (int64_t)sb->st_ino;
	e->src_root = -1;
	e->known = false;
	e->conflict = false;
	buf_append(&sc->names, relpfx, strlen(relpfx));
	buf_append(&sc->names, name, strlen(name) + 1);
	return e;
}

/* "scan: <what about> DIR/NAME<tail>" with the whole path quoted once. */
static void
scan_say_path(const char *dir, const char *name, const char *what,
	      const char *tail)
{
	char *path = xasprintf("%s%s%s", dir, strcmp(dir, "/") == 0 ? "" : "/",
	    name);
	say_err("scan: %s%s%s", what, log_quote(path), tail);
	free(path);
}

/* The scan root holding `real` (a resolved path), or -1. */
static int
scan_root_of(const struct scan *sc, const char *real)
{
	for (int k = 0; k < sc->nroots; k++) {
		const char *root = sc->roots[k].abs;
		size_t n = strlen(root);
		if (strcmp(root, "/") == 0 ||
		    (strncmp(real, root, n) == 0 && real[n] == '/'))
			return k;
	}
	return -1;
}

/* A symbolic link with a media extension: named and skipped, or with
 * --follow-symlinks registered when it resolves to a regular file beneath
 * a scan root (see the top of this file). */
static void
scan_link(struct scan *sc, int ri, const char *abs, const char *relpfx,
	  const char *name)
{
	struct scan_root *r = &sc->roots[ri];
	char *path = xasprintf("%s%s%s", abs, strcmp(abs, "/") == 0 ? "" : "/",
	    name);
	char *real = NULL, why[PATH_MAX + 80];
	struct stat sb;
	int k;

	r->n_links++;
	if (!sc->follow) {
		say_err("scan: skipped symbolic link %s (links are not followed; "
		    "--follow-symlinks includes links to files inside a scan "
		    "root)", log_quote(path));
		goto out;
	}
	if ((real = realpath(path, NULL)) == NULL ||
	    lstat(real, &sb) < 0) {
		say_err("scan: skipped symbolic link %s: %s", log_quote(path),
		    errno == ENOENT ? "broken" : strerror(errno));
		goto out;
	}
	if (S_ISDIR(sb.st_mode)) {
		/* following them risks loops and files seen twice */
		say_err("scan: skipped symbolic link %s: links to folders are "
		    "never followed", log_quote(path));
		goto out;
	}
	if ((k = scan_root_of(sc, real)) < 0) {
		snprintf(why, sizeof(why), "%s", log_quote(real));
		say_err("scan: skipped symbolic link %s: it leads outside the "
		    "scan roots (to %s)", log_quote(path), why);
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		say_err("scan: skipped symbolic link %s: not a link to a regular "
		    "file", log_quote(path));
		goto out;
	}
	if (access(real, R_OK) < 0) {
		say_err("scan: cannot read %s (through symbolic link %s): %s "
		    "(skipped)", log_quote(real), log_quote(path),
		    strerror(errno));
		r->n_unreadable++;
		sc->unreadable++;
		goto out;
	}
	const char *root = sc->roots[k].abs;
	const char *src = real + (strcmp(root, "/") == 0 ? 1 : strlen(root) + 1);
	size_t off = sc->names.len;
	buf_append(&sc->names, src, strlen(src) + 1);
	struct scan_entry *e = scan_add(sc, ri, relpfx, name, &sb);
	e->src_root = k;
	e->src_off = off;
	r->n_links--;
	r->n_followed++;
out:
	free(path);
	free(real);
}

/* One folder: files are registered in name order, then each subfolder is
 * walked with this folder closed, so a deep tree costs one descriptor. */
void
master_scan_dir(struct scan *sc, int ri, const char *abs, const char *relpfx)
{
	struct scan_root *r = &sc->roots[ri];
	struct tree_name *names = NULL;
	char **subs = NULL;
	size_t nnames = 0, nsubs = 0;
	int fd;

	fd = open(abs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		say_err("scan: cannot read folder %s: %s (skipped)",
		    log_quote(abs), strerror(errno));
		r->n_unreadable++;
		sc->unreadable++;
		return;
	}
	if (tree_dir_list(fd, &names, &nnames) < 0) {
		say_err("scan: cannot list folder %s: %s (partly skipped)",
		    log_quote(abs), strerror(errno));
		r->n_unreadable++;
		sc->unreadable++;
	}
	subs = xmalloc((nnames ? nnames : 1) * sizeof(*subs));

	for (size_t i = 0; i < nnames; i++) {
		const char *name = names[i].name;
		unsigned char type = names[i].type;
		bool media = scan_ext_in(scan_ext(name), scan_media_exts);
		struct stat sb;
		char why[160];

		if (type == DT_UNKNOWN) {
			if (fstatat(fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0)
				goto unreadable;
			type = S_ISDIR(sb.st_mode) ? DT_DIR : S_ISLNK(sb.st_mode)
			    ? DT_LNK : S_ISREG(sb.st_mode) ? DT_REG : DT_FIFO;
		}
		if (type == DT_DIR) {
			subs[nsubs++] = names[i].name;
			continue;
		}
		if (scan_is_temp(name)) {
			r->n_temp++;
			continue;
		}
		if (type == DT_LNK) {
			/* named: media, and folders the user may expect walked */
			if (!media && (fstatat(fd, name, &sb, 0) < 0 ||
			    !S_ISDIR(sb.st_mode)))
				r->n_not_media++;
			else
				scan_link(sc, ri, abs, relpfx, name);
			continue;
		}
		if (!media) {
			r->n_not_media++;
			continue;
		}
		if (type != DT_REG) {
			scan_say_path(abs, name, "", " is not a regular file "
			    "(skipped)");
			r->n_not_media++;
			continue;
		}
		if (fstatat(fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0 ||
		    faccessat(fd, name, R_OK, AT_EACCESS | AT_SYMLINK_NOFOLLOW) < 0)
			goto unreadable;
		if (!S_ISREG(sb.st_mode))
			continue;       /* swapped since the listing: next scan */
		scan_add(sc, ri, relpfx, name, &sb);
		continue;
unreadable:
		snprintf(why, sizeof(why), ": %s (skipped)", strerror(errno));
		scan_say_path(abs, name, "cannot read ", why);
		r->n_unreadable++;
		sc->unreadable++;
	}
	close(fd);

	for (size_t i = 0; i < nsubs; i++) {
		char *sub_abs = xasprintf("%s%s%s", abs,
		    strcmp(abs, "/") == 0 ? "" : "/", subs[i]);
		char *sub_rel = xasprintf("%s%s/", relpfx, subs[i]);
		master_scan_dir(sc, ri, sub_abs, sub_rel);
		free(sub_abs);
		free(sub_rel);
	}
	tree_names_free(names, nnames);
	free(subs);
}

