/* cmd_tokenize.c: `sala tokenize`: encode text with a tokenizer.json and print ids, or turn a
 * JSONL file of {"id","text"} cases into the golden layout {"id","ids_bos","ids","ids_literal",
 * "decoded"} (the layout of ../shared/tokenizer/golden.jsonl without "text"). */
#include "app.h"
#include "ingest/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

SALA_COMMAND(tokenize, "encode text to token ids (MiniCPM tokenizer.json)");

const char cmd_tokenize_usage[] =
    "usage: sala tokenize (--tokenizer FILE | --model DIR) [--bos] [--literal] [--spans] < text\n"
    "       sala tokenize (--tokenizer FILE | --model DIR) --jsonl IN\n"
    "\n"
    "Encodes standard input and prints the ids on one line, separated by spaces.\n"
    "  --tokenizer FILE  a Hugging Face tokenizer.json\n"
    "  --model DIR       the model directory's tokenizer.json\n"
    "  --bos             add the post-processor's tokens (<s>)\n"
    "  --literal         special tokens written in the text are plain text (how documents are\n"
    "                    encoded); without it <|im_end|> etc. in the text become their ids\n"
    "  --spans           print one token per line: id, then the [start, end) input byte span\n"
    "  --jsonl IN        read lines {\"id\": ..., \"text\": ...} and write for each\n"
    "                    {\"id\", \"ids_bos\", \"ids\", \"ids_literal\", \"decoded\"}: ids_bos with\n"
    "                    <s>, ids with special tokens matched, ids_literal without, decoded =\n"
    "                    decode(ids). Exit 2 when some lines were bad (reported on stderr).\n";

/* JSON string as Python's json.dumps(ensure_ascii=False) writes it. */
static void put_json_str(FILE *f, const char *s, size_t n)
{
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        case '\b': fputs("\\b", f); break;
        case '\f': fputs("\\f", f); break;
        default:
            if (c < 0x20) fprintf(f, "\\u%04x", c);
            else fputc(c, f);
        }
    }
    fputc('"', f);
}

static void put_ids(FILE *f, const tok_ids *ids)
{
    fputc('[', f);
    for (size_t i = 0; i < ids->n; i++) fprintf(f, i ? ", %d" : "%d", (int)ids->ids[i]);
    fputc(']', f);
}

static int do_jsonl(const tok_tokenizer *t, const char *path)
{
    char *data;
    size_t len;
    sala_err e;
    int rc = sala_file_read(path, (size_t)1 << 32, &data, &len, &e);
    if (rc) {
        app_errorf("%s", e.msg);
        return app_exit_code(rc);
    }
    tok_ids a = {0}, b = {0}, c = {0};
    size_t lineno = 0, bad = 0;
    for (char *p = data, *end = data + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        lineno++;
        char *line = p;
        p += ll + 1;
        if (!ll) continue;
        cJSON *o = cJSON_ParseWithLength(line, ll);
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(o, "text");
        if (!cJSON_IsString(id) || !cJSON_IsString(text)) {
            app_errorf("%s:%zu: not an object with string \"id\" and \"text\"", path, lineno);
            cJSON_Delete(o);
            bad++;
            continue;
        }
        const char *s = text->valuestring;
        size_t n = strlen(s);
        a.n = b.n = c.n = 0;
        char *dec = NULL;
        size_t dlen = 0;
        if ((rc = tok_encode(t, s, n, TOK_BOS | TOK_SPECIAL, &a, &e)) ||
            (rc = tok_encode(t, s, n, TOK_SPECIAL, &b, &e)) ||
            (rc = tok_encode(t, s, n, 0, &c, &e)) ||
            (rc = tok_decode(t, b.ids, b.n, 0, &dec, &dlen, &e))) {
            app_errorf("%s:%zu: %s", path, lineno, e.msg);
            cJSON_Delete(o);
            bad++;
            continue;
        }
        fputs("{\"id\": ", stdout);
        put_json_str(stdout, id->valuestring, strlen(id->valuestring));
        fputs(", \"ids_bos\": ", stdout);
        put_ids(stdout, &a);
        fputs(", \"ids\": ", stdout);
        put_ids(stdout, &b);
        fputs(", \"ids_literal\": ", stdout);
        put_ids(stdout, &c);
        fputs(", \"decoded\": ", stdout);
        put_json_str(stdout, dec, dlen);
        fputs("}\n", stdout);
        free(dec);
        cJSON_Delete(o);
    }
    tok_ids_free(&a);
    tok_ids_free(&b);
    tok_ids_free(&c);
    free(data);
    return bad ? EXIT_PARTIAL : EXIT_OK;
}

