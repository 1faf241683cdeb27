/* fuzz_gitignore.c: the .gitignore rules. The input is cut at "\n--path--\n": the first part
 * becomes the root .gitignore of a small fixed tree that repo_walk then walks (rule parsing,
 * negation, anchoring, directory-only rules, nesting); the remaining lines are tried as
 * (pattern, path) pairs against repo_glob_match (each line "pattern\tpath"). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingest/repo.h"
#include "tests/fuzz/fuzz.h"

static int count(const char *path, const char *name, const char *reject, void *ud)
{
    (void)path, (void)name, (void)reject;
    ++*(int *)ud;
    return 0;
}

static const char *tree(void)
{
    static char root[512];
    if (root[0]) return root;
    snprintf(root, sizeof(root), "%s/repo", fuzz_scratch());
    static const char *const dirs[] = {"", "/src", "/src/a", "/build", "/doc", "/doc/x y"};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char d[600];
        snprintf(d, sizeof(d), "%s%s", root, dirs[i]);
        mkdir(d, 0700);
    }
    static const char *const files[][2] = {
        {"", "README.md"}, {"", "a.o"}, {"src", "main.c"}, {"src/a", "b.c"}, {"src/a", "b.o"},
        {"build", "out.bin"}, {"doc", "!x.txt"}, {"doc/x y", "[z].md"}, {"doc", ".gitignore"},
    };
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char d[600];
        snprintf(d, sizeof(d), "%s/%s", root, files[i][0]);
        const char *body = !strcmp(files[i][1], ".gitignore") ? "*.txt\n!\\!x.txt\n/x y/\n" : "x";
        fuzz_write(d, files[i][1], body, strlen(body));
    }
    return root;
}

static int one(const uint8_t *data, size_t size)
{
    size_t off[2], len[2];
    size_t n = fuzz_split(data, size, "\n--path--\n", 2, off, len);
    const char *root = tree();
    if (fuzz_write(root, ".gitignore", data + off[0], len[0]) != 0) return 0;
    int files = 0;
    sala_err e;
    repo_walk(root, count, &files, &e);
    if (n < 2) return 0;
    /* pattern<TAB>path lines; patterns and paths are capped so that one input stays fast. */
    char pat[256], path[256];
    const char *p = (const char *)data + off[1], *end = p + len[1];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *tab = memchr(p, '\t', (size_t)(le - p));
        if (tab) {
            size_t pl = SALA_MIN((size_t)(tab - p), sizeof(pat) - 1);
            size_t sl = SALA_MIN((size_t)(le - tab - 1), sizeof(path) - 1);
            memcpy(pat, p, pl);
            pat[pl] = 0;
            memcpy(path, tab + 1, sl);
            path[sl] = 0;
            (void)repo_glob_match(pat, path);
        }
        p = le + 1;
    }
    return 0;
}

FUZZ_TARGET(gitignore, one)
