ALTER FOREIGN TABLE remote_orders DROP COLUMN legacy_code;
