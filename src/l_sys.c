/*
 * l_sys.c -- orch.sys: the operating-system primitives the Lua library needs
 * and Lua's standard library lacks: running programs from an argv array
 * (never a shell string) with a timeout and optionally as another user,
 * files written atomically, directories, free ports, clocks, checksums.
 *
 * Error convention: probes (stat, listdir, ...) return nil, message, errno;
 * misuse raises.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <zlib.h>
#include <lua.h>
#include <lauxlib.h>
#include "orch.h"
#include "sha256.h"

static int fail(lua_State *L, const char *what, const char *path) {
    int e = errno;
    lua_pushnil(L);
    if (path) lua_pushfstring(L, "%s %s: %s", what, path, strerror(e));
    else lua_pushfstring(L, "%s: %s", what, strerror(e));
    lua_pushinteger(L, e);
    return 3;
}

/* ============================================================== spawn */

typedef struct Spawn {
    int out[2], err[2], in[2];
    pid_t pid;
} Spawn;

static void close_fd(int *fd) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
}

static int spawn_gc(lua_State *L) {
    Spawn *s = (Spawn *)lua_touserdata(L, 1);
    close_fd(&s->out[0]); close_fd(&s->out[1]);
    close_fd(&s->err[0]); close_fd(&s->err[1]);
    close_fd(&s->in[0]); close_fd(&s->in[1]);
    if (s->pid > 0) {               /* unwound while the child ran: do not leave it behind */
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        s->pid = 0;
    }
    return 0;
}

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* sys.spawn{ argv..., user=, env={K=V, K2=false (unset)}, clear_env=, cwd=, stdin=, timeout=,
 *            capture=true, stdout=path, stderr=path }
 * -> {ok, code, signal, stdout, stderr, timed_out}
 * Runs argv[1] (searched in PATH) with argv as given. user switches to that
 * system user (only as root). capture=false lets the child inherit orch's
 * stdout and stderr. stdout=/stderr= send output to a file (appended). The
 * child is killed (SIGTERM, then SIGKILL) when timeout seconds pass or orch
 * is interrupted. Raises if the program cannot be started. */
