/* repo.c: the directory walk and .gitignore rules (see repo.h). Rules follow gitignore(5):
 * a pattern with a '/' at its start or middle is matched against the path relative to its
 * .gitignore's directory, one without against the name alone; a trailing '/' matches only
 * directories; the last matching pattern decides, deeper files after shallower ones; an
 * excluded directory is not entered, so nothing below it can be re-included. */
#include "repo.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPO_MAX_DEPTH 64

typedef struct {
    char *pat;      /* without '!', leading '/', trailing '/' */
    bool neg, dir_only, anchored;
} rule;

typedef struct {
    char *base;     /* directory of the .gitignore, relative to root, "" or ending in '/' */
    rule *r;
    size_t n;
} rule_set;

typedef struct {
    repo_fn fn;
    void *ud;
    sala_err *e;
    char root_real[PATH_MAX];
    rule_set sets[REPO_MAX_DEPTH + 2];
    int nsets;
    struct { dev_t dev; ino_t ino; } stack[REPO_MAX_DEPTH + 1];
    int depth;
} walker;

static bool match_class(const char **pp, char c)
{
    const char *p = *pp + 1;
    bool neg = false, hit = false;
    if (*p == '!' || *p == '^') {
        neg = true;
        p++;
    }
    const char *first = p;
    while (*p && (*p != ']' || p == first)) {
        char lo = *p, hi = *p;
        if (p[1] == '-' && p[2] && p[2] != ']') {
            hi = p[2];
            p += 2;
        }
        if (c >= lo && c <= hi) hit = true;
        p++;
    }
    if (*p != ']') return false; /* unterminated: treat as no match */
    *pp = p + 1;
    return hit != neg;
}

/* Results of glob. Besides match / no match, two verdicts cut the backtracking so that the
 * time stays polynomial (a hostile .gitignore of "**" and "*" runs was exponential):
 *  G_ABORT_ALL: the text ran out under a star; extending an earlier star only leaves less text,
 *      so nothing can match.
 *  G_ABORT_TO_STARSTAR: a '*' reached a '/'; an earlier '*' cannot cross that '/' either, so
 *      only an enclosing "**" (which moves the rest to a later component) may still match. */
enum { G_NOMATCH, G_MATCH, G_ABORT_ALL, G_ABORT_TO_STARSTAR };

static int glob(const char *start, const char *p, const char *s)
{
    while (*p) {
        if (p[0] == '*' && p[1] == '*' && (p == start || p[-1] == '/') && (p[2] == '/' || !p[2])) {
            if (!p[2]) return G_MATCH;
            const char *rest = p + 3;
            for (const char *t = s;;) {
                int r = glob(start, rest, t);
                if (r == G_MATCH || r == G_ABORT_ALL) return r;
                if (!(t = strchr(t, '/'))) return G_ABORT_ALL;
                t++;
            }
        }
        if (*p == '*') {
            while (*p == '*') p++;
            for (;;) {
                int r = glob(start, p, s);
                if (r != G_NOMATCH) return r;
                if (!*s) return G_ABORT_ALL;
                if (*s == '/') return G_ABORT_TO_STARSTAR;
                s++;
            }
        }
        if (!*s) return G_ABORT_ALL;   /* pattern left, text gone: no star can help */
        if (*p == '?') {
            if (*s == '/') return G_NOMATCH;
            p++;
            s++;
            continue;
        }
        if (*p == '[') {
            if (*s == '/') return G_NOMATCH;
            const char *q = p;
            if (!match_class(&q, *s)) return G_NOMATCH;
            p = q;
            s++;
            continue;
        }
        if (*p == '\\' && p[1]) p++;
        if (*p != *s) return G_NOMATCH;
        p++;
        s++;
    }
    return *s == 0 ? G_MATCH : G_NOMATCH;
}

bool repo_glob_match(const char *pattern, const char *path)
{
    return glob(pattern, pattern, path) == G_MATCH;
}

static void set_free(rule_set *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->r[i].pat);
    free(s->r);
    free(s->base);
    memset(s, 0, sizeof(*s));
}

