CREATE TABLE clients_new (id bigint);
ALTER TABLE clients_new RENAME TO clients_v2;
