-- orch: env=dev
DELETE FROM audit_logs;
DELETE FROM tickets;
DELETE FROM users;
ALTER SEQUENCE ticket_number_seq RESTART WITH 1000;
REFRESH MATERIALIZED VIEW ticket_daily_stats;
