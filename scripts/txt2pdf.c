/* txt2pdf.c: a plain-text file to a paginated A4 PDF with cairo (monospace, 66 lines a page,
 * long lines wrapped), with the PDF title set. Used by scripts/make-samples only; not part of
 * sala. usage: txt2pdf IN.txt OUT.pdf TITLE */
#include <cairo-pdf.h>
#include <cairo.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: txt2pdf IN.txt OUT.pdf TITLE\n");
        return 1;
    }
    FILE *in = fopen(argv[1], "r");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    cairo_surface_t *s = cairo_pdf_surface_create(argv[2], 595, 842);
    cairo_pdf_surface_set_metadata(s, CAIRO_PDF_METADATA_TITLE, argv[3]);
    cairo_t *c = cairo_create(s);
    cairo_select_font_face(c, "monospace", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(c, 9);
    char line[4096];
    int y = 0;
    while (fgets(line, sizeof(line), in)) {
        line[strcspn(line, "\r\n")] = 0;
        size_t len = strlen(line), at = 0;
        do {
            char part[96];
            size_t k = len - at > 90 ? 90 : len - at;
            memcpy(part, line + at, k);
            part[k] = 0;
            if (y == 66) {
                cairo_show_page(c);
                y = 0;
            }
            cairo_move_to(c, 50, 60 + 11 * y++);
            cairo_show_text(c, part);
            at += k;
        } while (at < len);
    }
    fclose(in);
    cairo_show_page(c);
    cairo_destroy(c);
    cairo_surface_finish(s);
    int bad = cairo_surface_status(s) != CAIRO_STATUS_SUCCESS;
    cairo_surface_destroy(s);
    return bad;
}