/* Parse the gitignore file at path (a missing file is an empty set). */
static int set_load(rule_set *s, const char *path, const char *base, sala_err *e)
{
    char *buf = NULL;
    size_t len = 0;
    memset(s, 0, sizeof(*s));
    s->base = strdup(base);
    if (!s->base) return sala_errf(e, SALA_ENOMEM, "out of memory");
    if (sala_file_read(path, (size_t)1 << 20, &buf, &len, NULL) != SALA_OK) return SALA_OK;
    size_t cap = 0;
    int rc = SALA_OK;
    for (char *line = buf, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t n = strlen(line);
        if (n && line[n - 1] == '\r') line[--n] = 0;
        /* Trailing spaces go unless escaped with a backslash. */
        while (n && line[n - 1] == ' ' && !(n >= 2 && line[n - 2] == '\\')) line[--n] = 0;
        if (!n || line[0] == '#') continue;
        rule r = {0};
        char *p = line;
        if (*p == '!') {
            r.neg = true;
            p++;
        } else if (*p == '\\' && (p[1] == '!' || p[1] == '#')) {
            p++;
        }
        n = strlen(p);
        if (n && p[n - 1] == '/') {
            r.dir_only = true;
            p[--n] = 0;
        }
        if (!n) continue;
        r.anchored = strchr(p, '/') != NULL;
        if (*p == '/') p++;
        if (!*p) continue;
        if (s->n == cap) {
            cap = cap ? 2 * cap : 16;
            rule *nr = realloc(s->r, cap * sizeof(*nr));
            if (!nr) {
                rc = sala_errf(e, SALA_ENOMEM, "out of memory");
                break;
            }
            s->r = nr;
        }
        r.pat = strdup(p);
        if (!r.pat) {
            rc = sala_errf(e, SALA_ENOMEM, "out of memory");
            break;
        }
        s->r[s->n++] = r;
    }
    free(buf);
    return rc;
}

