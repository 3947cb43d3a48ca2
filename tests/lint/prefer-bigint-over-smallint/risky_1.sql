CREATE TABLE regions (id smallint PRIMARY KEY, name text);
