TRUNCATE import_batches CASCADE;
