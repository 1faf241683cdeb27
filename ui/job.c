/* job.c: background child processes with parsed progress (job.h). */
#include "job.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

void ui_job_init(ui_job *j)
{
    memset(j, 0, sizeof(*j));
    j->fd_out = j->fd_err = -1;
}

static void copy(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s);
}

/* A prefill progress line, "prefill [###   ] 100/2000 tokens  500 tok/s  ETA 3s". */
static bool prefill_line(ui_job *j, const char *line)
{
    const char *p = strstr(line, "prefill [");
    if (!p || !(p = strchr(p, ']'))) return false;
    long long d, t;
    double r, eta;
    if (sscanf(p + 1, " %lld/%lld tokens %lf tok/s ETA %lfs", &d, &t, &r, &eta) != 4) return false;
    j->tok_done = d;
    j->tok_total = t;
    j->tok_per_s = r;
    j->eta = eta;
    return true;
}

void ui_job_line(ui_job *j, int stream, const char *line)
{
    if (!*line) return;
    if (j->prefill) {
        if (prefill_line(j, line)) return;
        if (stream == 0 && !strncmp(line, "context ", 8)) copy(j->summary, sizeof(j->summary), line);
        else copy(j->last, sizeof(j->last), line);
        return;
    }
    if (stream == 1) {
        /* Rejections are "path: component: reason"; anything else on stderr is a message. */
        if (strstr(line, ": ") && strncmp(line, "sala: ", 6) != 0) j->rejected++;
        copy(j->last, sizeof(j->last), line);
        return;
    }
    static const char *const done_words[] = {"added ", "replaced ", "unchanged ", "tokenized "};
    for (size_t i = 0; i < SALA_ARRAY_LEN(done_words); i++)
        if (!strncmp(line, done_words[i], strlen(done_words[i]))) {
            if (i < 3) j->done++;
            copy(j->last, sizeof(j->last), line);
            return;
        }
    if (strstr(line, " added, ") && strstr(line, " rejected")) copy(j->summary, sizeof(j->summary), line);
}

/* A pseudo-terminal pair as a pipe: p[0] the master (read), p[1] the slave (the child's). */
static int pty_pair(int p[2])
{
    int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -1;
    const char *name;
    if (grantpt(m) || unlockpt(m) || !(name = ptsname(m))) {
        close(m);
        return -1;
    }
    int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) {
        close(m);
        return -1;
    }
    struct termios t;
    if (tcgetattr(s, &t) == 0) { /* no echo, no \n -> \r\n */
        cfmakeraw(&t);
        tcsetattr(s, TCSANOW, &t);
    }
    p[0] = m;
    p[1] = s;
    return 0;
}

int ui_job_start(ui_job *j, const char *title, char *const argv[], sala_err *e)
{
    int po[2] = {-1, -1}, pe[2] = {-1, -1};
    if (j->running) return sala_errf(e, SALA_EINVAL, "a %s job is already running", j->title);
    ui_job_init(j);
    copy(j->title, sizeof(j->title), title);
    j->prefill = !strcmp(title, "prefill");
    if (pipe2(po, O_CLOEXEC) || (j->prefill ? pty_pair(pe) : pipe2(pe, O_CLOEXEC))) {
        int er = errno;
        if (po[0] >= 0) close(po[0]), close(po[1]);
        return sala_errf(e, SALA_EIO, "%s: %s", po[0] >= 0 && j->prefill ? "pty" : "pipe",
                         strerror(er));
    }
    pid_t pid = fork();
    if (pid < 0) {
        int er = errno;
        close(po[0]), close(po[1]), close(pe[0]), close(pe[1]);
        return sala_errf(e, SALA_EIO, "fork: %s", strerror(er));
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* The cancel signals must reach the job: an ignored disposition and a blocked mask
         * survive exec (a TUI started as a background job of a non-interactive shell ignores
         * SIGINT), and a shell cannot even trap a signal it was started with ignored. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof(dfl));
        dfl.sa_handler = SIG_DFL;
        const int sigs[] = {SIGINT, SIGTERM, SIGQUIT, SIGPIPE};
        for (size_t i = 0; i < SALA_ARRAY_LEN(sigs); i++) sigaction(sigs[i], &dfl, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) dup2(nul, 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        execv(argv[0], argv);
        dprintf(2, "sala: %s: cannot run %s: %s\n", title, argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid); /* both sides, so that a cancel right after start reaches the group */
    close(po[1]);
    close(pe[1]);
    fcntl(po[0], F_SETFL, O_NONBLOCK);
    fcntl(pe[0], F_SETFL, O_NONBLOCK);
    j->pid = pid;
    j->fd_out = po[0];
    j->fd_err = pe[0];
    j->running = true;
    j->started = sala_now();
    return SALA_OK;
}

/* Read what is ready on one stream, split it into lines. Returns true when anything was read. */
static bool drain(ui_job *j, int stream)
{
    int *fd = stream ? &j->fd_err : &j->fd_out;
    bool any = false;
    char buf[4096];
    while (*fd >= 0) {
        ssize_t r = read(*fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno != EIO) break; /* EAGAIN: nothing more now */
        if (r <= 0) { /* end of file; EIO: a pty whose slave side is closed */
            close(*fd);
            *fd = -1;
            if (j->llen[stream]) {
                j->lbuf[stream][j->llen[stream]] = 0;
                ui_job_line(j, stream, j->lbuf[stream]);
                j->llen[stream] = 0;
            }
            any = true;
            break;
        }
        any = true;
        for (ssize_t i = 0; i < r; i++) {
            char c = buf[i];
            size_t *n = &j->llen[stream];
            bool eol = c == '\n' || c == '\r'; /* \r: a progress line redrawn in place */
            if (eol || *n + 1 >= sizeof(j->lbuf[0])) {
                j->lbuf[stream][*n] = 0;
                ui_job_line(j, stream, j->lbuf[stream]);
                *n = 0;
                if (eol) continue;
            }
            j->lbuf[stream][(*n)++] = c;
        }
    }
    return any;
}

bool ui_job_poll(ui_job *j)
{
    if (!j->pid) return false;
    bool changed = drain(j, 0);
    changed |= drain(j, 1);
    int st;
    pid_t r = waitpid(j->pid, &st, WNOHANG);
    if (r == j->pid) {
        drain(j, 0);
        drain(j, 1);
        j->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
        j->pid = 0;
        j->running = false;
        j->finished = sala_now();
        if (j->fd_out >= 0) close(j->fd_out), j->fd_out = -1;
        if (j->fd_err >= 0) close(j->fd_err), j->fd_err = -1;
        changed = true;
    }
    return changed;
}

void ui_job_cancel(ui_job *j)
{
    if (!j->pid || !j->running) return;
    j->cancelled = true;
    kill(-j->pid, j->prefill ? SIGINT : SIGTERM);
}

void ui_job_free(ui_job *j)
{
    if (j->pid) {
        kill(-j->pid, SIGKILL);
        waitpid(j->pid, NULL, 0);
        j->pid = 0;
    }
    if (j->fd_out >= 0) close(j->fd_out);
    if (j->fd_err >= 0) close(j->fd_err);
    j->fd_out = j->fd_err = -1;
    j->running = false;
}
