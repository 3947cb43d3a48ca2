CREATE TABLE import_batches_tmp (id bigint);
TRUNCATE import_batches_tmp;
