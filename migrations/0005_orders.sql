-- 0005 — buying plans: orders, every raw gateway event, and payments tied to orders.
--
-- An order is a user's intent to buy one plan on one rail for one amount until expires_at.
-- Payments stay unique on (rail, external_id), so a payment is credited once; the grant it
-- makes is the subscriptions row with its payment_id, written in the same transaction.
-- Rows reach this database through the ledger's queue after Redis has them (payments/ledger.py),
-- so they may arrive a little after the plan is already active.

CREATE TABLE orders (
    id              text        PRIMARY KEY,
    telegram_id     bigint,                              -- NULL once the user deleted their data
    plan_code       text        NOT NULL,
    days            integer     NOT NULL CHECK (days > 0),
    rail            text        NOT NULL CHECK (rail IN ('stars', 'sol', 'nowpayments')),
    amount          numeric     NOT NULL CHECK (amount > 0),
    currency        text        NOT NULL,
    paid_amount     numeric     NOT NULL DEFAULT 0 CHECK (paid_amount >= 0),
    status          text        NOT NULL DEFAULT 'open'
                                CHECK (status IN ('open', 'partial', 'paid', 'cancelled', 'expired')),
    -- sol: the Solana Pay reference key; nowpayments: the invoice id.
    reference       text,
    pay_url         text,
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_user_idx ON orders (telegram_id, created_at DESC);
CREATE UNIQUE INDEX orders_reference_idx ON orders (rail, reference) WHERE reference IS NOT NULL;
CREATE TRIGGER orders_set_updated_at BEFORE UPDATE ON orders
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();

-- Trials and referral rewards are credited through the same ledger, unique per user.
ALTER TABLE payments DROP CONSTRAINT payments_rail_check;
ALTER TABLE payments ADD CONSTRAINT payments_rail_check
    CHECK (rail IN ('stars', 'sol', 'nowpayments', 'grant', 'trial', 'referral'));
ALTER TABLE payments ADD COLUMN order_id text REFERENCES orders (id) ON DELETE SET NULL;

ALTER TABLE subscriptions DROP CONSTRAINT subscriptions_source_check;
ALTER TABLE subscriptions ADD CONSTRAINT subscriptions_source_check
    CHECK (source IN ('payment', 'grant', 'trial', 'referral'));

-- Every event a gateway sent (a pre-checkout query, a successful payment, an IPN, a transaction
-- found on chain, a refund), verified or not, for audit and support.
CREATE TABLE payment_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rail            text        NOT NULL,
    external_id     text,
    order_id        text,
    kind            text        NOT NULL,
    raw             jsonb       NOT NULL,
    received_at     timestamptz NOT NULL
);

CREATE INDEX payment_events_external_idx ON payment_events (rail, external_id);
CREATE INDEX payment_events_order_idx ON payment_events (order_id) WHERE order_id IS NOT NULL;

-- A gateway's latest status of a payment (NOWPayments), kept before the payment is credited too;
-- it only moves forward (the ledger checks, the queue applies in order).
CREATE TABLE gateway_statuses (
    rail            text        NOT NULL,
    external_id     text        NOT NULL,
    status          text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rail, external_id)
);
CREATE TRIGGER gateway_statuses_set_updated_at BEFORE UPDATE ON gateway_statuses
    FOR EACH ROW WHEN (OLD IS DISTINCT FROM NEW) EXECUTE FUNCTION set_updated_at();
