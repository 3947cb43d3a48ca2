ALTER TABLE accounts ADD CONSTRAINT accounts_handle_key UNIQUE (handle);