static int sys_spawn(lua_State *L) {
    int n, i, capture = 1, status = 0, done_out = 0, done_err = 0, timed_out = 0, killed = 0;
    const char **argv, *user = NULL, *cwd = NULL, *outfile = NULL, *errfile = NULL, *input = NULL;
    size_t inlen = 0, inoff = 0;
    double timeout = -1, start;
    struct passwd *pw = NULL;
    Spawn *s;
    int exec_pipe[2];
    luaL_checktype(L, 1, LUA_TTABLE);
    n = (int)luaL_len(L, 1);
    if (n < 1) return luaL_argerror(L, 1, "argv must have at least one element");
    argv = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, 1, i);
        if (t == LUA_TNUMBER) {                 /* anchor the converted string in the table */
            lua_pushstring(L, lua_tostring(L, -1));
            lua_rawseti(L, 1, i);
        } else if (t != LUA_TSTRING) {
            return luaL_error(L, "spawn: argv[%d] is a %s (string expected)", i, luaL_typename(L, -1));
        }
        lua_pop(L, 1);
        lua_rawgeti(L, 1, i);
        argv[i - 1] = lua_tostring(L, -1);      /* the table keeps it alive */
        lua_pop(L, 1);
    }
    argv[n] = NULL;
    if (lua_getfield(L, 1, "user") == LUA_TSTRING) user = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "cwd") == LUA_TSTRING) cwd = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "stdout") == LUA_TSTRING) outfile = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "stderr") == LUA_TSTRING) errfile = lua_tostring(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "stdin") == LUA_TSTRING) input = lua_tolstring(L, -1, &inlen);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "timeout") == LUA_TNUMBER) timeout = lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "capture") == LUA_TBOOLEAN) capture = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (user) {
        pw = getpwnam(user);
        if (!pw) return luaL_error(L, "spawn: no system user '%s'", user);
        if (getuid() != 0 && getuid() != pw->pw_uid)
            return luaL_error(L, "spawn: running as '%s' needs root", user);
    }
    /* environment: the table's pairs, added to (or replacing) ours */
    lua_getfield(L, 1, "env");
    int envidx = lua_gettop(L);
    lua_getfield(L, 1, "clear_env");
    int clear_env = lua_toboolean(L, -1);
    lua_pop(L, 1);

    s = (Spawn *)lua_newuserdatauv(L, sizeof *s, 0);
    s->out[0] = s->out[1] = s->err[0] = s->err[1] = s->in[0] = s->in[1] = -1;
    s->pid = 0;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, spawn_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    if (capture && (pipe2(s->out, O_CLOEXEC) || pipe2(s->err, O_CLOEXEC)))
        return luaL_error(L, "spawn: pipe: %s", strerror(errno));
    if (pipe2(s->in, O_CLOEXEC) || pipe2(exec_pipe, O_CLOEXEC))
        return luaL_error(L, "spawn: pipe: %s", strerror(errno));
    /* collect env strings before fork (no Lua calls in the child) */
    int nenv = 0;
    const char **envs = NULL;
    if (lua_istable(L, envidx)) {
        lua_pushnil(L);
        while (lua_next(L, envidx)) { nenv++; lua_pop(L, 1); }
        envs = (const char **)lua_newuserdatauv(L, sizeof(char *) * (size_t)(nenv + 1), 0);
        lua_createtable(L, nenv, 0);           /* anchors the "K=V" strings */
        int anchor = lua_gettop(L);
        nenv = 0;
        lua_pushnil(L);
        while (lua_next(L, envidx)) {
            if (lua_type(L, -2) != LUA_TSTRING) return luaL_error(L, "spawn: env keys must be strings");
            if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
                lua_pushstring(L, lua_tostring(L, -2));       /* NAME alone: unset in the child */
            } else {
                lua_pushstring(L, lua_tostring(L, -2));
                lua_pushliteral(L, "=");
                luaL_tolstring(L, -3, NULL);
                lua_concat(L, 3);
            }
            envs[nenv++] = lua_tostring(L, -1);
            lua_rawseti(L, anchor, nenv);
            lua_pop(L, 1);
        }
        envs[nenv] = NULL;
    }
    fflush(stdout);
    fflush(stderr);
    s->pid = fork();
    if (s->pid < 0) {
        close(exec_pipe[0]); close(exec_pipe[1]);
        return luaL_error(L, "spawn: fork: %s", strerror(errno));
    }
    if (s->pid == 0) {
        int e, fd;
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        setpgid(0, 0);   /* own process group: Ctrl-C reaches orch, which decides */
        dup2(s->in[0], 0);
        if (capture) { dup2(s->out[1], 1); dup2(s->err[1], 2); }
        if (outfile && (fd = open(outfile, O_WRONLY | O_CREAT | O_APPEND, 0600)) >= 0) { dup2(fd, 1); close(fd); }
        if (errfile && (fd = open(errfile, O_WRONLY | O_CREAT | O_APPEND, 0600)) >= 0) { dup2(fd, 2); close(fd); }
        if (clear_env) clearenv();
        for (i = 0; i < nenv; i++) {
            if (strchr(envs[i], '=')) putenv((char *)envs[i]);
            else unsetenv(envs[i]);
        }
        if (pw) {
            if (initgroups(pw->pw_name, pw->pw_gid) || setgid(pw->pw_gid) || setuid(pw->pw_uid)) goto child_fail;
            setenv("HOME", pw->pw_dir, 1);
            setenv("USER", pw->pw_name, 1);
            setenv("LOGNAME", pw->pw_name, 1);
        }
        if (cwd && chdir(cwd) != 0) goto child_fail;
        execvp(argv[0], (char *const *)argv);
    child_fail:
        e = errno;
        if (write(exec_pipe[1], &e, sizeof e) < 0) { /* nothing more to do */ }
        _exit(127);
    }
    close(exec_pipe[1]);
    {
        int e = 0;
        ssize_t r;
        do r = read(exec_pipe[0], &e, sizeof e); while (r < 0 && errno == EINTR);
        close(exec_pipe[0]);
        if (r == (ssize_t)sizeof e) {
            waitpid(s->pid, NULL, 0);
            s->pid = 0;
            return luaL_error(L, "cannot run '%s': %s", argv[0], strerror(e));
        }
    }
    close_fd(&s->in[0]);
    close_fd(&s->out[1]);
    close_fd(&s->err[1]);
    if (!input || inlen == 0) close_fd(&s->in[1]);
    else fcntl(s->in[1], F_SETFL, O_NONBLOCK);
    lua_newtable(L);
    int outt = lua_gettop(L), nout = 0;
    lua_newtable(L);
    int errt = lua_gettop(L), nerr = 0;
    if (!capture) done_out = done_err = 1;
    start = now_mono();
    for (;;) {
        struct pollfd p[3];
        int np = 0, r, wstatus;
        pid_t w;
        if (!done_out) { p[np].fd = s->out[0]; p[np].events = POLLIN; np++; }
        if (!done_err) { p[np].fd = s->err[0]; p[np].events = POLLIN; np++; }
        if (s->in[1] >= 0) { p[np].fd = s->in[1]; p[np].events = POLLOUT; np++; }
        w = waitpid(s->pid, &wstatus, WNOHANG);
        if (w == s->pid) {
            status = wstatus;
            s->pid = 0;
            /* drain what is already there, without waiting for grandchildren */
            for (i = 0; i < np; i++) p[i].events &= POLLIN;
            while (np > 0 && poll(p, (nfds_t)np, 0) > 0) {
                int any = 0;
                for (i = 0; i < np; i++) {
                    char buf[16384];
                    ssize_t k;
                    if (!(p[i].revents & (POLLIN | POLLHUP))) continue;
                    k = read(p[i].fd, buf, sizeof buf);
                    if (k <= 0) { p[i].events = 0; continue; }
                    any = 1;
                    if (p[i].fd == s->out[0]) { lua_pushlstring(L, buf, (size_t)k); lua_rawseti(L, outt, ++nout); }
                    else { lua_pushlstring(L, buf, (size_t)k); lua_rawseti(L, errt, ++nerr); }
                }
                if (!any) break;
            }
            break;
        }
        if (!killed && ((timeout >= 0 && now_mono() - start > timeout) || orch_interrupted())) {
            timed_out = !orch_interrupted();
            kill(-s->pid, SIGTERM);
            kill(s->pid, SIGTERM);
            killed = 1;
            start = now_mono();
            timeout = 5;            /* grace period, then SIGKILL */
        } else if (killed && now_mono() - start > timeout) {
            kill(-s->pid, SIGKILL);
            kill(s->pid, SIGKILL);
        }
        r = poll(p, (nfds_t)np, np ? 50 : 0);
        if (np == 0) { struct timespec ts = {0, 20 * 1000000}; nanosleep(&ts, NULL); continue; }
        if (r < 0 && errno != EINTR) break;
        for (i = 0; r > 0 && i < np; i++) {
            char buf[16384];
            ssize_t k;
            if (!p[i].revents) continue;
            if (p[i].fd == s->in[1]) {
                k = write(s->in[1], input + inoff, inlen - inoff);
                if (k > 0) inoff += (size_t)k;
                if (k < 0 && errno != EAGAIN) inoff = inlen;
                if (inoff >= inlen) close_fd(&s->in[1]);
                continue;
            }
            k = read(p[i].fd, buf, sizeof buf);
            if (k <= 0) {
                if (k < 0 && errno == EINTR) continue;
                if (p[i].fd == s->out[0]) done_out = 1; else done_err = 1;
                continue;
            }
            if (p[i].fd == s->out[0]) { lua_pushlstring(L, buf, (size_t)k); lua_rawseti(L, outt, ++nout); }
            else { lua_pushlstring(L, buf, (size_t)k); lua_rawseti(L, errt, ++nerr); }
        }
    }
    /* stack: ... s, [bout], errt */
    lua_createtable(L, 0, 6);
    int res = lua_gettop(L);
    lua_pushboolean(L, WIFEXITED(status) && WEXITSTATUS(status) == 0 && !timed_out);
    lua_setfield(L, res, "ok");
    if (WIFEXITED(status)) { lua_pushinteger(L, WEXITSTATUS(status)); lua_setfield(L, res, "code"); }
    if (WIFSIGNALED(status)) { lua_pushinteger(L, WTERMSIG(status)); lua_setfield(L, res, "signal"); }
    lua_pushboolean(L, timed_out);
    lua_setfield(L, res, "timed_out");
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "concat");
    lua_pushvalue(L, -1);
    lua_pushvalue(L, errt);
    lua_call(L, 1, 1);
    lua_setfield(L, res, "stderr");
    lua_pushvalue(L, outt);
    lua_call(L, 1, 1);
    lua_setfield(L, res, "stdout");
    lua_pop(L, 1);
    close_fd(&s->out[0]);
    close_fd(&s->err[0]);
    close_fd(&s->in[1]);
    if (orch_interrupted()) return orch_raise_interrupt(L);
    return 1;
}

