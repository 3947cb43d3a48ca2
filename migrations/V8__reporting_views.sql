-- Reporting: the open queue, agent workload, and daily statistics (materialized).
CREATE VIEW open_tickets_overview AS
SELECT t.id, t.ticket_number, t.title, t.status, t.priority, t.category,
       r.full_name AS requestor_name, a.full_name AS assignee_name,
       t.created_at, t.resolution_due_at,
       (t.resolution_due_at IS NOT NULL AND t.resolution_due_at < now()) AS is_overdue
FROM tickets t
JOIN users r ON r.id = t.requestor_id
LEFT JOIN users a ON a.id = t.assigned_to
WHERE t.status NOT IN ('RESOLVED', 'CLOSED') AND t.deleted_at IS NULL;

CREATE VIEW agent_workload AS
SELECT u.id AS agent_id, u.full_name,
       count(t.id) FILTER (WHERE t.status NOT IN ('RESOLVED', 'CLOSED')) AS open_tickets,
       count(t.id) FILTER (WHERE t.priority = 'P1' AND t.status NOT IN ('RESOLVED', 'CLOSED')) AS open_p1,
       count(t.id) FILTER (WHERE t.status IN ('RESOLVED', 'CLOSED')) AS resolved_tickets
FROM users u
LEFT JOIN tickets t ON t.assigned_to = u.id AND t.deleted_at IS NULL
WHERE u.role IN ('AGENT', 'TEAM_LEAD') AND u.deleted_at IS NULL
GROUP BY u.id, u.full_name;

CREATE MATERIALIZED VIEW ticket_daily_stats AS
SELECT date_trunc('day', created_at)::date AS day, priority,
       count(*) AS created,
       count(*) FILTER (WHERE resolved_at IS NOT NULL) AS resolved,
       avg(extract(epoch FROM (resolved_at - created_at)) / 60) FILTER (WHERE resolved_at IS NOT NULL) AS avg_resolution_minutes
FROM tickets
WHERE deleted_at IS NULL
GROUP BY 1, 2
WITH DATA;
CREATE UNIQUE INDEX ticket_daily_stats_key ON ticket_daily_stats (day, priority);
COMMENT ON MATERIALIZED VIEW ticket_daily_stats IS 'Refresh with REFRESH MATERIALIZED VIEW CONCURRENTLY ticket_daily_stats';
