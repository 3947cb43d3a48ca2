ALTER TABLE accounts ADD COLUMN handle text CONSTRAINT accounts_handle_key UNIQUE;
