ALTER TABLE customers RENAME TO clients;
