/*
 * orch_test_seclabel: a security label provider for orch's tests, and for
 * nothing else. PostgreSQL stores a SECURITY LABEL only when a provider
 * registered under that name accepts it, and Debian's server ships none, so
 * the specs build this module against the server's headers and load it with
 * shared_preload_libraries on a cluster of their own
 * (tests/spec/catalog_decor_spec.lua). The provider is called "orch_test"
 * and accepts every label on every object: it checks nothing and enforces
 * nothing, so the labels are only data to back up and restore.
 */
#include "postgres.h"

#include "commands/seclabel.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Every label is acceptable: the tests only need it stored. */
static void
accept_any_label(const ObjectAddress *object, const char *seclabel)
{
	(void) object;
	(void) seclabel;
}

/* Called when the library is loaded: register the provider by name. */
void
_PG_init(void)
{
	register_label_provider("orch_test", accept_any_label);
}
