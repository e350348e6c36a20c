-- 0007 — multiplier follow-ups: how each alerted token is followed after its alerts.
--
-- One row per token the bot follows: its peak (all-time high) since the first alert, the last
-- price seen, and when and why following it ended. The follow-ups themselves are rows of
-- multiplier_entries (0001), one per (alert, threshold), whose notified_at is set once Telegram
-- took the message. services/multiplier.py writes both in batches; several processes may, so
-- the peak and the last price are merged, never overwritten by an older value.

CREATE TABLE tracked_tokens (
    token_address       text        PRIMARY KEY,           -- no FK: tokens rows come in batches too
    first_alert_at      timestamptz NOT NULL,
    peak_market_cap_usd numeric     CHECK (peak_market_cap_usd >= 0),
    peak_price_usd      numeric     CHECK (peak_price_usd >= 0),
    peak_at             timestamptz,
    last_market_cap_usd numeric     CHECK (last_market_cap_usd >= 0),
    last_price_usd      numeric     CHECK (last_price_usd >= 0),
    last_price_at       timestamptz,
    ended_at            timestamptz,
    end_reason          text        CHECK (end_reason IN ('window', 'dead', 'silent')),
    CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

COMMENT ON TABLE tracked_tokens IS 'alerted tokens followed for multiplier follow-ups: peak, last price, end';

-- A starting tracker loads the tokens still followed.
CREATE INDEX tracked_tokens_live_idx ON tracked_tokens (first_alert_at) WHERE ended_at IS NULL;
