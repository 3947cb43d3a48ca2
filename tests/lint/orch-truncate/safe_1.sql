CREATE TABLE sessions_tmp (id bigint);
TRUNCATE sessions_tmp;
