-- 0004 — presets: named filter sets admins define (/setpreset) and users apply or follow
-- (/presets). A user follows at most one preset: user_settings.preset_code (from 0001), now a
-- foreign key, so a deleted preset leaves its followers following nothing (their filters stay)
-- and a renamed code carries its followers along.
--
-- presets.filters holds what services/filters.py `Filters.to_dict()` writes: only the filters
-- that are set, USD amounts and percents as floats, minutes and counts as integers,
-- min_channels left out when it is 1.

CREATE TABLE presets (
    -- The code travels in callback data (bot/callbacks.py PresetCB), hence the tight limit.
    code            text        PRIMARY KEY CHECK (code ~ '^[a-z0-9_]{1,24}$'),
    title           text        NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 64),
    description     text        NOT NULL DEFAULT '' CHECK (length(description) <= 300),
    filters         jsonb       NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(filters) = 'object'),
    sort_order      integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      bigint                               -- the admin's Telegram id; NULL = seeded
);

COMMENT ON COLUMN presets.filters IS 'as Filters.to_dict() stores them (see services/filters.py)';

CREATE TRIGGER presets_set_updated_at BEFORE UPDATE ON presets
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();

-- Three starting points for Solana memecoin calls, from careful to reckless.
INSERT INTO presets (code, title, description, filters, sort_order) VALUES
    ('safe', 'Safe',
     'Tokens past the launch phase with deep liquidity, called by at least two channels with a proven record.',
     '{"min_mcap": 100000.0, "max_mcap": 10000000.0, "min_liquidity": 30000.0, "min_holders": 300,
       "min_win_rate": 50.0, "min_avg_gain": 2.0, "min_channels": 2}'::jsonb,
     10),
    ('balanced', 'Balanced',
     'Young tokens with real liquidity, called by channels that win more often than not.',
     '{"min_mcap": 30000.0, "max_mcap": 2000000.0, "min_liquidity": 10000.0, "min_holders": 100,
       "max_age": 1440, "min_win_rate": 35.0}'::jsonb,
     20),
    ('degen', 'Degen',
     'Fresh launches at tiny market caps: the earliest calls, and the most rugs.',
     '{"max_mcap": 300000.0, "min_liquidity": 3000.0, "max_age": 60}'::jsonb,
     30);

-- The column had no constraint until now: a stray code would stop the foreign key being added.
UPDATE user_settings SET preset_code = NULL
 WHERE preset_code IS NOT NULL AND preset_code NOT IN (SELECT code FROM presets);

ALTER TABLE user_settings
    ADD CONSTRAINT user_settings_preset_code_fkey FOREIGN KEY (preset_code)
        REFERENCES presets (code) ON DELETE SET NULL ON UPDATE CASCADE;

-- "Who follows this preset?" on every admin change, and the foreign key's own SET NULL/CASCADE;
-- most users follow nothing, so only followers are indexed.
CREATE INDEX user_settings_preset_code_idx ON user_settings (preset_code) WHERE preset_code IS NOT NULL;
