/*
 * orch.h -- what the C modules share: interrupt handling and the connection
 * accessor other modules (orch.archive) use to stream COPY data.
 */
#ifndef ORCH_H
#define ORCH_H
#include <signal.h>
#include <lua.h>
#include <lauxlib.h>
#include <libpq-fe.h>

/* ---- interrupts (src/interrupt.c) --------------------------------------
 * SIGINT/SIGTERM set a flag, cancel the statement registered as in flight
 * (PQcancel is async-signal-safe) and arm a Lua hook that raises at the next
 * safe point. Nothing else touches the Lua state from a signal handler. */
void orch_interrupt_install(lua_State *L);
int orch_interrupted(void);                 /* signal number, or 0 */
void orch_interrupt_clear(void);
void orch_interrupt_rearm(void);            /* the next signal counts as a first one */
/* Raise the interrupt error object ({interrupted=true, exit_code=130}). */
int orch_raise_interrupt(lua_State *L);
/* Register the cancel handle of the statement in flight (NULL to clear). */
void orch_interrupt_set_cancel(PGcancel *c);

/* ---- connections (src/l_db.c) ------------------------------------------ */
/* The live PGconn of the orch.conn userdata at idx; raises if it is not one
 * or it was closed. The connection stays owned by the userdata. */
PGconn *orch_checkconn(lua_State *L, int idx);
/* Push an error object for a failed PGresult (res may be NULL: uses the
 * connection's message) and raise it. Clears res first. Never returns. */
int orch_raise_pgerror(lua_State *L, PGconn *conn, PGresult *res, const char *query);
/* Deliver queued server notices of the connection at idx to the logger. */
void orch_flush_notices(lua_State *L, int idx);

/* ---- errors ------------------------------------------------------------ */
/* Raise a plain error table {message=msg, exit_code=code} with __tostring. */
int orch_raise_code(lua_State *L, int exit_code, const char *fmt, ...);

#endif
