-- Nexmark q13 (bounded side input join): every bid joined with a side table on the auction
-- id modulo 10,000. The side table is a constant table (generate_series), joined as a lookup
-- table: hashed once, probed by every epoch's bids.

CREATE EXTERNAL TABLE bid STORED AS GENERATOR LOCATION 'nexmark'
OPTIONS ('events' 'bid', 'count' '10000000', 'rate' '10000',
         'watermark' 'date_time - INTERVAL ''1 second''', 'max_rows' '65536');

CREATE EXTERNAL TABLE q13 STORED AS BLACKHOLE LOCATION 'nexmark-q13';

INSERT INTO q13
WITH side_input AS (
  SELECT value AS key, concat('side-', CAST(value AS VARCHAR)) AS side_value
  FROM generate_series(0, 9999)
)
SELECT b.auction, b.bidder, b.price, b.date_time, s.side_value
FROM bid b JOIN side_input s ON b.auction % 10000 = s.key;
