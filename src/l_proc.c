/*
 * l_proc.c -- orch.proc: child processes that run beside orch, not under a
 * blocking call. sys.spawn runs one program and waits for it; a fleet
 * rollout runs many orch processes at once and watches them all, so here a
 * child is a handle that is started, polled and signalled:
 *
 *   local p <close> = proc.start { proc.exe(), "recipes/prod.lua", "--yes",
 *                                  env = { K = "v", UNSET = false }, stdout = path, stderr = path }
 *   local r = p:poll()          -- nil while it runs; then { code =, signal =, maxrss_kb =, seconds = }
 *   p:signal(2)                 -- SIGINT to its process group
 *
 * Each child runs in a process group of its own, so a Ctrl-C on the terminal
 * reaches orch alone, and orch decides what its children get. stdin is
 * /dev/null; stdout and stderr go to files (truncated), never to pipes that
 * would need draining.
 *
 * Error convention: start raises when the program cannot be started
 * (naming it and why); poll and signal raise only on misuse.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <lua.h>
#include <lauxlib.h>
#include "orch.h"

#define PROC_MT "orch.proc"

typedef struct Proc {
    pid_t pid;          /* > 0 while running; 0 once reaped or never started */
    int done;           /* reaped: status and usage below are valid */
    int status;
    long maxrss_kb;
    double started, ended;
} Proc;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static Proc *check_proc(lua_State *L) {
    return (Proc *)luaL_checkudata(L, 1, PROC_MT);
}

/* __gc / __close: a child still running when its handle goes away is asked
 * to stop (SIGTERM to its group: an orch child cancels its statement and
 * writes its report) and reaped if it already ended; never waited for here. */
static int proc_gc(lua_State *L) {
    Proc *p = (Proc *)luaL_checkudata(L, 1, PROC_MT);
    if (p->pid > 0 && !p->done) {
        kill(-p->pid, SIGTERM);
        if (waitpid(p->pid, &p->status, WNOHANG) == p->pid) p->done = 1;
        p->pid = 0;
    }
    return 0;
}

/* Copy the strings of the handle table's "env" into a NULL-terminated
 * array of "K=V" (set) and "K" (unset) entries, anchored in a Lua table at
 * the top of the stack so they live until the fork. */
static const char **collect_env(lua_State *L, int envidx, int *count) {
    int n = 0, anchor;
    const char **envs;
    lua_pushnil(L);
    while (lua_next(L, envidx)) { n++; lua_pop(L, 1); }
    envs = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    lua_createtable(L, n, 0);
    anchor = lua_gettop(L);
    n = 0;
    lua_pushnil(L);
    while (lua_next(L, envidx)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "proc.start: env keys must be strings");
        lua_pushstring(L, lua_tostring(L, -2));
        if (!(lua_type(L, -2) == LUA_TBOOLEAN && !lua_toboolean(L, -2))) {
            if (lua_type(L, -2) != LUA_TSTRING && lua_type(L, -2) != LUA_TNUMBER)
                luaL_error(L, "proc.start: env.%s is a %s (a string, or false to unset)", lua_tostring(L, -3), luaL_typename(L, -2));
            lua_pushliteral(L, "=");
            lua_pushvalue(L, -3);
            lua_concat(L, 3);
        }
        envs[n++] = lua_tostring(L, -1);
        lua_rawseti(L, anchor, n);
        lua_pop(L, 1);
    }
    envs[n] = NULL;
    *count = n;
    return envs;
}

static int open_out(const char *path) {
    if (!path) return -1;
    return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
}

/* proc.start{ argv..., env = {K = V | false}, cwd =, stdout = path, stderr = path }
 * -> handle, also stored as the table's field proc. Starts argv[1]
 * (searched in PATH) in a new process group with stdin from /dev/null.
 * Raises naming the program when it cannot start. */
