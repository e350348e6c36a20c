-- 0008 — channel statistics the bot computes from its own calls (rules: domain/channel_stats.py;
-- the job: services/channel_stats.py).
--
-- Price history (token_prices) is pruned after 7 days, the length of a call's window, so each
-- call's outcome is folded into a row of its own while its prices are still there. The figures
-- go beside the feed's in `channels` (computed_*): the feed's own win_rate / avg_gain / calls
-- stay the feed's, and win where given. A snapshot a day lets filter replay use the figures of
-- the time.

-- One row per call the bot could measure (its price or market cap known): the highest value
-- of the same seen after the call within its 7 days, so far.
CREATE TABLE call_outcomes (
    call_id         bigint      PRIMARY KEY REFERENCES calls (id) ON DELETE CASCADE,
    channel_id      text        NOT NULL,            -- the call's, so figures group without a join
    token_address   text        NOT NULL,
    called_at       timestamptz NOT NULL,
    basis           text        NOT NULL CHECK (basis IN ('price', 'market_cap')),
    base            numeric     NOT NULL CHECK (base > 0),   -- the call's price (or market cap)
    peak            numeric     CHECK (peak >= 0),           -- null: no price seen after the call yet
    reached_2x_at   timestamptz,                             -- the first price at 2x or more, if any
    seen_until      timestamptz NOT NULL,                    -- prices up to here are folded in
    final           boolean     NOT NULL DEFAULT false,      -- its window is over and folded
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE call_outcomes IS 'each call''s peak within 7 days, kept after price history is pruned';

-- The job folds new prices into the calls still in their window.
CREATE INDEX call_outcomes_open_idx ON call_outcomes (called_at) WHERE NOT final;
-- Figures per channel, over all time or a period (weekly report).
CREATE INDEX call_outcomes_channel_idx ON call_outcomes (channel_id, called_at);
CREATE INDEX call_outcomes_called_at_idx ON call_outcomes (called_at);

ALTER TABLE channels
    ADD COLUMN computed_win_rate    numeric CHECK (computed_win_rate >= 0 AND computed_win_rate <= 1),
    ADD COLUMN computed_avg_gain    numeric CHECK (computed_avg_gain >= 0),   -- capped mean
    ADD COLUMN computed_median_gain numeric CHECK (computed_median_gain >= 0),
    ADD COLUMN computed_calls       integer CHECK (computed_calls >= 0),
    ADD COLUMN computed_resolved    integer CHECK (computed_resolved >= 0),
    ADD COLUMN computed_wins        integer CHECK (computed_wins >= 0),
    ADD COLUMN computed_unresolved  integer CHECK (computed_unresolved >= 0),
    ADD COLUMN computed_unpriced    integer CHECK (computed_unpriced >= 0),
    ADD COLUMN computed_at          timestamptz;    -- when these figures were computed

COMMENT ON COLUMN channels.computed_win_rate IS 'the bot''s own: 2x within 7 days over resolved calls';

-- Each channel's figures as a day began (the first computation of the day): the feed's and the
-- bot's, as the filters saw them then.
CREATE TABLE channel_stats_history (
    channel_id      text        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    day             date        NOT NULL,            -- UTC
    feed_win_rate   numeric,
    feed_avg_gain   numeric,
    feed_calls      integer,
    win_rate        numeric,
    avg_gain        numeric,
    median_gain     numeric,
    calls           integer     NOT NULL,
    resolved        integer     NOT NULL,
    wins            integer     NOT NULL,
    unresolved      integer     NOT NULL,
    unpriced        integer     NOT NULL,
    computed_at     timestamptz NOT NULL,
    PRIMARY KEY (channel_id, day)
);

CREATE TRIGGER call_outcomes_set_updated_at BEFORE UPDATE ON call_outcomes
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
