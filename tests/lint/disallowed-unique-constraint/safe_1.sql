ALTER TABLE accounts ADD CONSTRAINT accounts_handle_key UNIQUE USING INDEX accounts_handle_idx;