static int read_stdin(char **out, size_t *len)
{
    size_t cap = 1 << 16, n = 0;
    char *p = malloc(cap);
    if (!p) return SALA_ENOMEM;
    size_t r;
    while ((r = fread(p + n, 1, cap - n, stdin)) > 0) {
        n += r;
        if (n == cap) {
            char *q = cap < ((size_t)1 << 32) ? realloc(p, cap * 2) : NULL;
            if (!q) {
                free(p);
                return SALA_ENOMEM;
            }
            p = q;
            cap *= 2;
        }
    }
    if (ferror(stdin)) {
        free(p);
        return SALA_EIO;
    }
    *out = p;
    *len = n;
    return SALA_OK;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *tok_path = NULL, *model_dir = NULL, *jsonl = NULL;
    unsigned flags = TOK_SPECIAL;
    bool spans = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--tokenizer") && i + 1 < argc) tok_path = argv[++i];
        else if (!strcmp(a, "--model") && i + 1 < argc) model_dir = argv[++i];
        else if (!strcmp(a, "--jsonl") && i + 1 < argc) jsonl = argv[++i];
        else if (!strcmp(a, "--bos")) flags |= TOK_BOS;
        else if (!strcmp(a, "--literal")) flags &= ~(unsigned)TOK_SPECIAL;
        else if (!strcmp(a, "--spans")) spans = true;
        else {
            app_errorf("tokenize: unknown or incomplete argument '%s' (see 'sala tokenize --help')", a);
            return EXIT_USER;
        }
    }
    char pathbuf[4096];
    if (model_dir && !tok_path) {
        snprintf(pathbuf, sizeof(pathbuf), "%s/tokenizer.json", model_dir);
        tok_path = pathbuf;
    }
    if (!tok_path) {
        app_errorf("tokenize: give --tokenizer FILE or --model DIR");
        return EXIT_USER;
    }
    tok_tokenizer *t;
    sala_err e;
    int rc = tok_load(tok_path, &t, &e);
    if (rc) {
        app_errorf("%s", e.msg);
        return app_exit_code(rc);
    }
    if (jsonl) {
        int x = do_jsonl(t, jsonl);
        tok_free(t);
        return x;
    }
    char *text;
    size_t len;
    if ((rc = read_stdin(&text, &len))) {
        app_errorf("tokenize: cannot read standard input: %s", sala_status_str(rc));
        tok_free(t);
        return app_exit_code(rc);
    }
    tok_ids ids = {0};
    rc = tok_encode(t, text, len, flags | (spans ? TOK_SPANS : 0), &ids, &e);
    if (rc) {
        app_errorf("tokenize: %s", e.msg);
    } else if (spans) {
        for (size_t i = 0; i < ids.n; i++)
            printf("%d\t%u\t%u\n", (int)ids.ids[i], ids.spans[i].start, ids.spans[i].end);
    } else {
        for (size_t i = 0; i < ids.n; i++) printf(i ? " %d" : "%d", (int)ids.ids[i]);
        putchar('\n');
    }
    tok_ids_free(&ids);
    free(text);
    tok_free(t);
    return app_exit_code(rc);
}