static int proc_start(lua_State *L) {
    int n, i, nenv = 0, exec_pipe[2], outfd = -1, errfd = -1, pidx;
    const char **argv, **envs = NULL, *cwd = NULL, *outfile = NULL, *errfile = NULL;
    Proc *p;
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (int)luaL_len(L, 1);
    if (n < 1) return luaL_argerror(L, 1, "argv must have at least one element");
    argv = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 1, i) != LUA_TSTRING)
            return luaL_error(L, "proc.start: argv[%d] is a %s (string expected)", i, luaL_typename(L, -1));
        argv[i - 1] = lua_tostring(L, -1);     /* the argument table keeps it alive */
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    if (lua_getfield(L, 1, "cwd") == LUA_TSTRING) cwd = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "stdout") == LUA_TSTRING) outfile = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "stderr") == LUA_TSTRING) errfile = lua_tostring(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "env");
    if (lua_istable(L, -1)) envs = collect_env(L, lua_gettop(L), &nenv);

    /* the handle first, marked not started: an error below leaves nothing behind */
    p = (Proc *)lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    luaL_setmetatable(L, PROC_MT);
    pidx = lua_gettop(L);
    if (outfile && (outfd = open_out(outfile)) < 0)
        return luaL_error(L, "proc.start: cannot open %s for %s's output: %s", outfile, argv[0], strerror(errno));
    if (errfile && (errfd = (errfile && outfile && strcmp(errfile, outfile) == 0) ? dup(outfd) : open_out(errfile)) < 0) {
        int e = errno;
        if (outfd >= 0) close(outfd);
        return luaL_error(L, "proc.start: cannot open %s for %s's errors: %s", errfile, argv[0], strerror(e));
    }
    if (pipe2(exec_pipe, O_CLOEXEC) != 0) {
        int e = errno;
        if (outfd >= 0) close(outfd);
        if (errfd >= 0) close(errfd);
        return luaL_error(L, "proc.start: pipe: %s", strerror(e));
    }
    fflush(stdout);
    fflush(stderr);
    p->pid = fork();
    if (p->pid < 0) {
        int e = errno;
        p->pid = 0;
        close(exec_pipe[0]); close(exec_pipe[1]);
        if (outfd >= 0) close(outfd);
        if (errfd >= 0) close(errfd);
        return luaL_error(L, "proc.start: cannot start %s: fork: %s", argv[0], strerror(e));
    }
    if (p->pid == 0) {
        int e, nul;
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        setpgid(0, 0);
        nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) { dup2(nul, 0); close(nul); }
        if (outfd >= 0) dup2(outfd, 1);
        if (errfd >= 0) dup2(errfd, 2);
        for (i = 0; i < nenv; i++) {
            if (strchr(envs[i], '=')) putenv((char *)envs[i]);
            else unsetenv(envs[i]);
        }
        if (cwd && chdir(cwd) != 0) goto child_fail;
        execvp(argv[0], (char *const *)argv);
    child_fail:
        e = errno;
        if (write(exec_pipe[1], &e, sizeof e) < 0) { /* nothing more to do */ }
        _exit(127);
    }
    /* the parent sets the group too: a signal sent right after start must reach it */
    setpgid(p->pid, p->pid);
    p->started = mono();
    close(exec_pipe[1]);
    if (outfd >= 0) close(outfd);
    if (errfd >= 0) close(errfd);
    {
        int e = 0;
        ssize_t r;
        do r = read(exec_pipe[0], &e, sizeof e); while (r < 0 && errno == EINTR);
        close(exec_pipe[0]);
        if (r == (ssize_t)sizeof e) {
            waitpid(p->pid, NULL, 0);
            p->pid = 0;
            return luaL_error(L, "cannot run '%s'%s%s: %s", argv[0], cwd ? " in " : "", cwd ? cwd : "", strerror(e));
        }
    }
    /* the handle is in the argument table before this returns: a caller
     * interrupted on the return still finds (and can watch) the child */
    lua_pushvalue(L, pidx);
    lua_setfield(L, 1, "proc");
    lua_pushvalue(L, pidx);
    return 1;
}

