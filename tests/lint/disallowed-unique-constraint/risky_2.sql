ALTER TABLE accounts ADD COLUMN handle text UNIQUE;