/* ============================================================ files */

static int sys_stat(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    struct stat st;
    if ((lua_toboolean(L, 2) ? lstat(p, &st) : stat(p, &st)) != 0) return fail(L, "cannot stat", p);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, S_ISDIR(st.st_mode) ? "directory" : S_ISREG(st.st_mode) ? "file" :
                      S_ISLNK(st.st_mode) ? "link" : S_ISFIFO(st.st_mode) ? "fifo" :
                      S_ISSOCK(st.st_mode) ? "socket" : "other");
    lua_setfield(L, -2, "type");
    lua_pushinteger(L, (lua_Integer)st.st_size); lua_setfield(L, -2, "size");
    lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777)); lua_setfield(L, -2, "mode");
    lua_pushnumber(L, (double)st.st_mtim.tv_sec + (double)st.st_mtim.tv_nsec / 1e9); lua_setfield(L, -2, "mtime");
    lua_pushinteger(L, (lua_Integer)st.st_uid); lua_setfield(L, -2, "uid");
    lua_pushinteger(L, (lua_Integer)st.st_dev); lua_setfield(L, -2, "dev");
    return 1;
}

static int sys_exists(lua_State *L) {
    struct stat st;
    lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0);
    return 1;
}

/* sys.listdir(path) -> sorted array of names (without . and ..). */
static int sys_listdir(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    DIR *d = opendir(p);
    struct dirent *e;
    int n = 0;
    if (!d) return fail(L, "cannot list", p);
    lua_newtable(L);
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        lua_pushstring(L, e->d_name);
        lua_rawseti(L, -2, ++n);
    }
    closedir(d);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, -3);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    return 1;
}

