-- Every run rewrites nearly every row of current_prices (CoinGecko's last_updated moves). With room
-- left on each page the new version stays on its page and no index entry is added (a HOT update),
-- which makes the apply cheaper. Pages written before this keep their packing until rewritten.
ALTER TABLE current_prices SET (fillfactor = 50);
