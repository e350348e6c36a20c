-- 0009 — the reports (daily, best of the day, weekly channels): one row per report, day and
-- subscriber, inserted before the report is sent. The insert is the claim: a job run twice, or by
-- two processes at once, sends a subscriber's report once.

CREATE TABLE report_deliveries (
    kind            text        NOT NULL CHECK (kind IN ('daily', 'best', 'weekly')),
    day             date        NOT NULL,                -- the UTC date of the report's slot
    user_id         bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- claimed: taken for sending (and stays so if the process died before Telegram answered);
    -- then what the sender reported.
    status          text        NOT NULL DEFAULT 'claimed'
                                CHECK (status IN ('claimed', 'sent', 'gone', 'failed')),
    claimed_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    message_id      bigint,
    reason          text,
    PRIMARY KEY (kind, day, user_id)
);

-- Pruning by age.
CREATE INDEX report_deliveries_claimed_idx ON report_deliveries (claimed_at);
