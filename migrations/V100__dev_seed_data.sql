-- orch: env=dev
-- Seed data for development only: a few users of each role, tickets in every
-- state, comments, notifications; history rows come from the trigger.
INSERT INTO users (username, email, password_hash, full_name, role, status) VALUES
    ('admin', 'admin@example.test', 'dev-only-not-a-real-hash', 'Ada Admin', 'ADMIN', 'ACTIVE'),
    ('lead', 'lead@example.test', 'dev-only-not-a-real-hash', 'Lee Lead', 'TEAM_LEAD', 'ACTIVE'),
    ('agent1', 'agent1@example.test', 'dev-only-not-a-real-hash', 'Alex Agent', 'AGENT', 'ACTIVE'),
    ('agent2', 'agent2@example.test', 'dev-only-not-a-real-hash', 'Sam Support', 'AGENT', 'ACTIVE'),
    ('carol', 'carol@example.test', 'dev-only-not-a-real-hash', 'Carol Customer', 'CUSTOMER', 'ACTIVE'),
    ('dave', 'dave@example.test', 'dev-only-not-a-real-hash', 'Dave Débutant', 'CUSTOMER', 'PENDING_VERIFICATION');

INSERT INTO tickets (title, description, category, priority, requestor_id, assigned_to)
SELECT format('%s issue #%s', initcap(c::text), g),
       format(E'Reported by a customer.\nSteps: open the app, try %s, see the error.', lower(c::text)),
       c, p, (SELECT id FROM users WHERE username = CASE WHEN g % 2 = 0 THEN 'carol' ELSE 'dave' END),
       CASE WHEN g % 3 = 0 THEN NULL ELSE (SELECT id FROM users WHERE username = CASE WHEN g % 2 = 0 THEN 'agent1' ELSE 'agent2' END) END
FROM generate_series(1, 20) g,
     LATERAL (SELECT (enum_range(NULL::ticket_category))[1 + g % 6] AS c,
                     (enum_range(NULL::ticket_priority))[1 + g % 4] AS p) x;

UPDATE tickets SET title = 'VPN drops every hour on the office network', category = 'NETWORK'
WHERE ticket_number = 'TKT-1000';
UPDATE tickets SET status = 'OPEN' WHERE id % 5 = 1;
UPDATE tickets SET status = 'IN_PROGRESS' WHERE id % 5 = 2;
UPDATE tickets SET status = 'RESOLVED' WHERE id % 5 = 3;
UPDATE tickets SET status = 'CLOSED' WHERE id % 5 = 4;

INSERT INTO comments (ticket_id, author_id, body, is_internal)
SELECT t.id, t.assigned_to, 'Looking into it.', false FROM tickets t WHERE t.assigned_to IS NOT NULL;
INSERT INTO comments (ticket_id, author_id, body, is_internal)
SELECT t.id, (SELECT id FROM users WHERE username = 'lead'), 'Internal: check the logs first.', true
FROM tickets t WHERE t.priority = 'P1';

INSERT INTO notifications (user_id, ticket_id, channels, subject, body, status)
SELECT t.requestor_id, t.id, '{EMAIL,IN_APP}', 'Ticket ' || t.ticket_number || ' updated', 'Your ticket changed status.', 'SENT'
FROM tickets t WHERE t.status <> 'NEW';

INSERT INTO escalations (ticket_id, sla_policy_id, escalated_by, escalated_to, escalation_level, escalation_reason, is_sla_breach)
SELECT t.id, t.sla_policy_id, t.assigned_to, (SELECT id FROM users WHERE username = 'lead'), 1, 'No response within the SLA', true
FROM tickets t WHERE t.priority = 'P1' AND t.status = 'OPEN';

INSERT INTO audit_logs (user_id, action_type, resource_type, resource_id, new_values)
SELECT id, 'LOGIN', 'user', id::text, jsonb_build_object('ip', '127.0.0.1') FROM users WHERE status = 'ACTIVE';

REFRESH MATERIALIZED VIEW CONCURRENTLY ticket_daily_stats;