static int sys_mkdir(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0755);
    if (mkdir(p, mode) != 0 && errno != EEXIST) return fail(L, "cannot create directory", p);
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.mkdir_p(path [, mode]): create path and missing parents. */
static int sys_mkdir_p(lua_State *L) {
    size_t len;
    const char *p = luaL_checklstring(L, 1, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 2, 0755);
    char *buf = (char *)lua_newuserdatauv(L, len + 1, 0), *q;
    memcpy(buf, p, len + 1);
    for (q = buf + 1; ; q++) {
        if (*q == '/' || *q == '\0') {
            char c = *q;
            *q = '\0';
            if (mkdir(buf, mode) != 0 && errno != EEXIST) return fail(L, "cannot create directory", buf);
            *q = c;
            if (!c) break;
        }
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path) != 0 && errno != ENOENT ? -1 : 0;
}

/* sys.rmtree(path): remove a directory tree (or a file); missing is fine. */
static int sys_rmtree(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    struct stat st;
    if (lstat(p, &st) != 0 && errno == ENOENT) { lua_pushboolean(L, 1); return 1; }
    if (nftw(p, rm_one, 32, FTW_DEPTH | FTW_PHYS) != 0) return fail(L, "cannot remove", p);
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.mkdtemp(prefix) -> path of a new private directory "prefixXXXXXX". */
static int sys_mkdtemp(lua_State *L) {
    const char *prefix = luaL_optstring(L, 1, "/tmp/orch-");
    char *t = (char *)lua_newuserdatauv(L, strlen(prefix) + 7, 0);
    sprintf(t, "%sXXXXXX", prefix);
    if (!mkdtemp(t)) return fail(L, "cannot create temporary directory", prefix);
    lua_pushstring(L, t);
    return 1;
}

static int fsync_path(const char *path, int dir) {
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC), r;
    if (fd < 0) return -1;
    r = fsync(fd);
    close(fd);
    return r;
}

static void dirname_of(const char *path, char *out, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(out, n, ".");
    else if (slash == path) snprintf(out, n, "/");
    else snprintf(out, n, "%.*s", (int)(slash - path), path);
}

/* sys.write_atomic(path, data [, mode]): write to path.tmp-PID, fsync,
 * rename over path, fsync the directory. Readers see the old file or the
 * whole new one, never a part. */
