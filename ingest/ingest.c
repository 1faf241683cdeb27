/* ingest.c: the batch driver (see ingest.h). A batch is planned first (the list of files, with
 * the walk's own rejections), so that progress can show a total; then each file goes through
 * read -> hash -> (unchanged?) -> kind -> extract -> tokenize -> store. */
#include "ingest.h"

#include <errno.h>
#include <glib.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "doc.h"
#include "pdf.h"
#include "repo.h"
#include "text.h"
#include "xml.h"

#define PDF_SHARD_MIN_BYTES ((size_t)1 << 20) /* smaller PDFs are extracted by one worker */

void ing_opts_default(ing_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->max_text_bytes = (size_t)2 << 20;
    o->max_doc_bytes = (size_t)512 << 20;
    o->jobs = 2;
    wk_limits_default(&o->limits);
}

void ing_sha256_hex(const void *buf, size_t len, char hex[65])
{
    GChecksum *c = g_checksum_new(G_CHECKSUM_SHA256);
    const unsigned char *p = buf;
    /* g_checksum_update takes a gssize: feed large buffers in pieces. */
    while (len) {
        size_t k = SALA_MIN(len, (size_t)1 << 30);
        g_checksum_update(c, p, (gssize)k);
        p += k;
        len -= k;
    }
    snprintf(hex, 65, "%s", g_checksum_get_string(c));
    g_checksum_free(c);
}

/* ---- the plan ---- */

typedef struct {
    char *path;    /* absolute */
    char *name;    /* shown in listings and locators */
    char *reject;  /* NULL, or the walk's reason */
    const char *component;
} entry;

typedef struct {
    entry *v;
    size_t n, cap;
    const char *root_abs;  /* during a walk: the absolute root */
    sala_err *e;
} plan;

static void plan_free(plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->v[i].path);
        free(p->v[i].name);
        free(p->v[i].reject);
    }
    free(p->v);
}

static int plan_add(plan *p, const char *path, const char *name, const char *reject,
                    const char *component)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 256;
        entry *v = realloc(p->v, cap * sizeof(*v));
        if (!v) return sala_errf(p->e, SALA_ENOMEM, "out of memory");
        p->v = v;
        p->cap = cap;
    }
    entry *en = &p->v[p->n];
    en->path = strdup(path);
    en->name = strdup(name);
    en->reject = reject ? strdup(reject) : NULL;
    en->component = component;
    if (!en->path || !en->name || (reject && !en->reject)) {
        free(en->path);
        free(en->name);
        free(en->reject);
        return sala_errf(p->e, SALA_ENOMEM, "out of memory");
    }
    p->n++;
    return SALA_OK;
}

static int plan_walk_cb(const char *path, const char *name, const char *reject, void *ud)
{
    plan *p = ud;
    char abs[PATH_MAX + 8];
    snprintf(abs, sizeof(abs), "%s/%s", p->root_abs, name);
    (void)path;
    return plan_add(p, abs, name, reject, "repo");
}

