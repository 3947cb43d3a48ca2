-- pg: 11
-- orch: transaction=false
ALTER TYPE order_state ADD VALUE 'on_hold';
