DROP TRIGGER tickets_log_changes ON tickets;
DROP FUNCTION tickets_log_changes();
DROP TABLE ticket_history;
DROP TABLE attachments;
DROP TABLE comments;
