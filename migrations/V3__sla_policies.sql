-- Service level agreements: one policy per priority, P1 (critical) to P4 (low).
CREATE TABLE sla_policies (
    id integer GENERATED ALWAYS AS IDENTITY,
    name varchar(100) NOT NULL,
    priority ticket_priority NOT NULL,
    response_time_minutes integer NOT NULL,
    resolution_time_minutes integer NOT NULL,
    escalation_levels jsonb NOT NULL DEFAULT '[]',
    is_active boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sla_policies_pkey PRIMARY KEY (id),
    CONSTRAINT sla_policies_times_positive CHECK (response_time_minutes > 0 AND resolution_time_minutes >= response_time_minutes)
);
CREATE UNIQUE INDEX sla_policies_active_priority_key ON sla_policies (priority) WHERE is_active;
CREATE TRIGGER sla_policies_set_updated_at BEFORE UPDATE ON sla_policies
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

INSERT INTO sla_policies (name, priority, response_time_minutes, resolution_time_minutes, escalation_levels) VALUES
    ('Critical', 'P1', 15, 240, '[{"level": 1, "after_minutes": 30, "to": "TEAM_LEAD"}, {"level": 2, "after_minutes": 60, "to": "MANAGER"}, {"level": 3, "after_minutes": 120, "to": "ADMIN"}]'),
    ('High', 'P2', 60, 480, '[{"level": 1, "after_minutes": 120, "to": "TEAM_LEAD"}, {"level": 2, "after_minutes": 240, "to": "MANAGER"}]'),
    ('Medium', 'P3', 240, 1440, '[{"level": 1, "after_minutes": 720, "to": "TEAM_LEAD"}]'),
    ('Low', 'P4', 1440, 4320, '[]');
