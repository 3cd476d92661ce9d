/*
 * replace_file.c -- the progress files of the resumable commands (backup
 * lock, restore state, mirror state) replaced atomically.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"

int cli_replace_file(const char *path, const char *text)
{
	return cli_replace_file_mode(path, text, 0666);
}

int cli_replace_file_mode(const char *path, const char *text, mode_t mode)
{
	char tmp[4096];
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		fprintf(stderr, "pemba: cannot write %s: path too long\n",
		        path);
		return -1;
	}
	/* Created with mode (less the umask); a leftover temporary file
	 * keeps its old mode through O_TRUNC, hence the fchmod for modes
	 * narrower than the default. */
	int tfd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (tfd < 0)
		goto fail;
	if (mode != 0666 && fchmod(tfd, mode) != 0) {
		close(tfd);
		goto fail;
	}
	FILE *f = fdopen(tfd, "w");
	if (!f) {
		close(tfd);
		goto fail;
	}
	if (fputs(text, f) == EOF || fflush(f) != 0 || fsync(fileno(f)) != 0) {
		fclose(f);
		goto fail;
	}
	if (fclose(f) != 0 || rename(tmp, path) != 0)
		goto fail;
	/* The rename itself survives a crash once its directory is synced. */
	char dir[4096];
	const char *slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else
		snprintf(dir, sizeof(dir), "%.*s",
		         slash == path ? 1 : (int)(slash - path), path);
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	return 0;
fail:
	fprintf(stderr, "pemba: cannot write %s: %s\n", path, strerror(errno));
	return -1;
}
