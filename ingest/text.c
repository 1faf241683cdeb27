/* text.c: text sniffing/decoding and line-range segmentation (see text.h). */
#include "text.h"

#include <glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CODE_MIN_LINES 60
#define CODE_MAX_LINES 120
#define SEG_MAX_BYTES 32768   /* a code chunk is cut at a line boundary past this size */
#define PARA_GROUP_BYTES 4096 /* text/Markdown: paragraphs are grouped up to this size */
#define SNIFF_BYTES 8192

static const struct {
    const char *ext, *lang;
} langs[] = {
    {"c", "c"}, {"h", "c"}, {"cc", "c++"}, {"cpp", "c++"}, {"cxx", "c++"}, {"hpp", "c++"},
    {"hh", "c++"}, {"cu", "cuda"}, {"cuh", "cuda"}, {"py", "python"}, {"pyi", "python"},
    {"rs", "rust"}, {"go", "go"}, {"java", "java"}, {"kt", "kotlin"}, {"scala", "scala"},
    {"js", "javascript"}, {"mjs", "javascript"}, {"cjs", "javascript"}, {"jsx", "javascript"},
    {"ts", "typescript"}, {"tsx", "typescript"}, {"rb", "ruby"}, {"php", "php"},
    {"pl", "perl"}, {"pm", "perl"}, {"sh", "shell"}, {"bash", "shell"}, {"zsh", "shell"},
    {"lua", "lua"}, {"r", "r"}, {"m", "objective-c"}, {"mm", "objective-c"},
    {"swift", "swift"}, {"cs", "c#"}, {"fs", "f#"}, {"hs", "haskell"}, {"ml", "ocaml"},
    {"mli", "ocaml"}, {"ex", "elixir"}, {"exs", "elixir"}, {"erl", "erlang"},
    {"clj", "clojure"}, {"el", "emacs-lisp"}, {"lisp", "lisp"}, {"scm", "scheme"},
    {"sql", "sql"}, {"f90", "fortran"}, {"f", "fortran"}, {"jl", "julia"}, {"zig", "zig"},
    {"nim", "nim"}, {"dart", "dart"}, {"vue", "vue"}, {"css", "css"}, {"scss", "css"},
    {"html", "html"}, {"htm", "html"}, {"json", "json"}, {"yaml", "yaml"}, {"yml", "yaml"},
    {"toml", "toml"}, {"ini", "ini"}, {"cmake", "cmake"}, {"mk", "make"}, {"s", "assembly"},
    {"asm", "assembly"}, {"proto", "protobuf"}, {"tex", "tex"}, {"sty", "tex"},
    {"rnw", "r"}, {"awk", "awk"}, {"sed", "sed"}, {"vim", "vim"}, {"tcl", "tcl"},
};

const char *text_lang(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    if (!strcmp(base, "Makefile") || !strcmp(base, "GNUmakefile") || !strcmp(base, "makefile"))
        return "make";
    if (!strcmp(base, "CMakeLists.txt")) return "cmake";
    if (!strcmp(base, "Dockerfile")) return "dockerfile";
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base) return NULL;
    for (size_t i = 0; i < SALA_ARRAY_LEN(langs); i++)
        if (!strcasecmp(dot + 1, langs[i].ext)) return langs[i].lang;
    return NULL;
}

static int convert(const char *buf, size_t len, const char *from, char **out, size_t *out_len,
                   sala_err *e)
{
    GError *err = NULL;
    gsize w = 0;
    char *c = g_convert(buf, (gssize)len, "UTF-8", from, NULL, &w, &err);
    if (!c) {
        int rc = sala_errf(e, SALA_EFORMAT, "cannot decode as %s: %s", from,
                           err ? err->message : "?");
        if (err) g_error_free(err);
        return rc;
    }
    /* g_convert's buffer is g_malloc'ed; hand back a malloc'ed copy (free() for the caller). */
    char *m = malloc(w + 1);
    if (!m) {
        g_free(c);
        return sala_errf(e, SALA_ENOMEM, "out of memory");
    }
    memcpy(m, c, w);
    m[w] = 0;
    g_free(c);
    *out = m;
    *out_len = w;
    return SALA_OK;
}

