-- alone in its file: migrate runs it without a transaction
VACUUM (ANALYZE) orders;
