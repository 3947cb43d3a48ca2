-- VACUUM cannot run inside the transaction migrate runs this file in
ANALYZE orders;
VACUUM orders;