int text_decode(const char *buf, size_t len, char **out, size_t *out_len, sala_err *e)
{
    *out = NULL;
    *out_len = 0;
    const unsigned char *u = (const unsigned char *)buf;
    if (len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF)))
        return convert(buf + 2, len - 2, u[0] == 0xFF ? "UTF-16LE" : "UTF-16BE", out, out_len, e);
    if (len >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF) {
        buf += 3;
        len -= 3;
        u += 3;
    }
    size_t sniff = SALA_MIN(len, (size_t)SNIFF_BYTES), ctl = 0;
    const char *nul = memchr(buf, 0, len);
    if (nul) return sala_errf(e, SALA_EFORMAT, "binary: NUL byte at offset %zu", (size_t)(nul - buf));
    for (size_t i = 0; i < sniff; i++)
        if ((u[i] < 0x20 && u[i] != '\t' && u[i] != '\n' && u[i] != '\r' && u[i] != '\f' &&
             u[i] != 0x1b) || u[i] == 0x7f)
            ctl++;
    if (sniff && ctl * 20 > sniff)
        return sala_errf(e, SALA_EFORMAT, "binary: %zu%% control bytes", ctl * 100 / sniff);
    if (g_utf8_validate(buf, (gssize)len, NULL)) {
        char *m = malloc(len + 1);
        if (!m) return sala_errf(e, SALA_ENOMEM, "out of memory");
        memcpy(m, buf, len);
        m[len] = 0;
        *out = m;
        *out_len = len;
        return SALA_OK;
    }
    /* Not UTF-8: legacy 8-bit text. A run of high bytes that is not Windows-1252 either
     * (0x81, 0x8D, ...) is caught by the converter. */
    int rc = convert(buf, len, "WINDOWS-1252", out, out_len, e);
    if (rc) rc = convert(buf, len, "ISO-8859-1", out, out_len, e);
    return rc;
}

typedef struct {
    const char *s;    /* line start */
    size_t len;       /* bytes including its '\n' */
} line;

/* Split text into lines (the last one may lack '\n'). *out is malloc'ed. */
static int split_lines(const char *t, size_t n, line **out, size_t *nl, sala_err *e)
{
    size_t cap = 1024, k = 0;
    line *v = malloc(cap * sizeof(*v));
    if (!v) return sala_errf(e, SALA_ENOMEM, "out of memory");
    for (size_t at = 0; at < n;) {
        const char *nlp = memchr(t + at, '\n', n - at);
        size_t end = nlp ? (size_t)(nlp - t) + 1 : n;
        if (k == cap) {
            line *w = realloc(v, 2 * cap * sizeof(*v));
            if (!w) {
                free(v);
                return sala_errf(e, SALA_ENOMEM, "out of memory");
            }
            v = w;
            cap *= 2;
        }
        v[k++] = (line){t + at, end - at};
        at = end;
    }
    *out = v;
    *nl = k;
    return SALA_OK;
}

static bool line_blank(const line *l)
{
    for (size_t i = 0; i < l->len; i++)
        if (l->s[i] != ' ' && l->s[i] != '\t' && l->s[i] != '\n' && l->s[i] != '\r') return false;
    return true;
}

/* Emit lines [a, b) (0-based) as one segment. */
static int emit(ing_doc *doc, const char *name, const line *v, size_t a, size_t b, sala_err *e)
{
    char loc[4200];
    snprintf(loc, sizeof(loc), "%s:%zu-%zu", name, a + 1, b);
    size_t len = (size_t)(v[b - 1].s + v[b - 1].len - v[a].s);
    return ing_doc_seg_add(doc, loc, -1, (int64_t)a + 1, (int64_t)b, v[a].s, len, e);
}

static int code_chunks(ing_doc *doc, const char *name, const line *v, size_t n, sala_err *e)
{
    size_t a = 0;
    while (a < n) {
        size_t b = SALA_MIN(n, a + CODE_MAX_LINES), bytes = 0;
        /* The first good break at or after CODE_MIN_LINES; a byte cap for very long lines. */
        for (size_t i = a; i < b; i++) {
            bytes += v[i].len;
            bool good = line_blank(&v[i]) || v[i].s[0] == '}';
            if ((i + 1 - a >= CODE_MIN_LINES && good) || bytes >= SEG_MAX_BYTES) {
                b = i + 1;
                break;
            }
        }
        int rc = emit(doc, name, v, a, b, e);
        if (rc) return rc;
        a = b;
    }
    return SALA_OK;
}

