DROP TABLE IF EXISTS customer_notes;
