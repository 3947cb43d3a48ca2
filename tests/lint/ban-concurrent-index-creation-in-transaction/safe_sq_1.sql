-- written the way squawk's own examples are: no orch directive, BEGIN/COMMIT kept
CREATE UNIQUE INDEX CONCURRENTLY accounts_handle_idx ON accounts (handle);