static int sys_write_atomic(lua_State *L) {
    size_t len, off = 0;
    const char *path = luaL_checkstring(L, 1);
    const char *data = luaL_checklstring(L, 2, &len);
    mode_t mode = (mode_t)luaL_optinteger(L, 3, 0644);
    char dir[4096];
    const char *tmp = lua_pushfstring(L, "%s.tmp-%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return fail(L, "cannot create", tmp);
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd); unlink(tmp); errno = e;
            return fail(L, "cannot write", tmp);
        }
        off += (size_t)w;
    }
    if (fchmod(fd, mode) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd); unlink(tmp); errno = e;
        return fail(L, "cannot sync", tmp);
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp); errno = e;
        return fail(L, "cannot rename to", path);
    }
    dirname_of(path, dir, sizeof dir);
    fsync_path(dir, 1);
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.fsync(path [, is_dir]) */
static int sys_fsync(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    if (fsync_path(p, lua_toboolean(L, 2)) != 0) return fail(L, "cannot fsync", p);
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.rename(from, to): atomic rename, then fsync of the target directory. */
static int sys_rename(lua_State *L) {
    const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
    char dir[4096];
    if (rename(a, b) != 0) return fail(L, "cannot rename", a);
    dirname_of(b, dir, sizeof dir);
    fsync_path(dir, 1);
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.link(from, to): a second name for a file; never replaces an existing
 * to (EEXIST: nil, message, errno), so it reserves a name atomically where
 * an exists() check would race. Then fsyncs the target directory. */
static int sys_link(lua_State *L) {
    const char *a = luaL_checkstring(L, 1), *b = luaL_checkstring(L, 2);
    char dir[4096];
    if (link(a, b) != 0) return fail(L, "cannot link to", b);
    dirname_of(b, dir, sizeof dir);
    fsync_path(dir, 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int sys_unlink(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    if (unlink(p) != 0 && errno != ENOENT) return fail(L, "cannot remove", p);
    lua_pushboolean(L, 1);
    return 1;
}

static int sys_chmod(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    if (chmod(p, (mode_t)luaL_checkinteger(L, 2)) != 0) return fail(L, "cannot chmod", p);
    lua_pushboolean(L, 1);
    return 1;
}

static uid_t chown_uid;
static gid_t chown_gid;
static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return lchown(path, chown_uid, chown_gid);
}

/* sys.chown(path, user [, recursive]) */
static int sys_chown(lua_State *L) {
    const char *p = luaL_checkstring(L, 1), *user = luaL_checkstring(L, 2);
    struct passwd *pw = getpwnam(user);
    if (!pw) return luaL_error(L, "no system user '%s'", user);
    chown_uid = pw->pw_uid;
    chown_gid = pw->pw_gid;
    if (lua_toboolean(L, 3) ? nftw(p, chown_one, 32, FTW_PHYS) != 0 : chown(p, pw->pw_uid, pw->pw_gid) != 0)
        return fail(L, "cannot chown", p);
    lua_pushboolean(L, 1);
    return 1;
}

static int sys_realpath(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    char *r = realpath(p, NULL);
    if (!r) return fail(L, "cannot resolve", p);
    lua_pushstring(L, r);
    free(r);
    return 1;
}

/* sys.chdir(path) -> true, or nil, message, errno. */
static int sys_chdir(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    if (chdir(p) != 0) return fail(L, "cannot change into", p);
    lua_pushboolean(L, 1);
    return 1;
}

/* sys.readlink(path) -> the target of a symbolic link as written in it, or
 * nil, message, errno (EINVAL when path is not a link). */
static int sys_readlink(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    char buf[4096];
    ssize_t n = readlink(p, buf, sizeof buf);
    if (n < 0) return fail(L, "cannot read the link", p);
    if ((size_t)n == sizeof buf) {
        errno = ENAMETOOLONG;
        return fail(L, "cannot read the link", p);
    }
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

/* sys.statvfs(path) -> {free=bytes available to us, total=bytes} */
static int sys_statvfs(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    struct statvfs v;
    if (statvfs(p, &v) != 0) return fail(L, "cannot statvfs", p);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)v.f_bavail * (lua_Integer)v.f_frsize);
    lua_setfield(L, -2, "free");
    lua_pushinteger(L, (lua_Integer)v.f_blocks * (lua_Integer)v.f_frsize);
    lua_setfield(L, -2, "total");
    return 1;
}

/* ============================================================ process */

static int sys_getuid(lua_State *L) { lua_pushinteger(L, getuid()); return 1; }
static int sys_getpid(lua_State *L) { lua_pushinteger(L, getpid()); return 1; }

/* sys.user(name) -> {name, uid, gid, home} or nil */
static int sys_user(lua_State *L) {
    struct passwd *pw = lua_isnoneornil(L, 1) ? getpwuid(getuid()) : getpwnam(luaL_checkstring(L, 1));
    if (!pw) return 0;
    lua_createtable(L, 0, 4);
    lua_pushstring(L, pw->pw_name); lua_setfield(L, -2, "name");
    lua_pushinteger(L, pw->pw_uid); lua_setfield(L, -2, "uid");
    lua_pushinteger(L, pw->pw_gid); lua_setfield(L, -2, "gid");
    lua_pushstring(L, pw->pw_dir); lua_setfield(L, -2, "home");
    return 1;
}

static int sys_kill(lua_State *L) {
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    if (kill(pid, sig) != 0) return fail(L, "cannot signal process", NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int sys_hostname(lua_State *L) {
    char buf[256];
    if (gethostname(buf, sizeof buf) != 0) return fail(L, "gethostname", NULL);
    buf[sizeof buf - 1] = '\0';
    lua_pushstring(L, buf);
    return 1;
}

static int sys_isatty(lua_State *L) {
    lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
    return 1;
}

/* sys.free_port() -> a TCP port on 127.0.0.1 that was free a moment ago. */
static int sys_free_port(lua_State *L) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail(L, "socket", NULL);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        int e = errno;
        close(fd); errno = e;
        return fail(L, "cannot find a free port", NULL);
    }
    close(fd);
    lua_pushinteger(L, ntohs(a.sin_port));
    return 1;
}

/* sys.port_open(port [, host]) -> true if something accepts TCP there. */
static int sys_port_open(lua_State *L) {
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), ok;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)luaL_checkinteger(L, 1));
    inet_pton(AF_INET, luaL_optstring(L, 2, "127.0.0.1"), &a.sin_addr);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) close(fd);
    lua_pushboolean(L, ok);
    return 1;
}