static bool md_heading(const line *l)
{
    size_t i = 0;
    while (i < l->len && i < 3 && l->s[i] == ' ') i++;
    size_t h = 0;
    while (i + h < l->len && l->s[i + h] == '#') h++;
    return h >= 1 && h <= 6 && i + h < l->len && (l->s[i + h] == ' ' || l->s[i + h] == '\n');
}

static bool md_fence(const line *l)
{
    size_t i = 0;
    while (i < l->len && i < 3 && l->s[i] == ' ') i++;
    return l->len - i >= 3 && (!strncmp(l->s + i, "```", 3) || !strncmp(l->s + i, "~~~", 3));
}

/* Paragraph groups. A paragraph ends at a blank line (outside a Markdown fence); paragraphs are
 * added to the current group while it stays under PARA_GROUP_BYTES; a paragraph alone over the
 * limit is cut at line boundaries. */
static int para_groups(ing_doc *doc, const char *name, const line *v, size_t n, bool md,
                       sala_err *e)
{
    size_t ga = 0, gbytes = 0;   /* current group: lines [ga, i) */
    bool fence = false;
    int rc = SALA_OK;
    size_t i = 0;
    while (i < n) {
        /* One paragraph (with its trailing blank lines): lines [i, j). */
        size_t j = i, pbytes = 0;
        bool heading = md && !fence && md_heading(&v[i]);
        while (j < n) {
            if (md && md_fence(&v[j])) fence = !fence;
            pbytes += v[j].len;
            j++;
            if (!fence && j < n && line_blank(&v[j - 1]) && !line_blank(&v[j])) break;
            if (md && !fence && j < n && md_heading(&v[j])) break;
        }
        bool flush = gbytes > 0 && (gbytes + pbytes > PARA_GROUP_BYTES || (heading && gbytes >= 512));
        if (flush) {
            if ((rc = emit(doc, name, v, ga, i, e))) return rc;
            ga = i;
            gbytes = 0;
        }
        if (pbytes > PARA_GROUP_BYTES) {
            /* Cut a long paragraph on its own. */
            if (gbytes) {
                if ((rc = emit(doc, name, v, ga, i, e))) return rc;
            }
            size_t a = i, b = 0;
            while (a < j) {
                for (b = a, pbytes = 0; b < j && (b == a || pbytes + v[b].len <= PARA_GROUP_BYTES); b++)
                    pbytes += v[b].len;
                if ((rc = emit(doc, name, v, a, b, e))) return rc;
                a = b;
            }
            ga = j;
            gbytes = 0;
        } else {
            gbytes += pbytes;
        }
        i = j;
    }
    if (ga < n) rc = emit(doc, name, v, ga, n, e);
    return rc;
}

static int md_title(ing_doc *doc, const line *v, size_t n, sala_err *e)
{
    bool fence = false;
    for (size_t i = 0; i < n; i++) {
        if (md_fence(&v[i])) fence = !fence;
        if (fence || !md_heading(&v[i])) continue;
        const char *s = v[i].s;
        size_t k = 0;
        while (k < v[i].len && (s[k] == ' ' || s[k] == '#')) k++;
        char buf[512];
        size_t m = SALA_MIN(v[i].len - k, sizeof(buf) - 1);
        memcpy(buf, s + k, m);
        buf[m] = 0;
        return ing_doc_meta_set(doc, "title", buf, e);
    }
    return SALA_OK;
}

int text_extract(const char *name, const char *text, size_t len, text_kind kind, ing_doc *doc,
                 sala_err *e)
{
    line *v = NULL;
    size_t n = 0;
    int rc = split_lines(text, len, &v, &n, e);
    if (rc) return rc;
    if (n == 0) {
        rc = sala_errf(e, SALA_EFORMAT, "empty file");
        goto fail;
    }
    if (kind == TEXT_CODE) rc = code_chunks(doc, name, v, n, e);
    else rc = para_groups(doc, name, v, n, kind == TEXT_MARKDOWN, e);
    if (rc == SALA_OK && kind == TEXT_MARKDOWN) rc = md_title(doc, v, n, e);
fail:
    free(v);
    return rc;
}
