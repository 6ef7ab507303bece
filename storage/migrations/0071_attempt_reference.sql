-- The reference a provider attempt was sent under (our OutId / SessionContext): `lk<outbox
-- id>` for one message, `lkb<outbox id>` for a batch request that carried several. A worker
-- that finds the attempt interrupted asks the provider for exactly that reference before
-- sending again. Owned by the `alerts` package (alerts/dispatch.py).
ALTER TABLE delivery_attempt ADD COLUMN reference text;