/* Absolute form of path without resolving its last component (a symlink stays a symlink). */
static void absolute(const char *path, char *out, size_t cap)
{
    char tmp[PATH_MAX], dir[PATH_MAX], real[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    snprintf(dir, sizeof(dir), "%s", tmp);
    const char *base = strrchr(tmp, '/') ? strrchr(tmp, '/') + 1 : tmp;
    char *d = dirname(dir);
    if (realpath(d, real)) {
        if (!strcmp(base, ".") || !strcmp(base, "..") || !*base) {
            if (!realpath(tmp, out)) snprintf(out, cap, "%s", real);
        } else {
            int n2 = snprintf(out, cap, "%s%s%s", real, strcmp(real, "/") ? "/" : "", base);
            if (n2 < 0 || (size_t)n2 >= cap) snprintf(out, cap, "%s", path);
        }
    } else {
        snprintf(out, cap, "%s", path);
    }
}

static int plan_path(plan *p, const char *path)
{
    char abs[PATH_MAX];
    struct stat st;
    absolute(path, abs, sizeof(abs));
    if (stat(path, &st) != 0) {
        char why[300];
        snprintf(why, sizeof(why), "%s", errno == ELOOP ? "symlink loop" : strerror(errno));
        return plan_add(p, abs, path, why, "io");
    }
    if (S_ISDIR(st.st_mode)) {
        char real[PATH_MAX];
        if (!realpath(path, real)) return plan_add(p, abs, path, strerror(errno), "io");
        p->root_abs = real;
        int rc = repo_walk(path, plan_walk_cb, p, p->e);
        p->root_abs = NULL;
        return rc;
    }
    const char *base = strrchr(abs, '/');
    return plan_add(p, abs, base ? base + 1 : abs, S_ISREG(st.st_mode) ? NULL : "not a regular file",
                    "io");
}

/* ---- one file ---- */

typedef enum { K_PDF, K_XML, K_MARKDOWN, K_CODE, K_TEXT } kind;
static const char *const kind_names[] = {"pdf", "xml", "markdown", "code", "text"};

static bool has_ext(const char *name, const char *const *exts)
{
    const char *dot = strrchr(name, '.'), *slash = strrchr(name, '/');
    if (!dot || (slash && dot < slash)) return false;
    for (; *exts; exts++)
        if (!strcasecmp(dot + 1, *exts)) return true;
    return false;
}

/* Kind from the first bytes, then from the name. */
static kind detect(const char *name, const char *buf, size_t len)
{
    static const char *const pdf_ext[] = {"pdf", NULL};
    static const char *const xml_ext[] = {"xml", "tei", "dbk", "docbook", "jats", "nxml", "xhtml",
                                          NULL};
    static const char *const md_ext[] = {"md", "markdown", "mdown", "mkd", NULL};
    size_t head = SALA_MIN(len, (size_t)1024);
    for (size_t i = 0; i + 5 <= head; i++)
        if (!memcmp(buf + i, "%PDF-", 5)) return K_PDF;
    if (has_ext(name, pdf_ext)) return K_PDF;
    if (has_ext(name, xml_ext)) return K_XML;
    size_t i = 0;
    if (len >= 3 && !memcmp(buf, "\xEF\xBB\xBF", 3)) i = 3;
    while (i < head && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')) i++;
    if (len - i >= 5 && !memcmp(buf + i, "<?xml", 5)) return K_XML;
    if (has_ext(name, md_ext)) return K_MARKDOWN;
    if (text_lang(name)) return K_CODE;
    return K_TEXT;
}

typedef struct {
    db *d;
    int64_t corpus_id, tokenizer_id;
    const ing_opts *o;
    ing_stats *st;
    tok_ids ids;
    uint32_t *offs;
    size_t offs_cap;
    ing_progress_fn fn;
    void *ud;
    double t_start;
} batch;

static void emit_event(const batch *b, ing_event *ev)
{
    ev->elapsed = sala_now() - b->t_start;
    ev->pages_total = b->st->pages;
    if (b->fn) b->fn(ev, b->ud);
}

/* Tokenize and store the token streams of the segments (ids seg_ids[0..doc->n)). */
static int store_tokens(batch *b, const ing_doc *doc, const int64_t *seg_ids, sala_err *e)
{
    for (size_t i = 0; i < doc->n; i++) {
        const ing_seg *s = &doc->segs[i];
        double t0 = sala_now();
        b->ids.n = 0;
        int rc = tok_encode(b->o->tok, s->text, s->len, TOK_SPANS, &b->ids, e);
        if (rc) return sala_err_prefix(e, "tokenizer: %s", s->locator);
        if (b->ids.n > b->offs_cap) {
            size_t cap = b->ids.n, bytes;
            if (sala_mul_ovf(&bytes, cap, 2 * sizeof(uint32_t)))
                return sala_errf(e, SALA_ERANGE, "too many tokens");
            uint32_t *o = realloc(b->offs, bytes);
            if (!o) return sala_errf(e, SALA_ENOMEM, "out of memory for %zu tokens", cap);
            b->offs = o;
            b->offs_cap = cap;
        }
        for (size_t k = 0; k < b->ids.n; k++) {
            b->offs[2 * k] = b->ids.spans[k].start;
            b->offs[2 * k + 1] = b->ids.spans[k].end;
        }
        double t1 = sala_now();
        rc = db_tokens_insert(b->d, seg_ids[i], b->tokenizer_id, b->ids.ids, b->offs, b->ids.n, e);
        b->st->t_tokenize += t1 - t0;
        b->st->t_store += sala_now() - t1;
        if (rc) return rc;
        b->st->tokens += (int64_t)b->ids.n;
    }
    return SALA_OK;
}

/* Store an ok document (replacing old_id when >= 0) in one transaction. */
static int store_doc(batch *b, db_doc *row, const ing_doc *doc, int64_t old_id, int64_t old_ord,
                     sala_err *e)
{
    int64_t *seg_ids = malloc((doc->n ? doc->n : 1) * sizeof(int64_t));
    double t0 = sala_now();
    int rc = seg_ids ? db_begin(b->d, e) : sala_errf(e, SALA_ENOMEM, "out of memory");
    if (rc) goto fail;
    if (old_id >= 0 && (rc = db_doc_delete(b->d, old_id, e))) goto fail;
    int64_t id;
    if ((rc = db_doc_insert(b->d, row, old_ord, &id, e))) goto fail;
    for (size_t i = 0; i < doc->n; i++) {
        const ing_seg *s = &doc->segs[i];
        db_seg sg = {.doc_id = id, .ordinal = (int64_t)i, .locator = s->locator, .page = s->page,
                     .line_first = s->line_first, .line_last = s->line_last, .text = s->text,
                     .text_len = s->len};
        if ((rc = db_seg_insert(b->d, &sg, &seg_ids[i], e))) goto fail;
    }
    b->st->t_store += sala_now() - t0;
    if (b->o->tok && (rc = store_tokens(b, doc, seg_ids, e))) goto fail;
    t0 = sala_now();
    rc = db_commit(b->d, e);
    b->st->t_store += sala_now() - t0;
fail:
    if (rc) db_rollback(b->d);
    free(seg_ids);
    return rc;
}

static int store_rejected(batch *b, db_doc *row, int64_t old_id, int64_t old_ord, sala_err *e)
{
    int rc = db_begin(b->d, e);
    if (rc) return rc;
    if (old_id >= 0 && (rc = db_doc_delete(b->d, old_id, e))) goto fail;
    rc = db_doc_insert(b->d, row, old_ord, NULL, e);
    if (rc == SALA_OK) rc = db_commit(b->d, e);
fail:
    if (rc) db_rollback(b->d);
    return rc;
}

/* Extract buf into doc according to its kind; on failure *component names the stage. */
static int extract(batch *b, kind k, const char *name, const char *buf, size_t len, ing_doc *doc,
                   const char **component, const char **lang, sala_err *e)
{
    const ing_opts *o = b->o;
    switch (k) {
    case K_PDF: {
        *component = "pdf";
        int shards = len >= PDF_SHARD_MIN_BYTES ? SALA_MAX(1, SALA_MIN(o->jobs, 16)) : 1;
        pdf_lib_init();   /* once: every worker inherits Poppler's tables instead of building them */
        return wk_run(name, buf, len, pdf_extract, shards, &o->limits, doc, e);
    }
    case K_XML:
        *component = "xml";
        return wk_run(name, buf, len, xml_extract, 1, &o->limits, doc, e);
    default: {
        *component = "text";
        if (len > o->max_text_bytes)
            return sala_errf(e, SALA_ERANGE, "%zu bytes is over the limit of %zu for text and "
                                             "code (--max-size)", len, o->max_text_bytes);
        char *t = NULL;
        size_t tl = 0;
        int rc = text_decode(buf, len, &t, &tl, e);
        if (rc) return rc;
        text_kind tk = k == K_CODE ? TEXT_CODE : k == K_MARKDOWN ? TEXT_MARKDOWN : TEXT_PLAIN;
        if (k == K_CODE) *lang = text_lang(name);
        rc = text_extract(name, t, tl, tk, doc, e);
        free(t);
        return rc;
    }
    }
}

/* Process one planned entry and report it. Returns SALA_OK unless the store failed. */
static int one_file(batch *b, const entry *en, ing_event *ev, sala_err *e)
{
    db_doc row = {.corpus_id = b->corpus_id, .path = en->path, .name = en->name,
                  .kind = "unknown", .size = -1, .mtime = -1, .pages = -1};
    db_doc old;
    int64_t old_id = -1, old_ord = -1;
    char *buf = NULL, sha[65] = "";
    size_t len = 0;
    sala_err fe = {0, ""};
    const char *component = en->component;
    ing_doc doc;
    ing_doc_init(&doc);
    int rc = SALA_OK, frc = SALA_OK;
    char old_sha[65] = "", old_status[16] = "";
    int64_t old_version = -1;
    /* The existing row, if any; copy what we need (its strings die with the next query). */
    if (db_doc_find(b->d, b->corpus_id, en->path, &old, NULL) == SALA_OK) {
        old_id = old.id;
        old_ord = old.ord;
        old_version = old.ingest_version;
        snprintf(old_sha, sizeof(old_sha), "%s", old.sha256 ? old.sha256 : "");
        snprintf(old_status, sizeof(old_status), "%s", old.status ? old.status : "");
    }
    if (en->reject) {
        frc = sala_errf(&fe, SALA_EINVAL, "%s", en->reject);
        goto rejected;
    }
    double t0 = sala_now();
    struct stat st;
    if (stat(en->path, &st) == 0) {
        row.size = st.st_size;
        row.mtime = st.st_mtime;
    }
    component = "io";
    frc = sala_file_read(en->path, b->o->max_doc_bytes, &buf, &len, &fe);
    if (frc) {
        /* sala_file_read names the path; the rejection line names it already. */
        const char *m = strncmp(fe.msg, en->path, strlen(en->path)) == 0
                            ? fe.msg + strlen(en->path) + 2 : NULL;
        if (m && m <= fe.msg + strlen(fe.msg)) memmove(fe.msg, m, strlen(m) + 1);
        goto rejected;
    }
    ing_sha256_hex(buf, len, sha);
    row.sha256 = sha;
    b->st->t_read += sala_now() - t0;
    b->st->bytes += (int64_t)len;
    if (old_id >= 0 && !strcmp(old_sha, sha) && !strcmp(old_status, "ok") &&
        old_version == DB_INGEST_VERSION) {
        ev->outcome = ING_UNCHANGED;
        b->st->unchanged++;
        goto done;
    }
    kind k = detect(en->name, buf, len);
    row.kind = kind_names[k];
    t0 = sala_now();
    frc = extract(b, k, en->name, buf, len, &doc, &component, &row.lang, &fe);
    b->st->t_extract += sala_now() - t0;
    if (frc) {
        if (!strncmp(fe.msg, "worker: ", 8)) {
            component = "worker";
            memmove(fe.msg, fe.msg + 8, strlen(fe.msg + 8) + 1);
        }
        goto rejected;
    }
    row.status = "ok";
    row.title = doc.title;
    row.author = doc.author;
    row.pages = doc.pages;
    rc = store_doc(b, &row, &doc, old_id, old_ord, e);
    if (rc) goto done;
    ev->outcome = old_id >= 0 ? ING_REPLACED : ING_ADDED;
    ev->pages = doc.pages > 0 ? doc.pages : 0;
    ev->segments = (int64_t)doc.n;
    b->st->pages += ev->pages;
    b->st->segments += (int64_t)doc.n;
    if (old_id >= 0) b->st->replaced++;
    else b->st->added++;
    goto done;
rejected:
    if (frc == SALA_ENOMEM && strcmp(component, "worker") != 0) {
        /* out of memory here, not the file's fault: stop the batch (the row stays as it was) */
        rc = sala_errf(e, SALA_ENOMEM, "%s: %s", component, fe.msg[0] ? fe.msg : "out of memory");
        goto done;
    }
    row.status = "rejected";
    row.component = component;
    row.reason = fe.msg[0] ? fe.msg : sala_status_str(frc);
    rc = store_rejected(b, &row, old_id, old_ord, e);
    if (rc) goto done;
    ev->outcome = ING_REJECTED;
    ev->component = component;
    ev->reason = row.reason;
    b->st->rejected++;
done:
    if (rc == SALA_OK) emit_event(b, ev);
    else sala_err_prefix(e, "%s", en->path);   /* the store failed: say on which file */
    ing_doc_clear(&doc);
    free(buf);
    return rc;
}

static int open_tokenizer_row(batch *b, sala_err *e)
{
    if (!b->o->tok) return SALA_OK;
    if (!b->o->tok_path) return sala_errf(e, SALA_EINVAL, "a tokenizer without its path");
    char *buf = NULL, sha[65];
    size_t len = 0;
    int rc = sala_file_read(b->o->tok_path, (size_t)1 << 30, &buf, &len, e);
    if (rc) return rc;
    ing_sha256_hex(buf, len, sha);
    free(buf);
    return db_tokenizer_intern(b->d, sha, b->o->tok_path, &b->tokenizer_id, e);
}

/* db_corpus_find; a failure of the store (not "no corpus") names the corpus, as a failure with
 * a file names the file. */
static int corpus_find(db *d, const char *corpus, int64_t *id, sala_err *e)
{
    int rc = db_corpus_find(d, corpus, id, e);
    if (rc && rc != SALA_ENOTFOUND) sala_err_prefix(e, "corpus '%s'", corpus);
    return rc;
}

int ing_add(db *d, const char *corpus, const char *const *paths, size_t npaths,
            const ing_opts *o, ing_progress_fn fn, void *ud, ing_stats *st, sala_err *e)
{
    ing_stats local;
    plan p = {.e = e};
    batch b = {.d = d, .o = o, .st = st ? st : &local, .fn = fn, .ud = ud, .t_start = sala_now()};
    memset(b.st, 0, sizeof(*b.st));
    int rc = corpus_find(d, corpus, &b.corpus_id, e);
    if (rc) return rc;
    if ((rc = open_tokenizer_row(&b, e))) goto fail;
    for (size_t i = 0; i < npaths; i++)
        if ((rc = plan_path(&p, paths[i]))) {
            if (e && !strstr(e->msg, paths[i])) sala_err_prefix(e, "%s", paths[i]);
            goto fail;
        }
    ing_event ev = {.outcome = ING_PLANNED, .total = p.n};
    emit_event(&b, &ev);
    for (size_t i = 0; i < p.n; i++) {
        ev = (ing_event){.total = p.n, .done = i + 1, .path = p.v[i].path, .name = p.v[i].name};
        if ((rc = one_file(&b, &p.v[i], &ev, e))) goto fail;
    }
fail:
    plan_free(&p);
    tok_ids_free(&b.ids);
    free(b.offs);
    return rc;
}

typedef struct {
    int64_t *ids;
    size_t n, cap;
} id_list;

static int collect_doc_id(const db_doc *doc, void *ud)
{
    id_list *l = ud;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        int64_t *v = realloc(l->ids, cap * sizeof(*v));
        if (!v) return SALA_ENOMEM;
        l->ids = v;
        l->cap = cap;
    }
    l->ids[l->n++] = doc->id;
    return SALA_OK;
}

typedef struct {
    ing_doc doc;
    int64_t *seg_ids;
    size_t n, cap;
    sala_err *e;
} seg_gather;

static int gather_seg(const db_seg *s, void *ud)
{
    seg_gather *g = ud;
    if (g->n == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 64;
        int64_t *v = realloc(g->seg_ids, cap * sizeof(*v));
        if (!v) return sala_errf(g->e, SALA_ENOMEM, "out of memory");
        g->seg_ids = v;
        g->cap = cap;
    }
    g->seg_ids[g->n++] = s->id;
    return ing_doc_seg_add(&g->doc, s->locator, s->page, s->line_first, s->line_last, s->text,
                           s->text_len, g->e);
}

int ing_tokenize_missing(db *d, const char *corpus, const ing_opts *o, ing_progress_fn fn,
                         void *ud, ing_stats *st, sala_err *e)
{
    ing_stats local;
    batch b = {.d = d, .o = o, .st = st ? st : &local, .fn = fn, .ud = ud, .t_start = sala_now()};
    id_list docs = {0};
    memset(b.st, 0, sizeof(*b.st));
    if (!o->tok) return sala_errf(e, SALA_EINVAL, "no tokenizer");
    int rc = corpus_find(d, corpus, &b.corpus_id, e);
    if (rc) return rc;
    if ((rc = open_tokenizer_row(&b, e))) return rc;
    rc = db_doc_untokenized(d, b.corpus_id, b.tokenizer_id, collect_doc_id, &docs, e);
    if (rc == SALA_ENOMEM) sala_errf(e, rc, "out of memory");
    if (rc) goto fail;
    for (size_t i = 0; i < docs.n; i++) {
        seg_gather g = {.e = e};
        ing_doc_init(&g.doc);
        rc = db_seg_list(d, docs.ids[i], -1, NULL, gather_seg, &g, e);
        if (rc == SALA_OK) rc = db_begin(d, e);
        if (rc == SALA_OK) {
            rc = store_tokens(&b, &g.doc, g.seg_ids, e);
            if (rc == SALA_OK) rc = db_commit(d, e);
            if (rc) db_rollback(d);
        }
        ing_event ev = {.outcome = ING_TOKENIZED, .total = docs.n, .done = i + 1,
                        .segments = (int64_t)g.n};
        ing_doc_clear(&g.doc);
        free(g.seg_ids);
        if (rc) goto fail;
        b.st->tokenized++;
        emit_event(&b, &ev);
    }
fail:
    free(docs.ids);
    tok_ids_free(&b.ids);
    free(b.offs);
    return rc;
}
