-- Tickets: numbering, SLA due dates, full-text search and the indexes for the open queue.
CREATE SEQUENCE ticket_number_seq START WITH 1000;

CREATE TABLE tickets (
    id bigint GENERATED ALWAYS AS IDENTITY,
    ticket_number varchar(20) NOT NULL DEFAULT ('TKT-' || nextval('ticket_number_seq')),
    title varchar(200) NOT NULL,
    description text NOT NULL DEFAULT '',
    category ticket_category NOT NULL DEFAULT 'OTHER',
    status ticket_status NOT NULL DEFAULT 'NEW',
    priority ticket_priority NOT NULL DEFAULT 'P3',
    requestor_id bigint NOT NULL,
    assigned_to bigint,
    sla_policy_id integer,
    response_due_at timestamptz,
    resolution_due_at timestamptz,
    first_response_at timestamptz,
    resolved_at timestamptz,
    search_vector tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', coalesce(title, '')), 'A') ||
        setweight(to_tsvector('english', coalesce(description, '')), 'B')) STORED,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT tickets_pkey PRIMARY KEY (id),
    CONSTRAINT tickets_ticket_number_key UNIQUE (ticket_number),
    CONSTRAINT tickets_requestor_id_fkey FOREIGN KEY (requestor_id) REFERENCES users (id) ON DELETE RESTRICT,
    CONSTRAINT tickets_assigned_to_fkey FOREIGN KEY (assigned_to) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT tickets_sla_policy_id_fkey FOREIGN KEY (sla_policy_id) REFERENCES sla_policies (id) ON DELETE SET NULL,
    CONSTRAINT tickets_resolved_after_created CHECK (resolved_at IS NULL OR resolved_at >= created_at)
);
ALTER SEQUENCE ticket_number_seq OWNED BY tickets.ticket_number;

CREATE INDEX tickets_search_idx ON tickets USING gin (search_vector);
CREATE INDEX tickets_open_queue_idx ON tickets (priority, created_at)
    WHERE status NOT IN ('RESOLVED', 'CLOSED') AND deleted_at IS NULL;
CREATE INDEX tickets_assignee_open_idx ON tickets (assigned_to, status)
    WHERE status NOT IN ('RESOLVED', 'CLOSED') AND deleted_at IS NULL;
CREATE INDEX tickets_requestor_idx ON tickets (requestor_id, created_at DESC);
CREATE INDEX tickets_resolution_due_idx ON tickets (resolution_due_at)
    WHERE resolved_at IS NULL AND deleted_at IS NULL;

CREATE FUNCTION tickets_apply_sla() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    policy sla_policies%ROWTYPE;
BEGIN
    IF TG_OP = 'INSERT' OR NEW.priority IS DISTINCT FROM OLD.priority THEN
        SELECT * INTO policy FROM sla_policies WHERE priority = NEW.priority AND is_active;
        IF FOUND THEN
            NEW.sla_policy_id := policy.id;
            NEW.response_due_at := NEW.created_at + make_interval(mins => policy.response_time_minutes);
            NEW.resolution_due_at := NEW.created_at + make_interval(mins => policy.resolution_time_minutes);
        END IF;
    END IF;
    IF NEW.status IN ('RESOLVED', 'CLOSED') AND NEW.resolved_at IS NULL THEN
        NEW.resolved_at := now();
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER tickets_apply_sla BEFORE INSERT OR UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION tickets_apply_sla();
CREATE TRIGGER tickets_set_updated_at BEFORE UPDATE ON tickets
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();
COMMENT ON COLUMN tickets.search_vector IS 'Full-text search over title (weight A) and description (weight B)';
