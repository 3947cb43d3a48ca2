BEGIN;
CREATE TABLE sessions (id bigint PRIMARY KEY);
