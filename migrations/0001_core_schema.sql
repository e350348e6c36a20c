-- 0001 — the core schema: people, their settings, the feed (channels, tokens, calls),
-- what was sent (alerts, multipliers, notifications), and money (plans, payments,
-- subscriptions), plus an activity log.
--
-- Conventions: timestamptz everywhere; bigint for Telegram ids; numeric for money and
-- market figures; text + CHECK for enumerations; jsonb for free-form documents.
-- Every table with an updated_at column keeps it with the set_updated_at() trigger.
-- Applied inside one transaction by managers/migrations.py; never edit it once applied —
-- add 0002_... instead.

CREATE OR REPLACE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

COMMENT ON FUNCTION set_updated_at() IS
    'BEFORE UPDATE trigger: stamps updated_at with the transaction time when a row changes';

-- ---------------------------------------------------------------------------------------
-- users
-- ---------------------------------------------------------------------------------------
CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    telegram_id     bigint      NOT NULL UNIQUE,
    username        text,
    first_name      text,
    last_name       text,
    language        text        NOT NULL DEFAULT 'en'
                                CHECK (language ~ '^[a-z]{2,3}([-_][A-Za-z0-9]{1,8})*$'),
    role            text        NOT NULL DEFAULT 'user'   CHECK (role IN ('user', 'admin')),
    -- blocked: the user blocked the bot (Telegram 403); banned: an admin banned them.
    status          text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked', 'banned')),
    paused          boolean     NOT NULL DEFAULT false,
    referred_by     bigint      REFERENCES users (id) ON DELETE SET NULL,
    referral_code   text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz,
    CHECK (referred_by IS NULL OR referred_by <> id)
);

COMMENT ON COLUMN users.status IS 'active; blocked = the user blocked the bot; banned = an admin banned them';

-- The matcher reads "everyone who should get alerts" on every call.
CREATE INDEX users_receiving_idx ON users (id) INCLUDE (telegram_id)
    WHERE status = 'active' AND NOT paused;
CREATE INDEX users_admins_idx ON users (id) WHERE role = 'admin';
CREATE INDEX users_username_lower_idx ON users (lower(username)) WHERE username IS NOT NULL;
CREATE INDEX users_referred_by_idx ON users (referred_by) WHERE referred_by IS NOT NULL;

-- ---------------------------------------------------------------------------------------
-- user settings and their history
-- ---------------------------------------------------------------------------------------
CREATE TABLE user_settings (
    user_id         bigint      PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    filters         jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(filters) = 'object'),
    preset_code     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE settings_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text        NOT NULL,
    old_value       jsonb,
    new_value       jsonb,
    source          text        NOT NULL DEFAULT 'command'
                                CHECK (source IN ('command', 'menu', 'preset', 'admin', 'system')),
    changed_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX settings_history_user_idx ON settings_history (user_id, changed_at DESC);

