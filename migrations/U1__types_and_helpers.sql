DROP FUNCTION set_updated_at();
DROP TYPE notification_status;
DROP TYPE notification_channel;
DROP TYPE ticket_category;
DROP TYPE ticket_priority;
DROP TYPE ticket_status;
DROP TYPE user_status;
DROP TYPE user_role;
