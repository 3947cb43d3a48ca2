-- Conversation on a ticket, its files, and the audit trail of ticket changes.
CREATE TABLE comments (
    id bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id bigint NOT NULL,
    author_id bigint,
    body text NOT NULL,
    is_internal boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT comments_pkey PRIMARY KEY (id),
    CONSTRAINT comments_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE CASCADE,
    CONSTRAINT comments_author_id_fkey FOREIGN KEY (author_id) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT comments_body_not_blank CHECK (length(btrim(body)) > 0)
);
CREATE INDEX comments_ticket_idx ON comments (ticket_id, created_at) WHERE deleted_at IS NULL;
CREATE TRIGGER comments_set_updated_at BEFORE UPDATE ON comments
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE attachments (
    id bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id bigint NOT NULL,
    comment_id bigint,
    uploaded_by bigint,
    file_name varchar(255) NOT NULL,
    content_type varchar(100) NOT NULL,
    size_bytes bigint NOT NULL,
    storage_key text NOT NULL,
    scan_status text NOT NULL DEFAULT 'PENDING',
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT attachments_pkey PRIMARY KEY (id),
    CONSTRAINT attachments_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE CASCADE,
    CONSTRAINT attachments_comment_id_fkey FOREIGN KEY (comment_id) REFERENCES comments (id) ON DELETE CASCADE,
    CONSTRAINT attachments_uploaded_by_fkey FOREIGN KEY (uploaded_by) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT attachments_size_limit CHECK (size_bytes > 0 AND size_bytes <= 52428800),
    CONSTRAINT attachments_scan_status_check CHECK (scan_status IN ('PENDING', 'CLEAN', 'INFECTED', 'FAILED'))
);
CREATE INDEX attachments_ticket_idx ON attachments (ticket_id);

CREATE TABLE ticket_history (
    id bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id bigint NOT NULL,
    changed_by bigint,
    field_name varchar(50) NOT NULL,
    old_value text,
    new_value text,
    changed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ticket_history_pkey PRIMARY KEY (id),
    CONSTRAINT ticket_history_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE CASCADE,
    CONSTRAINT ticket_history_changed_by_fkey FOREIGN KEY (changed_by) REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX ticket_history_ticket_idx ON ticket_history (ticket_id, changed_at);

-- Every change of status, priority, assignee or category becomes a history row.
-- The acting user comes from the session setting app.user_id when the application sets it.
CREATE FUNCTION tickets_log_changes() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    actor bigint := nullif(current_setting('app.user_id', true), '')::bigint;
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO ticket_history (ticket_id, changed_by, field_name, old_value, new_value)
        VALUES (NEW.id, actor, 'status', OLD.status::text, NEW.status::text);
    END IF;
    IF NEW.priority IS DISTINCT FROM OLD.priority THEN
        INSERT INTO ticket_history (ticket_id, changed_by, field_name, old_value, new_value)
        VALUES (NEW.id, actor, 'priority', OLD.priority::text, NEW.priority::text);
    END IF;
    IF NEW.assigned_to IS DISTINCT FROM OLD.assigned_to THEN
        INSERT INTO ticket_history (ticket_id, changed_by, field_name, old_value, new_value)
        VALUES (NEW.id, actor, 'assigned_to', OLD.assigned_to::text, NEW.assigned_to::text);
    END IF;
    IF NEW.category IS DISTINCT FROM OLD.category THEN
        INSERT INTO ticket_history (ticket_id, changed_by, field_name, old_value, new_value)
        VALUES (NEW.id, actor, 'category', OLD.category::text, NEW.category::text);
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tickets_log_changes AFTER UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_log_changes();
