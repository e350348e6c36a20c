-- One row per message Telegram answered for an alert: the unique key stops a resend when a
-- crash came between Telegram's answer and the acknowledgement of the queued send.
CREATE TABLE deliveries (
    token_address   text        NOT NULL,               -- no FK: written before tokens may be
    chat_id         bigint      NOT NULL,
    status          text        NOT NULL CHECK (status IN ('sent', 'gone', 'failed')),
    message_id      bigint,
    digest          boolean     NOT NULL DEFAULT false, -- sent merged into a digest message
    reason          text,
    delivered_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (token_address, chat_id)
);

CREATE INDEX deliveries_delivered_idx ON deliveries (delivered_at);
