-- 0003 — what filter replay ("test my filters") needs and 0001 does not keep: each call's
-- snapshot of its token, and every price update as a row of its own.
--
-- `calls` kept only market cap and price at the call, and `tokens` only the latest state, so
-- the min_liquidity / min_holders filters could not be checked "as the call described the
-- token", and nothing said what a token did after a call. Channel statistics are still kept
-- latest-only: replay uses channels' current statistics.
--
-- The history is pruned after a few days by the persistence writer (services/persistence.py);
-- replay reads 24 hours of it.

-- The token as this call described it; null on calls recorded before this migration.
ALTER TABLE calls
    ADD COLUMN liquidity_usd numeric CHECK (liquidity_usd >= 0),
    ADD COLUMN holders       integer CHECK (holders >= 0);

-- One row per price update. No FK to tokens: a price may arrive before the token's first
-- call is written, and pruning goes by time, not by token. No key either: two updates of a
-- token at the same instant are both kept (replay wants the highest), and the writer never
-- writes a batch twice (a failed batch is rolled back whole).
CREATE TABLE token_prices (
    token_address   text        NOT NULL,
    ts              timestamptz NOT NULL,
    price_usd       numeric     CHECK (price_usd >= 0),
    market_cap_usd  numeric     CHECK (market_cap_usd >= 0)
);

COMMENT ON TABLE token_prices IS 'price history for filter replay; pruned after a few days';

-- Replay asks "the prices of these tokens after time T": one range scan per token, answered
-- from the index alone.
CREATE INDEX token_prices_token_ts_idx ON token_prices (token_address, ts) INCLUDE (price_usd, market_cap_usd);
-- Pruning deletes by age.
CREATE INDEX token_prices_ts_idx ON token_prices (ts);
