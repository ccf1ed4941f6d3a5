-- A run with several quote currencies also asks /simple/price, a batch of coins at a time: its
-- answers are kept beside the pages of /coins/markets, numbered by batch. Existing rows are pages.
ALTER TABLE raw_pages ADD COLUMN endpoint text NOT NULL DEFAULT 'coins/markets'
    CHECK (endpoint IN ('coins/markets', 'simple/price'));
ALTER TABLE raw_pages DROP CONSTRAINT raw_pages_pkey, ADD PRIMARY KEY (run_id, endpoint, page);
