-- Multi-channel notifications with retries, and the escalation chain of a ticket.
CREATE TABLE notifications (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint NOT NULL,
    ticket_id bigint,
    channels notification_channel[] NOT NULL DEFAULT '{IN_APP}',
    subject varchar(200) NOT NULL,
    body text NOT NULL,
    status notification_status NOT NULL DEFAULT 'PENDING',
    retry_count integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    sent_at timestamptz,
    read_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notifications_pkey PRIMARY KEY (id),
    CONSTRAINT notifications_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT notifications_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE CASCADE,
    CONSTRAINT notifications_retry_count_range CHECK (retry_count BETWEEN 0 AND 10),
    CONSTRAINT notifications_has_channel CHECK (cardinality(channels) > 0)
);
CREATE INDEX notifications_delivery_queue_idx ON notifications (next_attempt_at)
    WHERE status IN ('PENDING', 'RETRYING');
CREATE INDEX notifications_unread_idx ON notifications (user_id, created_at DESC) WHERE read_at IS NULL;

CREATE TABLE escalations (
    id bigint GENERATED ALWAYS AS IDENTITY,
    ticket_id bigint NOT NULL,
    sla_policy_id integer,
    escalated_by bigint,
    escalated_to bigint,
    escalation_level smallint NOT NULL,
    escalation_reason text NOT NULL,
    is_sla_breach boolean NOT NULL DEFAULT false,
    escalated_at timestamptz NOT NULL DEFAULT now(),
    resolved_at timestamptz,
    CONSTRAINT escalations_pkey PRIMARY KEY (id),
    CONSTRAINT escalations_ticket_id_fkey FOREIGN KEY (ticket_id) REFERENCES tickets (id) ON DELETE CASCADE,
    CONSTRAINT escalations_sla_policy_id_fkey FOREIGN KEY (sla_policy_id) REFERENCES sla_policies (id) ON DELETE SET NULL,
    CONSTRAINT escalations_escalated_by_fkey FOREIGN KEY (escalated_by) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT escalations_escalated_to_fkey FOREIGN KEY (escalated_to) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT escalations_level_range CHECK (escalation_level BETWEEN 1 AND 5)
);
CREATE INDEX escalations_ticket_idx ON escalations (ticket_id, escalated_at);
CREATE INDEX escalations_open_breach_idx ON escalations (escalated_at) WHERE is_sla_breach AND resolved_at IS NULL;
