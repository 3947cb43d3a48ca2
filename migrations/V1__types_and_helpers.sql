-- Enumerated types of the ticket system and the shared updated_at trigger function.
CREATE TYPE user_role AS ENUM ('CUSTOMER', 'AGENT', 'TEAM_LEAD', 'MANAGER', 'ADMIN');
CREATE TYPE user_status AS ENUM ('PENDING_VERIFICATION', 'ACTIVE', 'SUSPENDED', 'DEACTIVATED');
CREATE TYPE ticket_status AS ENUM ('NEW', 'OPEN', 'IN_PROGRESS', 'PENDING_INFO', 'ESCALATED', 'RESOLVED', 'CLOSED', 'REOPENED');
CREATE TYPE ticket_priority AS ENUM ('P1', 'P2', 'P3', 'P4');
CREATE TYPE ticket_category AS ENUM ('HARDWARE', 'SOFTWARE', 'NETWORK', 'ACCESS', 'INFRASTRUCTURE', 'OTHER');
CREATE TYPE notification_channel AS ENUM ('EMAIL', 'SMS', 'IN_APP', 'SLACK');
CREATE TYPE notification_status AS ENUM ('PENDING', 'SENT', 'DELIVERED', 'FAILED', 'RETRYING');

CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
COMMENT ON FUNCTION set_updated_at() IS 'BEFORE UPDATE trigger: keeps updated_at current';
