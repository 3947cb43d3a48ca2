-- Security audit trail; kept when the acting user is deleted.
CREATE TABLE audit_logs (
    id bigint GENERATED ALWAYS AS IDENTITY,
    user_id bigint,
    action_type varchar(50) NOT NULL,
    resource_type varchar(50) NOT NULL,
    resource_id text,
    old_values jsonb,
    new_values jsonb,
    ip_address inet,
    user_agent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_logs_pkey PRIMARY KEY (id),
    CONSTRAINT audit_logs_user_id_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL
);
CREATE INDEX audit_logs_user_idx ON audit_logs (user_id, created_at DESC);
CREATE INDEX audit_logs_resource_idx ON audit_logs (resource_type, resource_id);
CREATE INDEX audit_logs_created_brin ON audit_logs USING brin (created_at);
