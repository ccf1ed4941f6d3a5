-- One row per run: its trigger, outcome and summary.
CREATE TABLE ingest_runs (
    run_id      uuid PRIMARY KEY,
    trigger_id  text,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    status      text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'duplicate')),
    summary     jsonb,
    error       text
);

-- At most one succeeded run per trigger id; failed runs never block a retry.
CREATE UNIQUE INDEX ingest_runs_one_success_per_trigger
    ON ingest_runs (trigger_id) WHERE status = 'succeeded';
CREATE INDEX ingest_runs_started_at ON ingest_runs (started_at DESC);

-- The latest fetched values, one row per coin and currency.
CREATE TABLE current_prices (
    coin_id                     text NOT NULL,
    vs_currency                 text NOT NULL,
    symbol                      text,
    name                        text,
    price                       numeric NOT NULL,
    market_cap                  numeric,
    market_cap_rank             integer,
    total_volume                numeric,
    high_24h                    numeric,
    low_24h                     numeric,
    price_change_24h            numeric,
    price_change_percentage_24h numeric,
    circulating_supply          numeric,
    total_supply                numeric,
    max_supply                  numeric,
    source_updated_at           timestamptz,
    first_seen_at               timestamptz NOT NULL,
    last_changed_at             timestamptz NOT NULL,
    -- The CDC reference: the price of this coin's last price_history row and when it was
    -- written, kept here so that a run never has to search the history for it.
    recorded_price              numeric,
    recorded_at                 timestamptz,
    PRIMARY KEY (coin_id, vs_currency)
);

-- Append-only: one row per coin per meaningful price change.
CREATE TABLE price_history (
    coin_id           text NOT NULL,
    vs_currency       text NOT NULL,
    price             numeric NOT NULL,
    market_cap        numeric,
    total_volume      numeric,
    -- CoinGecko's last_updated; the run's time when CoinGecko sent none.
    source_updated_at timestamptz NOT NULL,
    recorded_at       timestamptz NOT NULL,
    run_id            uuid NOT NULL REFERENCES ingest_runs (run_id),
    UNIQUE (coin_id, vs_currency, source_updated_at)
);

CREATE FUNCTION refuse_price_history_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'price_history is append-only: % is refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'history rows are never changed or removed; see the README on retention';
END
$$;

CREATE TRIGGER price_history_append_only
    BEFORE UPDATE OR DELETE ON price_history
    FOR EACH ROW EXECUTE FUNCTION refuse_price_history_change();
CREATE TRIGGER price_history_no_truncate
    BEFORE TRUNCATE ON price_history
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_price_history_change();

-- Each fetched page as CoinGecko sent it (bronze), pruned after RAW_RETENTION_DAYS.
CREATE TABLE raw_pages (
    run_id     uuid NOT NULL REFERENCES ingest_runs (run_id),
    page       integer NOT NULL,
    fetched_at timestamptz NOT NULL,
    payload    jsonb NOT NULL,
    PRIMARY KEY (run_id, page)
);
CREATE INDEX raw_pages_fetched_at ON raw_pages (fetched_at);