/* Reap the child if it ended (without waiting). Returns 1 when done. */
static int reap(Proc *p) {
    struct rusage ru;
    pid_t w;
    if (p->done) return 1;
    if (p->pid <= 0) return 0;
    do w = wait4(p->pid, &p->status, WNOHANG, &ru); while (w < 0 && errno == EINTR);
    if (w == p->pid) {
        p->done = 1;
        p->maxrss_kb = ru.ru_maxrss;
        p->ended = mono();
        return 1;
    }
    if (w < 0) {            /* reaped elsewhere (ECHILD): its status is lost */
        p->done = 1;
        p->status = -1;
        p->ended = mono();
        return 1;
    }
    return 0;
}

/* p:poll() -> nil while the child runs; then { code = exit code | nil,
 * signal = number | nil, maxrss_kb =, seconds = } (the same table shape on
 * every later call). */
static int proc_poll(lua_State *L) {
    Proc *p = check_proc(L);
    if (!p->done && p->pid <= 0) return luaL_error(L, "proc: poll on a process that was never started");
    if (!reap(p)) { lua_pushnil(L); return 1; }
    lua_createtable(L, 0, 4);
    if (p->status >= 0 && WIFEXITED(p->status)) { lua_pushinteger(L, WEXITSTATUS(p->status)); lua_setfield(L, -2, "code"); }
    if (p->status >= 0 && WIFSIGNALED(p->status)) { lua_pushinteger(L, WTERMSIG(p->status)); lua_setfield(L, -2, "signal"); }
    lua_pushinteger(L, p->maxrss_kb);
    lua_setfield(L, -2, "maxrss_kb");
    lua_pushnumber(L, p->ended - p->started);
    lua_setfield(L, -2, "seconds");
    return 1;
}

/* p:signal(sig) -> true, or false when the child has already ended. Sends
 * sig (default SIGTERM) to the child's whole process group. */
static int proc_signal(lua_State *L) {
    Proc *p = check_proc(L);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    if (reap(p) || p->pid <= 0) { lua_pushboolean(L, 0); return 1; }
    if (kill(-p->pid, sig) != 0 && kill(p->pid, sig) != 0) { lua_pushboolean(L, 0); return 1; }
    lua_pushboolean(L, 1);
    return 1;
}

static int proc_pid(lua_State *L) {
    Proc *p = check_proc(L);
    lua_pushinteger(L, p->pid);
    return 1;
}

/* proc.exe() -> the path of the running orch binary (/proc/self/exe). */
static int proc_exe(lua_State *L) {
    char buf[4096];
    ssize_t k = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (k < 0) return luaL_error(L, "proc.exe: cannot read /proc/self/exe: %s", strerror(errno));
    buf[k] = '\0';
    lua_pushstring(L, buf);
    return 1;
}

/* proc.maxrss_kb() -> this process's peak resident set size in KiB. */
static int proc_maxrss(lua_State *L) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    lua_pushinteger(L, ru.ru_maxrss);
    return 1;
}

/* proc.rearm_interrupt(): the Ctrl-C just handled counts as done, so the
 * next one is again a first one (it raises the interrupt error) instead of
 * killing orch at once. A fleet rollout uses it to give the second Ctrl-C
 * a meaning of its own (interrupt the running targets). */
static int proc_rearm_interrupt(lua_State *L) {
    (void)L;
    orch_interrupt_rearm();
    return 0;
}

static const luaL_Reg methods[] = {
    {"poll", proc_poll}, {"signal", proc_signal}, {"pid", proc_pid}, {NULL, NULL}
};

static const luaL_Reg funcs[] = {
    {"start", proc_start}, {"exe", proc_exe}, {"maxrss_kb", proc_maxrss},
    {"rearm_interrupt", proc_rearm_interrupt}, {NULL, NULL}
};

int luaopen_orch_proc(lua_State *L);
int luaopen_orch_proc(lua_State *L) {
    if (luaL_newmetatable(L, PROC_MT)) {
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, proc_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, proc_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    luaL_newlib(L, funcs);
    return 1;
}
