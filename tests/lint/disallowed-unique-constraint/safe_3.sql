CREATE TABLE handles (id bigint PRIMARY KEY, handle text NOT NULL);
ALTER TABLE handles ADD CONSTRAINT handles_handle_key UNIQUE (handle);
