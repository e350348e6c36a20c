-- 0006 — what a subscriber wants after an alert: follow-ups from a chosen multiple on (0: none)
-- and the daily reports.

ALTER TABLE user_settings ADD COLUMN followup_min smallint NOT NULL DEFAULT 2
    CHECK (followup_min = 0 OR followup_min >= 2);
ALTER TABLE user_settings ADD COLUMN reports boolean NOT NULL DEFAULT true;