-- ---------------------------------------------------------------------------------------
-- the feed: channels, tokens, calls
-- ---------------------------------------------------------------------------------------
CREATE TABLE channels (
    id              text        PRIMARY KEY,             -- as in the feed, e.g. '-1001234567890'
    name            text,
    username        text,                                -- without '@'
    win_rate        numeric     CHECK (win_rate >= 0 AND win_rate <= 1),   -- a share 0..1
    avg_gain        numeric     CHECK (avg_gain >= 0),                     -- a multiple
    calls           integer     CHECK (calls >= 0),                        -- the channel's call count
    stats_updated_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN channels.win_rate IS 'share 0..1 (the /set min_win_rate filter takes percent)';

-- The channels / exclude_channels filters accept @usernames.
CREATE INDEX channels_username_lower_idx ON channels (lower(username)) WHERE username IS NOT NULL;

CREATE TABLE tokens (
    address         text        PRIMARY KEY,
    symbol          text,
    name            text,
    chain           text        NOT NULL DEFAULT 'solana',
    market_cap_usd  numeric     CHECK (market_cap_usd >= 0),
    liquidity_usd   numeric     CHECK (liquidity_usd >= 0),
    holders         integer     CHECK (holders >= 0),
    price_usd       numeric     CHECK (price_usd >= 0),
    created_at      timestamptz,                         -- on-chain creation, when known
    first_seen_at   timestamptz NOT NULL DEFAULT now(),  -- when the bot first heard of it
    price_updated_at timestamptz,
    image_url       text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

COMMENT ON COLUMN tokens.created_at IS 'on-chain creation time (the max_age filter), not the row''s';

CREATE INDEX tokens_first_seen_idx ON tokens (first_seen_at);

CREATE TABLE calls (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_address   text        NOT NULL REFERENCES tokens (address) ON DELETE CASCADE,
    channel_id      text        NOT NULL REFERENCES channels (id) ON DELETE CASCADE,
    called_at       timestamptz NOT NULL,
    market_cap_usd  numeric,
    price_usd       numeric,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (token_address, channel_id)                   -- also serves "calls of a token"
);

-- Filter replay reads the last 24 hours of calls.
CREATE INDEX calls_called_at_idx ON calls (called_at);
CREATE INDEX calls_channel_idx ON calls (channel_id, called_at DESC);

-- ---------------------------------------------------------------------------------------
-- what was sent: alerts, multipliers
-- ---------------------------------------------------------------------------------------
CREATE TABLE alerts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_address   text        NOT NULL REFERENCES tokens (address) ON DELETE CASCADE,
    market_cap_usd  numeric,                             -- at alert time: the multiplier base
    price_usd       numeric,
    channel_ids     text[]      NOT NULL DEFAULT '{}',
    message_id      bigint,                              -- Telegram message, once delivered
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,                         -- null until delivered
    UNIQUE (user_id, token_address)                      -- one alert per subscriber per token
);

-- Price updates look up every alert of a token (multiplier tracking).
CREATE INDEX alerts_token_idx ON alerts (token_address);
CREATE INDEX alerts_user_created_idx ON alerts (user_id, created_at DESC);
CREATE INDEX alerts_created_idx ON alerts (created_at);

CREATE TABLE multiplier_entries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id        bigint      NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_address   text        NOT NULL REFERENCES tokens (address) ON DELETE CASCADE,
    multiplier      numeric     NOT NULL CHECK (multiplier > 1),   -- 2, 5, 10, ...
    base_price_usd  numeric,                             -- the alert's price
    price_usd       numeric,                             -- the price that reached it
    market_cap_usd  numeric,
    reached_at      timestamptz NOT NULL DEFAULT now(),
    notified_at     timestamptz,
    UNIQUE (alert_id, multiplier)                        -- at most once per threshold
);

CREATE INDEX multiplier_entries_token_idx ON multiplier_entries (token_address);
CREATE INDEX multiplier_entries_user_idx ON multiplier_entries (user_id, reached_at DESC);
CREATE INDEX multiplier_entries_reached_idx ON multiplier_entries (reached_at);

-- ---------------------------------------------------------------------------------------
-- money: plans, payments, subscriptions
-- ---------------------------------------------------------------------------------------
CREATE TABLE plans (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code            text        NOT NULL UNIQUE CHECK (code ~ '^[a-z0-9_]+$'),
    title           text        NOT NULL,
    days            integer     NOT NULL CHECK (days > 0),
    price_stars     integer     CHECK (price_stars > 0),     -- Telegram Stars (XTR)
    price_sol       numeric     CHECK (price_sol > 0),
    price_usd       numeric     CHECK (price_usd > 0),       -- NOWPayments invoices in USD
    sort_order      integer     NOT NULL DEFAULT 0,
    active          boolean     NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- /plans lists the active ones.
CREATE INDEX plans_active_idx ON plans (sort_order, days) WHERE active;

INSERT INTO plans (code, title, days, price_stars, price_sol, price_usd, sort_order) VALUES
    ('week',    '1 week',    7,  250, 0.03,  5, 10),
    ('month',   '1 month',  30,  750, 0.09, 15, 20),
    ('quarter', '3 months', 90, 2000, 0.24, 40, 30);

CREATE TABLE payments (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      REFERENCES users (id) ON DELETE SET NULL,
    telegram_id     bigint,                              -- the payer, kept if the user row goes
    plan_id         bigint      REFERENCES plans (id),
    -- stars: telegram_payment_charge_id; sol: transaction signature;
    -- nowpayments: payment_id; grant: an id the admin command makes up.
    rail            text        NOT NULL CHECK (rail IN ('stars', 'sol', 'nowpayments', 'grant')),
    external_id     text        NOT NULL,
    amount          numeric     CHECK (amount >= 0),
    currency        text,                                -- 'XTR', 'SOL', 'USD', ...
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'confirmed', 'failed', 'refunded', 'expired')),
    raw             jsonb,                               -- the gateway's payload, for audit
    created_at      timestamptz NOT NULL DEFAULT now(),
    confirmed_at    timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (rail, external_id)                           -- a payment is credited once
);

