/* repo.h: walk a directory tree (a git work tree or not) for ingestion.
 *
 * Order is deterministic: entries of a directory in byte order of their names, depth first.
 * Skipped without a word: `.git` (directory or file), and whatever .gitignore files exclude
 * (every .gitignore on the way down, nested ones taking precedence, plus .git/info/exclude at
 * the root; negation with `!`, `/`-anchored and directory-only patterns, `*`, `?`, `[...]` and
 * `**`). Reported as rejected: symlink loops, links that leave the tree or lead nowhere,
 * directories that cannot be read and files that are neither regular files nor directories.
 * Symbolic links inside the tree are followed. */
#ifndef SALA_REPO_H
#define SALA_REPO_H

#include <stdbool.h>
#include <stddef.h>

#include "common.h"

/* Called once per file, in order: path is the path to open (root joined with name), name the
 * path relative to root. reject is NULL for a file to ingest, else why it is refused. A non-zero
 * return stops the walk and is returned by repo_walk. */
typedef int (*repo_fn)(const char *path, const char *name, const char *reject, void *ud);

int repo_walk(const char *root, repo_fn fn, void *ud, sala_err *e);

/* The gitignore glob matcher, exposed for tests: does pattern match the whole of path ('/'
 * separated; `*` and `?` do not cross '/', `**` as a whole component matches any number)? */
bool repo_glob_match(const char *pattern, const char *path);

#endif