/* ============================================================ time */

static int sys_now(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
    return 1;
}

static int sys_monotonic(lua_State *L) {
    lua_pushnumber(L, now_mono());
    return 1;
}

/* sys.sleep(seconds): sleeps, waking early (and raising) on Ctrl-C. */
static int sys_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1), end = now_mono() + s;
    while (!orch_interrupted()) {
        double left = end - now_mono();
        struct timespec ts;
        if (left <= 0) break;
        if (left > 0.1) left = 0.1;
        ts.tv_sec = (time_t)left;
        ts.tv_nsec = (long)((left - (double)ts.tv_sec) * 1e9);
        nanosleep(&ts, NULL);
    }
    if (orch_interrupted()) return orch_raise_interrupt(L);
    return 0;
}

/* ============================================================ misc */

/* sys.crc32(data [, crc [, skip_line_ends]]) -> unsigned CRC-32 (zlib's),
 * continuing crc; with skip_line_ends, of the data without its \r and \n
 * bytes (Flyway's checksum runs over the lines without their endings). */
static int sys_crc32(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    uLong crc = (uLong)luaL_optinteger(L, 2, 0);
    if (lua_toboolean(L, 3)) {
        size_t i = 0;
        while (i < len) {
            size_t j = i;
            while (j < len && s[j] != '\n' && s[j] != '\r') j++;
            if (j > i) crc = crc32(crc, (const Bytef *)s + i, (uInt)(j - i));
            i = j + 1;
        }
    } else {
        crc = crc32(crc, (const Bytef *)s, (uInt)len);
    }
    lua_pushinteger(L, (lua_Integer)crc);
    return 1;
}

/* sys.sha256(data) -> hex digest of a string. */
static int sys_sha256(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    Sha256 h;
    unsigned char d[32];
    char hex[65];
    if (sha256_init(&h) != 0) return luaL_error(L, "sha256: libcrypto cannot compute SHA-256 (out of memory?)");
    sha256_update(&h, s, len);
    if (sha256_final(&h, d) != 0) return luaL_error(L, "sha256: libcrypto failed");
    sha256_hex(d, hex);
    lua_pushstring(L, hex);
    return 1;
}