CREATE INDEX payments_user_idx ON payments (user_id, created_at DESC);
-- Verifiers and expiry sweeps read only pending payments.
CREATE INDEX payments_pending_idx ON payments (rail, created_at) WHERE status = 'pending';

CREATE TABLE subscriptions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    plan_id         bigint      REFERENCES plans (id),
    payment_id      bigint      UNIQUE REFERENCES payments (id) ON DELETE SET NULL,  -- one per payment
    source          text        NOT NULL CHECK (source IN ('payment', 'grant', 'trial')),
    granted_by      bigint,                              -- admin's Telegram id, for grants
    starts_at       timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (expires_at > starts_at)
);

-- "Is this user subscribed?" / "who is subscribed?" read only unrevoked rows; the
-- expires_at > now() part stays in the query (a partial index predicate cannot use now()).
CREATE INDEX subscriptions_user_live_idx ON subscriptions (user_id, expires_at DESC)
    WHERE revoked_at IS NULL;
CREATE INDEX subscriptions_live_expires_idx ON subscriptions (expires_at)
    WHERE revoked_at IS NULL;

-- ---------------------------------------------------------------------------------------
-- notification history, activity log
-- ---------------------------------------------------------------------------------------
CREATE TABLE notification_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      REFERENCES users (id) ON DELETE CASCADE,
    chat_id         bigint      NOT NULL,
    kind            text        NOT NULL
                                CHECK (kind IN ('alert', 'multiplier', 'report', 'broadcast', 'payment', 'system')),
    token_address   text,                                -- no FK: history outlives pruned tokens
    alert_id        bigint      REFERENCES alerts (id) ON DELETE SET NULL,
    message_id      bigint,
    status          text        NOT NULL CHECK (status IN ('sent', 'failed', 'skipped')),
    error           text,
    sent_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX notification_history_user_idx ON notification_history (user_id, sent_at DESC);
CREATE INDEX notification_history_sent_idx ON notification_history (sent_at);
CREATE INDEX notification_history_failed_idx ON notification_history (sent_at) WHERE status = 'failed';

CREATE TABLE activity_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint      REFERENCES users (id) ON DELETE SET NULL,
    actor_telegram_id bigint,
    action          text        NOT NULL,                -- e.g. 'grant', 'ban', 'admin_refused'
    details         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX activity_log_created_idx ON activity_log (created_at);
CREATE INDEX activity_log_actor_idx ON activity_log (actor_telegram_id, created_at DESC);
CREATE INDEX activity_log_action_idx ON activity_log (action, created_at DESC);

-- ---------------------------------------------------------------------------------------
-- updated_at triggers (only when the row really changed)
-- ---------------------------------------------------------------------------------------
CREATE TRIGGER users_set_updated_at BEFORE UPDATE ON users
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER user_settings_set_updated_at BEFORE UPDATE ON user_settings
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER channels_set_updated_at BEFORE UPDATE ON channels
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER tokens_set_updated_at BEFORE UPDATE ON tokens
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER plans_set_updated_at BEFORE UPDATE ON plans
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER payments_set_updated_at BEFORE UPDATE ON payments
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
CREATE TRIGGER subscriptions_set_updated_at BEFORE UPDATE ON subscriptions
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
