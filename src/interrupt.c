/*
 * interrupt.c -- Ctrl-C and SIGTERM. The handler only does async-signal-safe
 * things: record the signal, PQcancel the statement in flight, arm a Lua
 * hook. The hook raises the interrupt error at the next safe point, so
 * pcall-protected cleanup and __close handlers run as for any error.
 *
 * A second signal kills at once (the default action), as in lua.c -- but
 * only when it comes more than DUPLICATE_WINDOW_NS after the first. One
 * interrupt often arrives twice within microseconds: GNU timeout signals
 * its child and then its whole process group, and supervisors do the same.
 * Dying on that echo would lose the report and the run log's last lines.
 */
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include "orch.h"

#define DUPLICATE_WINDOW_NS 500000000L   /* 0.5 s */

static volatile sig_atomic_t got_signal;
static volatile sig_atomic_t seen_signal;   /* not reset by orch_interrupt_clear */
static volatile sig_atomic_t rearmed;       /* the next signal past the window is a first one again */
static struct timespec first_at;
static lua_State *volatile main_state;
static PGcancel *volatile in_flight;

static void hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    orch_raise_interrupt(L);
}

static void on_signal(int sig) {
    char errbuf[256];
    PGcancel *c = in_flight;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);    /* async-signal-safe (POSIX) */
    if (seen_signal) {
        long ns = (now.tv_sec - first_at.tv_sec) * 1000000000L + (now.tv_nsec - first_at.tv_nsec);
        if (ns < DUPLICATE_WINDOW_NS) return;  /* the echo of the first one */
        if (!rearmed) {
            signal(sig, SIG_DFL);              /* a second Ctrl-C kills */
            raise(sig);
            return;
        }
        rearmed = 0;                           /* handled like a first one */
    }
    first_at = now;
    seen_signal = 1;
    got_signal = sig;
    if (c) PQcancel(c, errbuf, sizeof errbuf);
    if (main_state) lua_sethook(main_state, hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

void orch_interrupt_install(lua_State *L) {
    struct sigaction sa;
    main_state = L;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);        /* a closed pipe is an EPIPE error, not a death */
    signal(SIGXFSZ, SIG_IGN);        /* a file size limit is an EFBIG error, reported like a full disk */
}

int orch_interrupted(void) { return got_signal; }

void orch_interrupt_clear(void) { got_signal = 0; }

/* The handled signal is done with: the next one (past the duplicate window,
 * so an echo of this one still does not count) is a first one again. */
void orch_interrupt_rearm(void) { got_signal = 0; rearmed = 1; }

void orch_interrupt_set_cancel(PGcancel *c) { in_flight = c; }

int orch_raise_interrupt(lua_State *L) {
    /* disarm the hook: cleanup code run while this error unwinds must not be interrupted again */
    if (main_state) lua_sethook(main_state, NULL, 0, 0);
    const char *what = got_signal == SIGTERM ? "terminated (SIGTERM)" : "interrupted (Ctrl-C)";
    return orch_raise_code(L, 130, "%s", what);
}

/* __tostring for plain error tables: their message field. */
static int plain_tostring(lua_State *L) {
    lua_getfield(L, 1, "message");
    if (!lua_isstring(L, -1)) lua_pushliteral(L, "error");
    return 1;
}

int orch_raise_code(lua_State *L, int exit_code, const char *fmt, ...) {
    va_list ap;
    lua_createtable(L, 0, 3);
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_setfield(L, -2, "message");
    lua_pushinteger(L, exit_code);
    lua_setfield(L, -2, "exit_code");
    if (exit_code == 130) {
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "interrupted");
    }
    if (luaL_newmetatable(L, "orch.error")) {
        lua_pushcfunction(L, plain_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
    return lua_error(L);
}
