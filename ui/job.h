/* job.h: long work in the background for the TUI (ingest and prefill), run as a child
 * process whose output lines are parsed into progress, so that the UI never blocks and a cancel
 * is a signal to one process group. No curses here.
 *
 * The ingest job runs `<sala> add --db DB --no-progress CORPUS PATH...` (the same code path as
 * the command line): stdout has one line per finished file ("added NAME (...)", "replaced ...",
 * "unchanged ...") and a last line "N added, M rejected"; stderr has one line per rejected file
 * ("path: component: reason").
 *
 * The prefill job (title "prefill") runs `<sala> prefill --db DB CORPUS`; its stderr is a
 * pseudo-terminal, so that `sala prefill` draws its progress line ("\rprefill [###   ] D/T
 * tokens  R tok/s  ETA Es") after every chunk, parsed into tok_done/tok_total/tok_per_s/eta;
 * stdout's "context CORPUS: ..." line is the summary. Its cancel is SIGINT (prefill stops
 * between chunks and saves nothing), the ingest's SIGTERM.
 *
 * Ownership: ui_job_free kills a running child and frees all. */
#ifndef SALA_UI_JOB_H
#define SALA_UI_JOB_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common.h"

typedef struct {
    pid_t pid;               /* 0 when no child */
    int fd_out, fd_err;      /* -1 when closed */
    char title[64];          /* "add" */
    bool prefill;            /* title "prefill": the prefill job */
    size_t done, rejected;   /* files finished, files rejected */
    long long tok_done, tok_total;   /* prefill progress (tok_total 0: none yet) */
    double tok_per_s, eta;
    char last[256];          /* the last file line or rejection, raw (sanitize to show it) */
    char summary[256];       /* the final "N added, M rejected" line, once seen */
    bool running, cancelled;
    int exit_code;           /* once finished: the child's exit status, or 128+signal */
    double started, finished;
    char lbuf[2][1024];      /* partial lines of stdout and stderr */
    size_t llen[2];
} ui_job;

void ui_job_init(ui_job *j);
/* Start argv[0] with argv (NULL-terminated) as a background job titled title ("prefill": the
 * prefill job, see above). */
int ui_job_start(ui_job *j, const char *title, char *const argv[], sala_err *e);
/* Read whatever output is ready and reap the child when it has ended; never blocks. Returns
 * true when anything changed (progress to redraw). */
bool ui_job_poll(ui_job *j);
/* Ask the child's process group to stop (SIGTERM; prefill: SIGINT); poll reaps it. */
void ui_job_cancel(ui_job *j);
void ui_job_free(ui_job *j);
/* Parse one output line into the job's counters (exposed for tests): stream 0 stdout, 1 stderr. */
void ui_job_line(ui_job *j, int stream, const char *line);

#endif