/* sys.sha256_file(path) -> hex digest, size; or nil, message. Streams. */
static int sys_sha256_file(lua_State *L) {
    const char *p = luaL_checkstring(L, 1);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    char *buf;
    Sha256 h;
    unsigned char d[32];
    char hex[65];
    long long size = 0;
    ssize_t k;
    if (fd < 0) return fail(L, "cannot open", p);
    buf = (char *)lua_newuserdatauv(L, 1 << 16, 0);
    if (sha256_init(&h) != 0) { close(fd); return luaL_error(L, "sha256_file: libcrypto cannot compute SHA-256 (out of memory?)"); }
    while ((k = read(fd, buf, 1 << 16)) != 0) {
        if (k < 0) {
            if (errno == EINTR) continue;
            int e = errno;
            close(fd); sha256_free(&h); errno = e;
            return fail(L, "cannot read", p);
        }
        sha256_update(&h, buf, (size_t)k);
        size += k;
    }
    close(fd);
    if (sha256_final(&h, d) != 0) return luaL_error(L, "sha256_file: libcrypto failed");
    sha256_hex(d, hex);
    lua_pushstring(L, hex);
    lua_pushinteger(L, size);
    return 2;
}

static int sys_interrupted(lua_State *L) {
    lua_pushboolean(L, orch_interrupted() != 0);
    return 1;
}

static int sys_check_interrupt(lua_State *L) {
    if (orch_interrupted()) return orch_raise_interrupt(L);
    return 0;
}

/* sys.clear_interrupt(): the interrupt was handled (the recipe engine writes
 * its report and run log after a Ctrl-C); later waits are not cut short. A
 * second Ctrl-C still kills at once (see interrupt.c). */
static int sys_clear_interrupt(lua_State *L) {
    (void)L;
    orch_interrupt_clear();
    return 0;
}

/* sys.random_bytes(n) -> n bytes from the kernel's CSPRNG. */
static int sys_random_bytes(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    char *buf;
    ssize_t got = 0;
    int fd;
    luaL_argcheck(L, n >= 0 && n <= 4096, 1, "0..4096 expected");
    buf = (char *)lua_newuserdatauv(L, (size_t)n + 1, 0);
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail(L, "cannot open", "/dev/urandom");
    while (got < n) {
        ssize_t k = read(fd, buf + got, (size_t)(n - got));
        if (k <= 0) { close(fd); return fail(L, "cannot read", "/dev/urandom"); }
        got += k;
    }
    close(fd);
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

/* sys.error(message [, exit_code]): raise a plain error object that prints
 * as message (no position), with the exit code main() should use. */
static int sys_error(lua_State *L) {
    return orch_raise_code(L, (int)luaL_optinteger(L, 2, 1), "%s", luaL_checkstring(L, 1));
}

static const luaL_Reg funcs[] = {
    {"spawn", sys_spawn},
    {"stat", sys_stat}, {"exists", sys_exists}, {"listdir", sys_listdir},
    {"mkdir", sys_mkdir}, {"mkdir_p", sys_mkdir_p}, {"rmtree", sys_rmtree},
    {"mkdtemp", sys_mkdtemp}, {"write_atomic", sys_write_atomic}, {"fsync", sys_fsync},
    {"rename", sys_rename}, {"link", sys_link}, {"unlink", sys_unlink}, {"chmod", sys_chmod}, {"chown", sys_chown},
    {"realpath", sys_realpath}, {"statvfs", sys_statvfs}, {"chdir", sys_chdir}, {"readlink", sys_readlink},
    {"getuid", sys_getuid}, {"getpid", sys_getpid}, {"user", sys_user}, {"kill", sys_kill},
    {"hostname", sys_hostname}, {"isatty", sys_isatty},
    {"free_port", sys_free_port}, {"port_open", sys_port_open},
    {"now", sys_now}, {"monotonic", sys_monotonic}, {"sleep", sys_sleep},
    {"crc32", sys_crc32}, {"random_bytes", sys_random_bytes},
    {"sha256", sys_sha256}, {"sha256_file", sys_sha256_file},
    {"interrupted", sys_interrupted}, {"check_interrupt", sys_check_interrupt},
    {"clear_interrupt", sys_clear_interrupt},
    {"error", sys_error},
    {NULL, NULL}
};

int luaopen_orch_sys(lua_State *L);
int luaopen_orch_sys(lua_State *L) {
    luaL_newlib(L, funcs);
    return 1;
}
