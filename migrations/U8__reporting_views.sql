DROP MATERIALIZED VIEW ticket_daily_stats;
DROP VIEW agent_workload;
DROP VIEW open_tickets_overview;