/* Is rel (relative to root) ignored? Last matching rule of the deepest applicable set wins. */
static bool ignored(const walker *w, const char *rel, bool is_dir)
{
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    int verdict = 0; /* 0 no match, 1 ignore, -1 re-include */
    for (int i = 0; i < w->nsets; i++) {
        const rule_set *s = &w->sets[i];
        size_t bl = strlen(s->base);
        if (strncmp(rel, s->base, bl) != 0) continue;
        const char *sub = rel + bl;
        for (size_t k = 0; k < s->n; k++) {
            const rule *r = &s->r[k];
            if (r->dir_only && !is_dir) continue;
            bool m = repo_glob_match(r->pat, r->anchored ? sub : base);
            if (m) verdict = r->neg ? -1 : 1;
        }
    }
    return verdict == 1;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int report(walker *w, const char *path, const char *rel, const char *why)
{
    return w->fn(path, rel, why, w->ud);
}

static int walk_dir(walker *w, const char *dir, const char *rel);

/* One directory entry: path to open, rel its name relative to the root. */
static int visit(walker *w, const char *path, const char *rel)
{
    struct stat lst, st;
    char why[PATH_MAX + 64];
    if (lstat(path, &lst) != 0) {
        snprintf(why, sizeof(why), "cannot stat: %s", strerror(errno));
        return report(w, path, rel, why);
    }
    if (ignored(w, rel, S_ISDIR(lst.st_mode))) return SALA_OK;
    if (S_ISLNK(lst.st_mode)) {
        if (stat(path, &st) != 0) {
            int err = errno;
            return report(w, path, rel, err == ELOOP ? "symlink loop"
                                        : err == ENOENT ? "dangling symlink"
                                                        : strerror(err));
        }
        char real[PATH_MAX];
        if (!realpath(path, real)) return report(w, path, rel, "symlink cannot be resolved");
        size_t rl = strlen(w->root_real);
        if (strncmp(real, w->root_real, rl) != 0 || (real[rl] != '/' && real[rl] != 0)) {
            snprintf(why, sizeof(why), "symlink leaves the tree (to %s)", real);
            return report(w, path, rel, why);
        }
    } else {
        st = lst;
    }
    if (S_ISDIR(st.st_mode)) {
        if (ignored(w, rel, true)) return SALA_OK;
        for (int i = 0; i <= w->depth; i++)
            if (w->stack[i].dev == st.st_dev && w->stack[i].ino == st.st_ino)
                return report(w, path, rel, "symlink loop (a directory contains itself)");
        if (w->depth >= REPO_MAX_DEPTH) {
            snprintf(why, sizeof(why), "directory nesting deeper than %d", REPO_MAX_DEPTH);
            return report(w, path, rel, why);
        }
        w->depth++;
        w->stack[w->depth].dev = st.st_dev;
        w->stack[w->depth].ino = st.st_ino;
        int rc = walk_dir(w, path, rel);
        w->depth--;
        return rc;
    }
    if (!S_ISREG(st.st_mode)) return report(w, path, rel, "not a regular file");
    return report(w, path, rel, NULL);
}

/* Walk directory `dir` whose root-relative name is rel ("" for the root). */
static int walk_dir(walker *w, const char *dir, const char *rel)
{
    char gi[PATH_MAX + 16], base[PATH_MAX + 2];
    int rc = SALA_OK, pushed = 0;
    char **names = NULL;
    size_t n = 0, cap = 0;
    DIR *dh = opendir(dir);
    if (!dh) {
        char why[300];
        snprintf(why, sizeof(why), "cannot open directory: %s", strerror(errno));
        return report(w, dir, *rel ? rel : ".", why);
    }
    snprintf(base, sizeof(base), "%s%s", rel, *rel ? "/" : "");
    if (!*rel) {
        snprintf(gi, sizeof(gi), "%s/.git/info/exclude", dir);
        if ((rc = set_load(&w->sets[w->nsets], gi, "", w->e))) goto fail;
        w->nsets++;
        pushed++;
    }
    snprintf(gi, sizeof(gi), "%s/.gitignore", dir);
    if ((rc = set_load(&w->sets[w->nsets], gi, base, w->e))) goto fail;
    w->nsets++;
    pushed++;
    struct dirent *de;
    while ((de = readdir(dh))) {
        const char *d = de->d_name;
        if (!strcmp(d, ".") || !strcmp(d, "..") || !strcmp(d, ".git")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            char **nn = realloc(names, cap * sizeof(*nn));
            if (!nn) {
                rc = sala_errf(w->e, SALA_ENOMEM, "out of memory");
                goto fail;
            }
            names = nn;
        }
        if (!(names[n] = strdup(d))) {
            rc = sala_errf(w->e, SALA_ENOMEM, "out of memory");
            goto fail;
        }
        n++;
    }
    if (n) qsort(names, n, sizeof(*names), cmp_names);
    for (size_t i = 0; i < n && rc == SALA_OK; i++) {
        char path[PATH_MAX], sub[PATH_MAX];
        int a = snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        int b = snprintf(sub, sizeof(sub), "%s%s", base, names[i]);
        if (a < 0 || b < 0 || (size_t)a >= sizeof(path) || (size_t)b >= sizeof(sub)) {
            rc = report(w, dir, rel, "path too long");
            continue;
        }
        rc = visit(w, path, sub);
    }
fail:
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    while (pushed--) set_free(&w->sets[--w->nsets]);
    closedir(dh);
    return rc;
}

int repo_walk(const char *root, repo_fn fn, void *ud, sala_err *e)
{
    walker *w = calloc(1, sizeof(*w));
    struct stat st;
    int rc;
    if (!w) return sala_errf(e, SALA_ENOMEM, "out of memory");
    w->fn = fn;
    w->ud = ud;
    w->e = e;
    if (!realpath(root, w->root_real) || stat(root, &st) != 0) {
        rc = sala_errf(e, SALA_EIO, "%s: %s", root, strerror(errno));
        goto fail;
    }
    w->stack[0].dev = st.st_dev;
    w->stack[0].ino = st.st_ino;
    rc = walk_dir(w, root, "");
fail:
    free(w);
    return rc;
}
