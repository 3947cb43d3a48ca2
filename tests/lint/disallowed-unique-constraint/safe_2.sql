ALTER TABLE accounts DROP CONSTRAINT accounts_handle_key;
