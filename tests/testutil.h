/* testutil.h -- helpers shared by the Check suites.
 *
 * Every helper aborts the current test (ck_abort_msg) when the OS fails it,
 * so tests can call them without checking returns.
 */
#ifndef NSED_TESTUTIL_H
#define NSED_TESTUTIL_H

#include <stddef.h>

/* Create a fresh directory under $TMPDIR (or /tmp); returns a malloc'd path. */
char *tu_mkdtemp(void);

/* Remove a directory tree (rm -rf). NULL is ignored. */
void tu_rmrf(const char *path);

/* Write len bytes (or strlen(data) when len is (size_t)-1) to path. */
void tu_write_file(const char *path, const char *data, size_t len);

/* Read a whole file; returns a malloc'd NUL-terminated string or NULL when
 * the file does not exist. */
char *tu_read_file(const char *path, size_t *len);

/* malloc'd "dir/name". */
char *tu_path(const char *dir, const char *name);

/* Run argv (argv[0] is a path) with stdout and stderr captured; returns the
 * exit status (or 128+signal). *out and *err (each optional) receive
 * malloc'd NUL-terminated text. envp NULL keeps the current environment. */
int tu_run(char *const argv[], char **out, char **err);

/* Same, with extra environment assignments ("NAME=value", NULL-terminated)
 * added to the current environment for the child only. */
int tu_run_env(char *const argv[], char *const extra_env[], char **out,
               char **err);

/* 1 when haystack contains needle. */
int tu_contains(const char *haystack, const char *needle);

#endif
